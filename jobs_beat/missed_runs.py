"""The missed-run policy: what the scheduler does about a due time it reaches late.

However many due times passed while no scheduler was running, at most one run follows:
``RUN_ONCE`` (the default) runs the latest once, late; ``SKIP`` doesn't run a due time
reached more than :data:`MISSED_AFTER` late. Either way the next due time is the first one
after now: never a burst of catch-up runs. Pure time math, like :mod:`jobs_beat.schedules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from jobs_beat.schedules import Schedule

RUN_ONCE = "run_once"
SKIP = "skip"
#: A due time the scheduler reaches later than this was missed (the scheduler was down).
MISSED_AFTER = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the scheduler does about a due time: run it or not, and the next due time
    (None: the task is finished and disables itself)."""

    fire: bool
    next_run: datetime | None
    late: bool = False
    expired: bool = False


def settle(schedule: Schedule, due: datetime, now: datetime, *, missed_runs: str = RUN_ONCE,
           one_off: bool = False, end: datetime | None = None) -> Decision:
    """Decide about ``due``, reached at ``now``, by the policy ``missed_runs``.

    A one-off task finishes after its run; a task whose ``end`` has passed finishes
    without one.
    """
    if end is not None and due > end:
        return Decision(fire=False, next_run=None, expired=True)
    late = now - due > MISSED_AFTER
    fire = not (late and missed_runs == SKIP)
    following = None if (one_off and fire) else schedule.after_run(due, now)
    if following is not None and end is not None and following > end:
        following = None
    return Decision(fire=fire, next_run=following, late=late)
