"""``jobs_worker --autoscale MAX,MIN``: the pool grows while jobs wait for a free slot and
shrinks when slots stay idle, as Celery's autoscaler does (prefork and threads pools).

The worker reserves messages for the largest size (its prefetch count is MAX × the prefetch
multiplier), so that there are jobs to grow for; it starts with MIN. A slot idle for
``JOBS["WORKER_AUTOSCALE_KEEPALIVE"]`` seconds is let go, one at a time, down to MIN; a
running job is never stopped for it.
"""

from __future__ import annotations

import logging
import time

from jobs.conf import settings
from jobs.middleware import Middleware

logger = logging.getLogger("jobs.worker")

#: Seconds between two looks at the pool.
LOOK_EVERY = 0.2


class Autoscale(Middleware):
    """Resizes the pool of a worker started with ``--autoscale``; nothing otherwise."""

    def __init__(self) -> None:
        self._bounds: tuple[int, int] | None = None
        self._next = 0.0
        self._busy_at = 0.0

    def worker_started(self, worker) -> None:
        self._bounds = getattr(worker, "autoscale", None)
        self._busy_at = time.monotonic()

    def tick(self, worker) -> None:
        if self._bounds is None:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + LOOK_EVERY
        self.scale(worker.pool, now)

    def scale(self, pool, now: float) -> None:
        """Grow by the jobs waiting (up to MAX); or, idle past the keepalive, shrink by one."""
        high, low = self._bounds
        size, waiting = pool.concurrency, pool.waiting()
        if waiting or pool.running() >= size:
            self._busy_at = now
        if waiting and size < high:
            self._resize(pool, min(high, size + waiting))
        elif size > low and now - self._busy_at >= settings.WORKER_AUTOSCALE_KEEPALIVE:
            self._resize(pool, size - 1)
            self._busy_at = now  # the next one goes a keepalive later

    def _resize(self, pool, size: int) -> None:
        before = pool.concurrency
        pool.resize(size)
        if pool.concurrency != before:
            logger.info("Autoscale: %s pool from %d to %d", pool.name, before, pool.concurrency)
