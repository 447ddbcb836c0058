"""Housekeeping from the workers: expired results, dead letters, old worker rows and expired
unique locks are deleted by whichever worker (or scheduler) gets to it first, about once a
minute, a second at most each time (see :mod:`jobs.housekeeping`)."""

from __future__ import annotations

from jobs.housekeeping import Housekeeper
from jobs.middleware import Middleware


class Housekeeping(Middleware):
    """Tries a housekeeping pass from the worker's loop every so often; a pass is done by
    one process at a time, under a lease in the database."""

    def __init__(self) -> None:
        self.housekeeper: Housekeeper | None = None

    def worker_started(self, worker) -> None:
        self.housekeeper = Housekeeper()  # the first try an interval after the start

    def tick(self, worker) -> None:
        if self.housekeeper is not None:
            self.housekeeper.maybe_run()
