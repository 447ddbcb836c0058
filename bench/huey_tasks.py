"""The Huey instance and tasks of the benchmark (``huey_consumer bench.huey_tasks.huey``).

The storage comes from ``BENCH_HUEY_STORAGE``: a ``redis://`` URL, a ``postgres://`` URL (the
bench's database, Huey's own tables) or ``sqlite:///path`` (a file of Huey's own, beside the
bench's database). Results are stored, ``None`` included, as jobs stores them.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from huey import PostgresHuey, RedisHuey, SqliteHuey

from bench import marks

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
STORAGE = os.environ.get("BENCH_HUEY_STORAGE", "redis://127.0.0.1:6379/9")


def make(storage: str = STORAGE):
    name = f"{PREFIX}-huey"
    if storage.startswith("redis"):
        return RedisHuey(name, url=storage, store_none=True)
    if storage.startswith("postgres"):
        dsn = storage.replace("postgres://", "postgresql://", 1)
        return PostgresHuey(name, dsn=dsn, store_none=True)
    path = urlsplit(storage).path
    # strict_fifo: rowids never reused, so the drain's end mark runs after the jobs.
    return SqliteHuey(name, filename=path, store_none=True, strict_fifo=True)


huey = make()


@huey.task()
def noop():
    return None


@huey.task()
def mark(key: str):
    marks.stamp(key)
