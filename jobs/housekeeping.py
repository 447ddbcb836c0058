"""Housekeeping: deleting what has expired, so that no table grows forever.

What goes, each kind found through an index:

- finished job results (SUCCESS, FAILURE, REVOKED) done more than ``RESULT_EXPIRES`` ago;
- groups and chords (``GroupRecord``) made more than ``RESULT_EXPIRES`` ago;
- dead letters older than ``DEAD_LETTER_EXPIRES``;
- the rows of workers not seen for :data:`WORKERS_EXPIRE` (stopped, or gone without a word);
- unique-job locks past their expiry.

Every worker (the :class:`~jobs.middleware.housekeeping.Housekeeping` middleware) and every
scheduler calls :meth:`Housekeeper.maybe_run` from its loop. There is no leader: a pass is
done under the ``housekeeping`` :class:`~jobs.models.Lease`, which one compare-and-set UPDATE
claims, so two processes never do a pass at once; the lease also says when the next pass is
due, so however many processes run there is about one pass every :data:`INTERVAL` seconds.

A pass deletes in batches of :data:`BATCH` rows: select the ids through the index, then
delete by primary key with the condition checked again (a unique lock taken over meanwhile
stays), each batch its own short transaction, so a table that workers write is never locked
for long. It goes round the kinds a batch at a time, so that none waits behind another, and
stops after :data:`BUDGET` seconds; the next pass is then due at once and goes on.
``manage.py jobs_cleanup`` does a whole pass now.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError, connections
from django.db.models import QuerySet
from django.utils import timezone

from jobs.conf import settings
from jobs.database import database
from jobs.exceptions import JobsError
from jobs.models import (
    READY_STATES,
    DeadLetter,
    GroupRecord,
    JobRecord,
    Lease,
    UniqueLock,
    Worker,
)

logger = logging.getLogger("jobs.housekeeping")

LEASE = "housekeeping"
#: Seconds between two passes (each process's own timer is jittered by JITTER).
INTERVAL = 60.0
JITTER = 0.2
#: Seconds before the process that stopped on its budget looks again (a backlog).
AGAIN = 5.0
#: Seconds a pass may take before it stops (the rest is for the next pass).
BUDGET = 1.0
#: Rows deleted per statement, each in its own transaction.
BATCH = 1000
#: How long a claim holds the lease unless renewed: a holder that dies frees it after this.
HOLD = timedelta(minutes=5)
#: A worker's row is deleted once the worker hasn't been seen for this long.
WORKERS_EXPIRE = timedelta(days=1)

KINDS = ("job results", "job groups", "dead letters", "workers", "unique locks")


class LeaseHeld(JobsError):
    """Another process is doing a pass and didn't finish while we waited."""


def expiry(value) -> timedelta | None:
    """An ``*_EXPIRES`` setting as a timedelta, or None (keep) for None or 0, as Celery
    reads ``result_expires``."""
    if value is None:
        return None
    if not isinstance(value, timedelta):
        value = timedelta(seconds=value)
    return value if value > timedelta(0) else None


@dataclass(frozen=True, slots=True)
class Sweep:
    """Rows of one kind to delete, ordered along the index that finds them."""

    kind: str
    rows: QuerySet


def sweeps(now: datetime) -> list[Sweep]:
    """What is expired at ``now``: the small tables first, so a backlog of results can't
    hold them up. A kind whose setting is None isn't swept."""
    found = [
        Sweep("unique locks", UniqueLock.objects.expired(now).order_by("expires_at")),
        Sweep("workers", Worker.objects.not_seen_since(now - WORKERS_EXPIRE)
              .order_by("last_seen")),
    ]
    letters = expiry(settings.DEAD_LETTER_EXPIRES)
    if letters is not None:
        found.append(Sweep("dead letters", DeadLetter.objects.older_than(letters, now)
                           .order_by("date_created")))
    results = expiry(settings.RESULT_EXPIRES)
    if results is not None:
        found.append(Sweep("job groups", GroupRecord.objects.filter(
            date_created__lt=now - results).order_by("date_created")))
        # One state at a time: ``state = %s AND date_done < %s ORDER BY date_done`` is a
        # range of the (state, date_done) index, oldest first.
        found += [Sweep("job results", JobRecord.objects.filter(state=state)
                        .older_than(results, now).order_by("date_done"))
                  for state in sorted(READY_STATES)]
    return found


def kept() -> dict[str, str]:
    """The kinds never deleted, with the setting that keeps them."""
    keeping = {"job results": "RESULT_EXPIRES", "job groups": "RESULT_EXPIRES",
               "dead letters": "DEAD_LETTER_EXPIRES"}
    return {kind: f"JOBS[{key!r}] is {getattr(settings, key)!r}"
            for kind, key in keeping.items() if expiry(getattr(settings, key)) is None}


@dataclass(frozen=True, slots=True)
class Report:
    """What a pass deleted, by kind; ``finished`` is False when it stopped with more to do."""

    deleted: dict[str, int]
    finished: bool

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def __str__(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in self.deleted.items() if n) or "nothing"


# A pass ---------------------------------------------------------------------------------------


def sweep(now: datetime | None = None, *, budget: float | None = BUDGET,
          due_only: bool = True) -> Report | None:
    """One pass, if this process gets the lease (None if not): deletes in batches what has
    expired at ``now``, for ``budget`` seconds at most (None: until nothing is left).
    ``due_only=False`` doesn't wait for the next pass to be due (but does for a running
    one)."""
    now = now or timezone.now()
    claim = Claim(now)
    if not Lease.objects.claim(LEASE, claim.holder, claim.held_until, now,
                               due_only=due_only):
        return None
    report = None
    try:
        report = _delete(sweeps(now), claim, budget)
        return report
    finally:
        claim.release(again=report is not None and not report.finished)


def expired_counts(now: datetime | None = None) -> dict[str, int]:
    """How many rows of each kind a pass at ``now`` would delete (deleting nothing)."""
    counts: dict[str, int] = {}
    for item in sweeps(now or timezone.now()):
        counts[item.kind] = counts.get(item.kind, 0) + item.rows.count()
    return {kind: counts[kind] for kind in KINDS if kind in counts}


def sweep_all(wait: float = 30.0) -> Report:
    """A whole pass now (``manage.py jobs_cleanup``): no budget, not waiting for the next
    pass to be due, but under the lease, so never beside another pass; waits up to ``wait``
    seconds for one that is running to end, then raises :class:`LeaseHeld`."""
    deadline = time.monotonic() + wait
    while True:
        report = sweep(budget=None, due_only=False)
        if report is not None:
            return report
        if time.monotonic() >= deadline:
            holder = Lease.objects.filter(name=LEASE).values_list("holder", flat=True).first()
            raise LeaseHeld(f"another housekeeping pass is running ({holder or 'just ended'}); "
                            "try again in a moment")
        time.sleep(0.2)


class Claim:
    """This process's hold on the lease: renewed as a long pass goes on, released at the
    end with the time the next pass is due."""

    def __init__(self, now: datetime) -> None:
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._now, self._started = now, time.monotonic()
        self.held_until = now + HOLD

    def clock(self) -> datetime:
        """The pass's ``now``, moved on by the time it has taken (fixed clocks in tests)."""
        return self._now + timedelta(seconds=time.monotonic() - self._started)

    def keep(self) -> bool:
        """Renew the claim once half of it is gone; False if it was lost (the holder was
        too slow, and someone else may be sweeping)."""
        if self.held_until - self.clock() > HOLD / 2:
            return True
        self.held_until = self.clock() + HOLD
        return Lease.objects.renew(LEASE, self.holder, self.held_until)

    def release(self, again: bool) -> None:
        """Let go: the next pass is due at once when there is more to delete, else after
        INTERVAL. Failing that (the database went away), the claim runs out by itself."""
        end = self.clock()
        try:
            Lease.objects.release(LEASE, self.holder,
                                  end if again else end + timedelta(seconds=INTERVAL))
        except DatabaseError:
            logger.debug("Could not release the housekeeping lease; it runs out at %s",
                         self.held_until)


def _delete(items: list[Sweep], claim: Claim, budget: float | None) -> Report:
    deadline = None if budget is None else time.monotonic() + budget
    deleted = {kind: 0 for kind in KINDS if any(item.kind == kind for item in items)}
    pending = list(items)
    while pending:
        for item in list(pending):
            if not claim.keep():
                return Report(deleted, finished=False)
            count, done = _delete_batch(item)
            deleted[item.kind] += count
            if done:
                pending.remove(item)
            # The budget is looked at after a batch that deleted rows, so that a pass
            # always deletes one batch when there is one, however short the budget.
            if count and deadline is not None and time.monotonic() >= deadline:
                return Report(deleted, finished=not pending)
    return Report(deleted, finished=True)


def _delete_batch(item: Sweep) -> tuple[int, bool]:
    """Delete up to a batch of ``item``'s rows (one transaction); True once none is left."""
    size = _batch_size(item.rows.db)
    ids = list(item.rows.values_list("pk", flat=True)[:size])
    if not ids:
        return 0, True
    deleted, _ = item.rows.filter(pk__in=ids).delete()
    return deleted, len(ids) < size


def _batch_size(alias: str) -> int:
    """BATCH, or fewer where the database limits a statement's parameters (the condition
    checked again takes a few)."""
    limit = connections[alias].features.max_query_params
    return BATCH if limit is None else min(BATCH, limit - 10)


# From a process's loop ------------------------------------------------------------------------


class Housekeeper:
    """Tries a pass about every INTERVAL seconds (jittered, so processes started together
    spread out) from the loop of a worker or a scheduler. Never raises: a database error is
    reported to :data:`jobs.database.database`, and the next try is an interval later."""

    def __init__(self) -> None:
        self._next = time.monotonic() + _jittered(INTERVAL)

    def maybe_run(self) -> Report | None:
        if time.monotonic() < self._next or database.down:
            return None
        report = self._run()
        backlog = report is not None and not report.finished
        self._next = time.monotonic() + _jittered(AGAIN if backlog else INTERVAL)
        return report

    def _run(self) -> Report | None:
        started = time.monotonic()
        try:
            report = sweep()
        except DatabaseError as exc:
            if not database.failed(exc):
                logger.warning("Housekeeping: database error (%s); trying again later", exc)
            return None
        except Exception:
            logger.exception("Housekeeping failed; trying again later")
            return None
        if report is not None and report.total:
            logger.info("Housekeeping: deleted %s in %.2f s%s", report,
                        time.monotonic() - started,
                        "" if report.finished else "; more in the next pass",
                        extra={"deleted": report.deleted})
        return report


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - JITTER, 1 + JITTER)
