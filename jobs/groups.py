"""``GroupResult``: a handle on a group of jobs, stored so that any process can restore it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from jobs import context, exceptions
from jobs.models import READY_STATES, GroupRecord, JobRecord, States
from jobs.results import EagerResult, JobResult


class GroupResult:
    """The jobs of a group, in order: ``group(...).apply_async()`` returns one, and
    ``GroupResult.restore(group_id)`` finds it again from any process."""

    def __init__(self, id: str, results: Iterable[JobResult] = (), parent=None) -> None:
        self.id = str(id)
        self.results: list[JobResult] = list(results)
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} [{len(self.results)} jobs]>"

    def __eq__(self, other) -> bool:
        return isinstance(other, GroupResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index):
        return self.results[index]

    children = property(lambda self: self.results)

    # Stored --------------------------------------------------------------------------------

    @classmethod
    def restore(cls, id: str) -> GroupResult | None:
        """The group stored under ``id``, or None."""
        row = GroupRecord.objects.filter(group_id=id).first()
        if row is None:
            return None
        return cls(row.group_id, [JobResult(job_id) for job_id in row.job_ids])

    def save(self) -> GroupResult:
        save_group(self)
        return self

    def delete(self) -> None:
        GroupRecord.objects.filter(group_id=self.id).delete()

    forget = delete

    # States --------------------------------------------------------------------------------

    def _states(self) -> list[str]:
        """Every member's state, in order, read in one query."""
        if all(isinstance(r, EagerResult) for r in self.results):  # run here: nothing stored
            return [r.state for r in self.results]
        ids = [r.id for r in self.results]
        found = dict(JobRecord.objects.filter(job_id__in=ids).order_by()
                     .values_list("job_id", "state"))
        return [found.get(job_id, States.PENDING) for job_id in ids]

    def ready(self) -> bool:
        return all(state in READY_STATES for state in self._states())

    def waiting(self) -> bool:
        return not self.ready()

    def successful(self) -> bool:
        return all(state == States.SUCCESS for state in self._states())

    def failed(self) -> bool:
        return any(state == States.FAILURE for state in self._states())

    def completed_count(self) -> int:
        """How many of the jobs succeeded."""
        return sum(state == States.SUCCESS for state in self._states())

    def revoke(self, terminate: bool = False, reason: str = "revoked") -> None:
        for result in self.results:
            result.revoke(terminate=terminate, reason=reason)

    # Waiting -------------------------------------------------------------------------------

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5) -> list[Any]:
        """Wait until every job is done; their values in order. A failed job's exception
        is raised (``propagate=False``: it takes the job's place in the list)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = min(0.005, interval)
        while not self.ready():
            if deadline is not None and time.monotonic() >= deadline:
                left = sum(state not in READY_STATES for state in self._states())
                raise exceptions.TimeoutError(
                    f"group {self.id}: {left} of {len(self.results)} jobs not done after "
                    f"{timeout}s")
            time.sleep(pause if deadline is None else
                       max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 1.5, interval)
        return [result.get(propagate=propagate) for result in self.results]

    join = get


def save_group(result: GroupResult, body: dict | None = None, parent_id: str | None = None,
               root_id: str | None = None) -> GroupRecord:
    """Store the group (and a chord's body) before its jobs are sent: a fast worker may
    finish one before the sender's next line."""
    running = context.current.get()
    record, _ = GroupRecord.objects.update_or_create(group_id=result.id, defaults={
        "job_ids": [r.id for r in result.results],
        "size": len(result.results),
        "body": dict(body) if body is not None else None,
        "body_state": GroupRecord.BodyState.WAITING if body is not None else "",
        "parent_id": parent_id or running.id or "",
        "root_id": root_id or running.root_id or running.id or "",
    })
    return record
