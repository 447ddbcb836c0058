"""Rate limits: how often a job may start.

* ``@job(rate_limit="10/m")``: at most that many starts per second, minute or hour in each
  worker (as in Celery: per worker, not across them) — :class:`RateLimits`.
* ``@job(global_rate_limit="100/m")`` or ``JOBS["GLOBAL_RATE_LIMITS"]``: across the whole
  cluster, each start given a turn by a shared clock (:mod:`jobs.ratelimits`) —
  :class:`GlobalRateLimits`.

Deliveries over a limit wait in the worker, in order, held (``worker.hold``: they don't keep
other jobs out, and the worker's row counts them) until their turn; then they go on through
the middleware after this one. Limits changed at run time (``jobs_control rate_limit``, the
admin) come through the control channel at once, and from the database when a worker starts
or within :data:`RELOAD_EVERY` seconds of a change it missed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from datetime import timedelta

from django.db import DatabaseError
from django.utils import timezone
from kombu.utils.limits import TokenBucket

from jobs import ratelimits, rates
from jobs.exceptions import NotRegistered
from jobs.middleware import Middleware
from jobs.registry import registry

logger = logging.getLogger("jobs.worker")

RELOAD_EVERY = 10.0  # seconds between looks for limits changed at run time


class _Limits(Middleware):
    """What both limits share: run-time changes, and the deliveries waiting their turn."""

    field = ""  # the RateLimit field this one follows

    def __init__(self) -> None:
        self.rates: dict[str, object] = {}  # job name -> its rate set at run time
        self._unlimited: set[str] = set()  # names of jobs without a limit here
        self._waiting: dict[str, deque] = {}  # job name -> its deliveries waiting, in order
        self._loaded_at = None
        self._reload_at = 0.0

    def own_rate(self, job):
        raise NotImplementedError

    def rate(self, name: str):
        """The limit of job ``name`` now (None or 0: none)."""
        if name in self.rates:
            return self.rates[name]
        try:
            return self.own_rate(registry.get(name))
        except NotRegistered:
            return None  # an unknown job: refused further on

    def set_rate(self, name: str, rate) -> None:
        """``rate`` for job ``name`` from now on, instead of its own (None: its own again;
        0: no limit)."""
        reason = rates.problem(rate)
        if reason:
            raise ValueError(reason)
        if rate is None:
            self.rates.pop(name, None)
        else:
            self.rates[name] = rate
        self._unlimited.discard(name)
        self.changed(name)

    def changed(self, name: str) -> None:
        """The limit of ``name`` changed: forget what was worked out from the old one."""

    def worker_started(self, worker) -> None:
        self._reload()

    def _reload(self) -> None:
        """Apply the run-time limits saved since the last look (all of them at first)."""
        self._reload_at = time.monotonic() + RELOAD_EVERY
        try:
            # A minute back: the clock of the host that saved a row may be a little behind.
            since = self._loaded_at and self._loaded_at - timedelta(minutes=1)
            now, rows = timezone.now(), ratelimits.changed(since)
        except DatabaseError as exc:
            logger.debug("Rate limits not reloaded: %s", exc)
            return
        for row in rows:
            rate = ratelimits.override(getattr(row, self.field))
            if self.rates.get(row.name) != rate:
                try:
                    self.set_rate(row.name, rate)
                except ValueError as exc:
                    logger.error("Rate limit of %s ignored: %s", row.name, exc)
        self._loaded_at = now

    def tick(self, worker) -> None:
        if self._waiting:
            self.release(worker)
        if time.monotonic() >= self._reload_at:
            self._reload()

    def release(self, worker) -> None:
        raise NotImplementedError

    def wait(self, worker, name: str, delivery) -> None:
        self._waiting.setdefault(name, deque()).append(delivery)
        worker.hold(delivery)

    def connection_lost(self, worker) -> None:
        self._waiting.clear()  # their messages come again on the next connection

    def stand_down(self, worker) -> None:
        for waiting in self._waiting.values():
            for delivery in waiting:
                worker.requeue(delivery)
        self._waiting.clear()


class RateLimits(_Limits):
    """Per worker: a token bucket per job, refilled at its rate."""

    field = "rate"

    def __init__(self) -> None:
        super().__init__()
        self._buckets: dict[str, TokenBucket] = {}

    def own_rate(self, job):
        return job.rate_limit

    def changed(self, name: str) -> None:
        self._buckets.pop(name, None)

    def receive(self, worker, delivery):
        name = delivery.headers["task"]
        if name in self._unlimited:
            return delivery
        if name in self._waiting:
            self.wait(worker, name, delivery)  # behind the others
            return None
        bucket = self._bucket(name)
        if bucket is None:
            self._unlimited.add(name)
            return delivery
        if bucket.can_consume(1):
            return delivery
        self.wait(worker, name, delivery)
        return None

    def release(self, worker) -> None:
        for name in list(self._waiting):
            waiting, bucket = self._waiting[name], self._bucket(name)
            while waiting and (bucket is None or bucket.can_consume(1)):
                worker.resume(waiting.popleft(), self)
            if not waiting:
                del self._waiting[name]

    def _bucket(self, name: str) -> TokenBucket | None:
        """The job's bucket; None while it has no limit."""
        bucket = self._buckets.get(name)
        if bucket is None:
            starts = rates.per_second(self.rate(name))
            if not starts:
                return None
            bucket = self._buckets[name] = TokenBucket(starts, 1)
        return bucket


class GlobalRateLimits(_Limits):
    """Across all workers: each start is a turn given by the shared clock."""

    field = "global_rate"

    def __init__(self) -> None:
        super().__init__()
        self.clock = None
        self._turns: dict[str, float] = {}  # job name -> the turn of its first waiting delivery

    def own_rate(self, job):
        return ratelimits.global_rate(job)

    def changed(self, name: str) -> None:
        # The first waiting delivery asks again, at the new rate (its turn at the old one is
        # given up: a limit lowered or lifted applies now, not after that turn).
        self._turns.pop(name, None)

    def worker_started(self, worker) -> None:
        self.clock = ratelimits.clock()
        super().worker_started(worker)

    def receive(self, worker, delivery):
        name = delivery.headers["task"]
        if name in self._unlimited:
            return delivery
        if name in self._waiting:
            self.wait(worker, name, delivery)
            return None
        interval = rates.interval(self.rate(name))
        if interval is None:
            self._unlimited.add(name)
            return delivery
        now = time.time()
        turn = self.clock.turn(name, interval, now)
        if turn <= now:
            return delivery
        self._turns[name] = turn
        self.wait(worker, name, delivery)
        return None

    def release(self, worker) -> None:
        now = time.time()
        for name in list(self._waiting):
            waiting = self._waiting[name]
            while waiting:
                turn = self._turns.get(name)
                if turn is None:
                    interval = rates.interval(self.rate(name))
                    turn = now if interval is None else self.clock.turn(name, interval, now)
                    self._turns[name] = turn
                if turn > now:
                    break
                del self._turns[name]
                worker.resume(waiting.popleft(), self)
            if not waiting:
                del self._waiting[name]

    def connection_lost(self, worker) -> None:
        super().connection_lost(worker)
        self._turns.clear()

    def stand_down(self, worker) -> None:
        super().stand_down(worker)
        self._turns.clear()
