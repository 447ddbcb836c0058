"""``jobs_inspect`` and ``jobs_control``: the worker answers commands broadcast to it.

It listens on the project's control channel (:mod:`jobs.control.channels`: the broker's
fanout mailbox, or the database on ``django://``) from its main loop's ``tick``, at most ten
times a second, and runs each command between two turns of the loop
(:mod:`jobs.control.commands`). Left out of ``JOBS["MIDDLEWARE"]``, a worker answers none.
"""

from __future__ import annotations

from jobs.control.channels import listener
from jobs.control.commands import dispatch
from jobs.middleware import Middleware


class Control(Middleware):
    def __init__(self) -> None:
        self.listener = None
        #: Queues a ``cancel_consumer`` stopped here (the dashboard's Resume restarts these).
        self.paused: set[str] = set()

    def worker_started(self, worker) -> None:
        self.listener = listener(worker, dispatch)
        self.listener.poll()  # listening before the worker says it consumes

    def tick(self, worker) -> None:
        if self.listener is not None:
            self.listener.poll()

    def worker_stopped(self, worker) -> None:
        if self.listener is not None:
            self.listener.close()
