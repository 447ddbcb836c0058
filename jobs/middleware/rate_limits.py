"""``@job(rate_limit="10/m")``: at most that many starts of the job per second, minute or
hour in each worker (as in Celery: per worker, not across them). Deliveries over the limit
wait in the worker, in order, until a token comes."""

from __future__ import annotations

from collections import defaultdict, deque

from kombu.utils.limits import TokenBucket

from jobs.middleware import Middleware
from jobs.registry import registry

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def per_second(rate) -> float:
    """Starts per second from ``"10/m"``, ``"5/s"``, ``"100/h"`` or a number (per second)."""
    text = str(rate)
    count, _, unit = text.partition("/")
    return float(count) / UNITS[unit or "s"]


class RateLimits(Middleware):
    def receive(self, worker, delivery):
        name = delivery.headers["task"]
        if name in self._unlimited:
            return delivery
        job = registry.get(name)
        if not self.limits.rate(job):
            self._unlimited.add(name)
            return delivery
        return delivery if self.limits.admit(job, delivery) else None

    def tick(self, worker) -> None:
        for delivery in self.limits.due():
            worker.submit(delivery)

    def connection_lost(self, worker) -> None:
        self.limits.take_all()  # their messages come again on the next connection

    def stand_down(self, worker) -> None:
        for delivery in self.limits.take_all():
            worker.requeue(delivery)

    def __init__(self) -> None:
        self.limits = Buckets()
        self._unlimited: set[str] = set()  # names of jobs without a rate limit

    def set_rate(self, name: str, rate) -> None:
        """``jobs_control rate_limit``: ``rate`` for job ``name`` in this worker from now
        on, instead of its own (0 or None: no limit)."""
        try:
            rate and per_second(rate)  # a malformed rate fails here, not at the next delivery
        except (ValueError, KeyError):
            raise ValueError(f"{rate!r} is not a rate such as '10/m', '5/s' or '100/h'") from None
        self.limits.set_rate(name, rate or None)
        self._unlimited.discard(name)


class Buckets:
    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        self._waiting: dict[str, deque] = defaultdict(deque)
        self._rates: dict[str, object] = {}  # job name -> its rate set at run time

    def set_rate(self, name: str, rate) -> None:
        self._rates[name] = rate
        self._buckets.pop(name, None)

    def rate(self, job):
        return self._rates[job.name] if job.name in self._rates else job.rate_limit

    def admit(self, job, delivery) -> bool:
        """True if ``delivery`` may start now; else it waits here for :meth:`due`."""
        if not self.rate(job):
            return True
        waiting = self._waiting[job.name]
        if not waiting and self._bucket(job).can_consume(1):
            return True
        waiting.append(delivery)
        return False

    def due(self) -> list:
        """Waiting deliveries whose turn has come."""
        ready = []
        for name, waiting in self._waiting.items():
            if not waiting:
                continue
            bucket = self._bucket(registry.get(name))
            while waiting and (bucket is None or bucket.can_consume(1)):
                ready.append(waiting.popleft())
        return ready

    def take_all(self) -> list:
        """Every waiting delivery (to hand back to the broker at shutdown)."""
        items = [d for waiting in self._waiting.values() for d in waiting]
        self._waiting.clear()
        return items

    def _bucket(self, job) -> TokenBucket | None:
        """The job's bucket; None once its limit was lifted (``jobs_control rate_limit``)."""
        bucket = self._buckets.get(job.name)
        if bucket is None:
            rate = self.rate(job)
            if not rate:
                return None
            bucket = self._buckets[job.name] = TokenBucket(per_second(rate), 1)
        return bucket
