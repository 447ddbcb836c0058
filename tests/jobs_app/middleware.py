"""Middleware only the tests install in the workers they start (JOBS_EXTRA_MIDDLEWARE)."""

import signal
import threading

from jobs.middleware import Middleware


class FreezeOnSignal(Middleware):
    """SIGUSR2 freezes the worker's main loop: the handler runs in the loop's thread and never
    returns, as a call that hangs or a deadlock would hold it."""

    def worker_started(self, worker) -> None:
        signal.signal(signal.SIGUSR2, _freeze)


def _freeze(signum, frame):
    threading.Event().wait()
