"""The watchdog: a worker whose main loop stops turning (stuck in a call, deadlocked) exits,
so that its supervisor starts it again and its jobs are delivered again.

The main loop turns several times a second, even while it waits for the broker or the
database; the worker's heart notes each turn. A thread of the worker looks every so often:
after ``JOBS["WORKER_WATCHDOG_TIMEOUT"]`` seconds without a turn, it logs where the loop is
stuck, ends the pool's processes and exits with :data:`WATCHDOG_EXIT`. Its messages, never
acknowledged, come back from the broker to another worker (at once on RabbitMQ, after the
visibility timeout or lease on Redis and ``django://``).

Under systemd with ``Type=notify`` (see docs/deployment.md) it also says READY=1 once the
worker consumes, WATCHDOG=1 while the loop turns (``WatchdogSec=``: systemd restarts the
worker when these stop, even if the whole process hangs), and STOPPING=1 at a warm shutdown.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback

from jobs import systemd
from jobs.conf import settings
from jobs.middleware import Middleware

logger = logging.getLogger("jobs.worker")

#: The exit code of a worker the watchdog ended (EX_SOFTWARE): any supervisor restarts it.
WATCHDOG_EXIT = 70
#: The longest the watchdog sleeps between two looks, in seconds.
LOOK_EVERY = 1.0


class Watchdog(Middleware):
    """Watches the worker's main loop from a thread of its own; costs the loop nothing."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop = threading.main_thread()

    def worker_started(self, worker) -> None:
        timeout = settings.WORKER_WATCHDOG_TIMEOUT or None
        if timeout is None and not os.environ.get("NOTIFY_SOCKET"):
            return
        self._stop.clear()
        self._loop = threading.current_thread()  # the one running the worker's main loop
        self._thread = threading.Thread(
            target=self._watch, args=(worker, timeout, systemd.watchdog_seconds()),
            name="jobs-watchdog", daemon=True)
        self._thread.start()

    def worker_stopped(self, worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(LOOK_EVERY * 2)
            self._thread = None

    def _watch(self, worker, timeout: float | None, systemd_interval: float | None) -> None:
        every = min(LOOK_EVERY, *(t / 4 for t in (timeout, systemd_interval) if t))
        ready = False
        busy_at = 0.0  # when a job was last seen running in the loop itself (solo pool)
        while not self._stop.wait(every) and not worker.stopping:
            if not ready and worker.channel is not None:
                systemd.notify("READY=1", f"STATUS=consuming from {', '.join(worker.queues)}")
                ready = True
            now = time.monotonic()
            if worker.pool.blocks_loop and worker.pool.running():
                busy_at = now  # a long job, not a stuck loop
            stalled = now - max(worker.heart.alive_at, busy_at)
            if timeout is not None and stalled >= timeout:
                self._bite(worker, stalled)
                return
            if systemd_interval is not None and stalled < systemd_interval / 2:
                systemd.notify("WATCHDOG=1")
        # A warm shutdown (systemd's TimeoutStopSec= bounds it), or the worker has stopped.
        systemd.notify("STOPPING=1", "STATUS=shutting down: finishing running jobs")

    def _bite(self, worker, stalled: float) -> None:
        """End the worker: its main loop made no turn for ``stalled`` seconds."""
        frame = sys._current_frames().get(self._loop.ident)
        where = "".join(traceback.format_stack(frame)) if frame else "(unknown)\n"
        logger.critical("Watchdog: the worker's main loop made no progress for %.0f s "
                        "(JOBS['WORKER_WATCHDOG_TIMEOUT']); exiting with code %d so that its "
                        "supervisor restarts it; its jobs will be delivered again. The loop "
                        "is stuck at:\n%s", stalled, WATCHDOG_EXIT, where)
        systemd.notify(f"STATUS=watchdog: main loop stuck for {stalled:.0f} s; exiting")
        try:
            worker.pool.terminate()  # takes no lock the stuck loop may hold
        except Exception:
            logger.exception("Watchdog: could not end the pool's processes")
        _flush_logs()
        os._exit(WATCHDOG_EXIT)


def _flush_logs() -> None:
    for name in ("jobs", ""):
        for handler in logging.getLogger(name).handlers:
            try:
                handler.flush()
            except Exception:
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
