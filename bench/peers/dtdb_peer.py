"""django-tasks-db on the same database: two ``manage.py db_worker`` processes (two jobs at
once, like ``-c 2``), each with the worker's defaults (a 1 s poll while the queue is empty)
and its per-task logging off, as the other workers log at WARNING.

Results always go to its table (``DBTaskResult``): enqueueing a task is inserting its row.
"""

from __future__ import annotations

import shlex

from bench.peers import ROOT, Peer, python, truncate

WORKERS = 2


class DjangoTasksDbPeer(Peer):
    library = "django-tasks"
    key = "django-tasks-db"
    label = "django-tasks-db, 2 × db_worker"
    results = "database"
    figures = frozenset({"enqueue", "drain", "roundtrip"})
    bulk_method = "no bulk API: enqueue() loop"
    n = 5_000
    n_note = "about 150 jobs/s: 20,000 would take over two minutes a repetition"
    roundtrips = 20
    roundtrip_note = "an idle db_worker polls its table every second (its default --interval)"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        from bench import dtdb_tasks

        self.tasks = dtdb_tasks

    def worker_argv(self) -> list[str]:
        one = shlex.join([python(), str(ROOT / "manage.py"), "db_worker", "--backend",
                          self.tasks.BACKEND, "--queue-name", self.queue, "-v", "0"])
        # One process tree: the shell and its two workers, killed and measured together.
        return ["/bin/sh", "-c", " & ".join([one] * WORKERS) + " & wait"]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_DTDB_QUEUE": self.queue}

    def enqueue(self, n: int) -> None:
        enqueue = self.tasks.noop.enqueue
        for _ in range(n):
            enqueue()

    def enqueue_bulk(self, n: int) -> None:
        self.enqueue(n)

    def send_mark(self, key: str) -> None:
        self.tasks.mark.enqueue(key)

    def round_trip(self) -> None:
        from bench.measure import wait_until

        result = self.tasks.noop.enqueue()

        def done():
            result.refresh()
            return result.is_finished

        wait_until(done, 10, "the task's result", interval=0.005)
        assert result.status == "SUCCESSFUL", result.status

    def stored_results(self) -> int | None:
        from django_tasks_db.models import DBTaskResult

        return DBTaskResult.objects.filter(queue_name=self.queue, status="SUCCESSFUL").count()

    def purge(self) -> None:
        from django_tasks_db.models import DBTaskResult

        super().purge()
        truncate(DBTaskResult._meta.db_table)
