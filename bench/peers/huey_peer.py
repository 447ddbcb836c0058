"""Huey: ``huey_consumer bench.huey_tasks.huey -w 2 -k process`` (two worker processes, like
``-c 2 -P prefork``), results stored (``store_none``: a no-op's ``None`` too).

Its storage follows the run: Redis with ``--broker redis``; with ``--broker django``, Huey's
PostgreSQL storage in the bench's database, or its SQLite storage (a file of its own) with
``--database sqlite``. Huey's consumer logs each task at INFO: ``-q`` keeps it at WARNING, as
the other workers.
"""

from __future__ import annotations

import os

from bench.peers import Peer, python

STORAGES = {"redis": "Redis", "postgres": "PostgreSQL", "sqlite": "SQLite"}


def storage_url(ctx) -> str:
    if ctx.broker == "redis":
        return ctx.redis_url
    if ctx.database == "postgres":
        return ctx.database_url
    return f"sqlite:///{ctx.logs / 'huey.sqlite3'}"


class HueyPeer(Peer):
    library = "huey"
    key = "huey"
    figures = frozenset({"enqueue", "drain", "roundtrip"})
    bulk_method = "no bulk API: a call per task"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.storage = storage_url(ctx)
        os.environ["BENCH_HUEY_STORAGE"] = self.storage  # read by bench.huey_tasks on import
        from bench import huey_tasks

        self.tasks = huey_tasks
        self.huey = huey_tasks.huey
        kind = STORAGES["redis" if ctx.broker == "redis" else ctx.database]
        self.label = f"Huey -w 2 -k process, {kind} storage"
        self.results = kind

    def worker_argv(self) -> list[str]:
        return [python(), "-m", "huey.bin.huey_consumer", "bench.huey_tasks.huey", "-w", "2",
                "-k", "process", "-q"]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_HUEY_STORAGE": self.storage}

    def enqueue(self, n: int) -> None:
        noop = self.tasks.noop
        for _ in range(n):
            noop()

    def enqueue_bulk(self, n: int) -> None:
        self.enqueue(n)

    def send_mark(self, key: str) -> None:
        self.tasks.mark(key)

    def round_trip(self) -> None:
        self.tasks.noop().get(blocking=True, timeout=10)

    def stored_results(self) -> int | None:
        return self.huey.result_count()

    def purge(self) -> None:
        super().purge()
        self.huey.flush()  # its queue, schedule and results, under its own name
