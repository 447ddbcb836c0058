"""Marks: a job writes the time it ran to a Redis key; the driver reads it.

A gate mark queued before N jobs and a closing mark queued after them time the drain inside
the worker, leaving out its start-up and the driver's polling delay.
"""

from __future__ import annotations

import os
import time

import redis

_client: redis.Redis | None = None


class NotReached(Exception):
    """What the bench waited for didn't happen in time (not a server's timeout)."""


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


def client() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(redis_url())
    return _client


def key(name: str) -> str:
    return f"{os.environ.get('BENCH_PREFIX', 'bench')}:mark:{name}"


def stamp(full_key: str) -> None:
    """Called inside a job: record now (wall clock, shared by all processes here)."""
    client().set(full_key, repr(time.time()), ex=3600)


def read(full_key: str) -> float | None:
    value = client().get(full_key)
    return float(value) if value is not None else None


def wait(full_key: str, timeout: float, alive=None, disturbed=None,
         interval: float = 0.02) -> float:
    """The time stamped on ``full_key``, waiting up to ``timeout`` seconds for it.

    ``alive()`` false: the worker died; ``disturbed()`` (called about once a second) raises
    if a service restarted, so that a lost queue isn't waited for until the timeout."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        value = read(full_key)
        if value is not None:
            return value
        if alive is not None and not alive():
            raise RuntimeError(f"the worker exited before {full_key} was stamped")
        if disturbed is not None and time.monotonic() >= next_check:
            disturbed()
            next_check = time.monotonic() + 1.0
        time.sleep(interval)
    raise NotReached(f"{full_key} not stamped within {timeout:.0f}s")
