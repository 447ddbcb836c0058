"""Global rate limits, and rate limits changed at run time.

A **global** rate limit (``@job(global_rate_limit="100/m")``, or ``JOBS["GLOBAL_RATE_LIMITS"]``)
holds for the whole cluster: one start of the job every 1/rate seconds, whichever worker
starts it. Before starting such a job a worker asks a shared *clock* for a turn: the earliest
start no other worker was given. The worker holds the delivery until its turn comes
(:class:`jobs.middleware.rate_limits.GlobalRateLimits`). Two clocks:

* :class:`DatabaseClock` (the default): one row per job, the time of the latest turn given,
  moved on by one UPDATE that the database serialises.
* :class:`CacheClock` (``JOBS["GLOBAL_RATE_LIMIT_CACHE"]`` names a cache of ``CACHES``): one
  key per turn, taken with ``cache.add``, which exactly one process wins. The cache must be
  one every worker shares (django-redis, Redis, Memcached, the database cache).

A turn given to a worker that stops before using it is lost: a limit is an upper bound.

Limits **changed at run time** (``jobs_control rate_limit``, the admin's *Rate limits*) are
:class:`jobs.models.RateLimit` rows: saved, then told to the live workers on the control
channel, and read by every worker as it starts, so they hold until reset.
"""

from __future__ import annotations

import hashlib
import re

from django.db import IntegrityError, router, transaction
from django.db.models import F, FloatField, Value
from django.db.models.functions import Greatest

from jobs import rates
from jobs.conf import settings

#: Backends whose cache lives in one process: no use for a limit across processes.
PER_PROCESS_CACHES = ("django.core.cache.backends.locmem.LocMemCache",
                      "django.core.cache.backends.dummy.DummyCache")
SAFE_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{1,120}$")


class DatabaseClock:
    """Turns from a :class:`jobs.models.RateLimitTurn` row per job."""

    def turn(self, name: str, interval: float, now: float) -> float:
        """The time of the next start of job ``name`` given to this worker: ``now`` or
        later, at least ``interval`` after the one given before it to any worker."""
        from jobs.models import RateLimitTurn

        rows = RateLimitTurn.objects.filter(name=name)
        following = Greatest(F("last_at") + Value(interval), Value(now), output_field=FloatField())
        with transaction.atomic(using=router.db_for_write(RateLimitTurn)):
            if not rows.update(last_at=following):
                try:
                    with transaction.atomic(using=router.db_for_write(RateLimitTurn)):
                        RateLimitTurn.objects.create(name=name, last_at=now)
                    return now
                except IntegrityError:  # another worker's first turn, just now
                    rows.update(last_at=following)
            return rows.values_list("last_at", flat=True).get()


class CacheClock:
    """Turns from a shared cache: turn ``k`` of a job is the key ``...:<k>``, and starts at
    ``k × interval``; whoever adds the key has the turn."""

    def __init__(self, cache) -> None:
        self.cache = cache
        self._next: dict[str, int] = {}  # per job and interval: the first turn not known taken

    def turn(self, name: str, interval: float, now: float) -> float:
        # A new interval is a new grid of turns: a change of rate applies from the next one.
        grid = f"jobs:turn:{_key(name)}:{interval!r}"
        k = max(int(now // interval), self._next.get(grid, 0))
        keep = int(interval) + 60  # past its time, for clocks of hosts a little apart
        while not self.cache.add(f"{grid}:{k}", 1, timeout=int(k * interval - now) + keep):
            k += 1
        self._next[grid] = k + 1
        return max(now, k * interval)


def _key(name: str) -> str:
    return name if SAFE_KEY.match(name) else hashlib.sha1(name.encode()).hexdigest()


def clock():
    """The clock ``JOBS["GLOBAL_RATE_LIMIT_CACHE"]`` names (None: the database's)."""
    alias = settings.GLOBAL_RATE_LIMIT_CACHE
    if alias is None:
        return DatabaseClock()
    from django.core.cache import caches

    return CacheClock(caches[alias])


def global_rate(job) -> str | float | None:
    """The global rate limit the code gives ``job``: its option, else the settings'."""
    if job.global_rate_limit is not None:
        return job.global_rate_limit
    return (settings.GLOBAL_RATE_LIMITS or {}).get(job.name)


# Changed at run time ----------------------------------------------------------------------


def changed(since=None) -> list:
    """The :class:`jobs.models.RateLimit` rows saved after ``since`` (every row: None)."""
    from jobs.models import RateLimit

    rows = RateLimit.objects.all()
    if since is not None:
        rows = rows.filter(updated_at__gt=since)
    return list(rows)


def saved(name: str):
    """The :class:`jobs.models.RateLimit` row of job ``name``, or None."""
    from jobs.models import RateLimit

    return RateLimit.objects.filter(name=name).first()


def override(value: str):
    """What a row's field means to a worker: None (the job's own limit) or the rate."""
    return value.strip() or None


def save(name: str, rate, *, is_global: bool = False) -> None:
    """Record ``rate`` for job ``name`` (per worker, or across all workers) until reset."""
    from jobs.models import RateLimit
    from jobs.registry import registry

    if name not in registry:
        raise ValueError(f"no job is named {name!r}")
    reason = rates.problem(rate)
    if reason:
        raise ValueError(reason)
    field = "global_rate" if is_global else "rate"
    RateLimit.objects.update_or_create(name=name, defaults={field: str(rate)})


def reset(name: str) -> bool:
    """Forget the run-time limits of job ``name``; False if it had none."""
    from jobs.models import RateLimit

    return RateLimit.objects.filter(name=name).delete()[0] > 0
