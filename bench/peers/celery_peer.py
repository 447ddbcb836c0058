"""Celery 5 on the same broker: ``celery worker -P prefork -c 2``, Celery's defaults otherwise.

Results: off, stored by django-celery-results in the bench's database (``django-db``), or in
Redis (the round trip and the chord, where Celery is at its fastest).
"""

from __future__ import annotations

from bench.peers import Peer, python, truncate

LABELS = {
    "off": "Celery, results off",
    "django-db": "Celery, django-celery-results",
    "redis": "Celery, Redis results",
}
FIGURES = {
    "off": {"enqueue", "drain", "scale"},
    "django-db": {"enqueue", "drain", "roundtrip"},
    "redis": {"roundtrip", "chord"},
}


class CeleryPeer(Peer):
    library = "celery"
    bulk_method = "group(...).apply_async()"

    def __init__(self, ctx, results: str) -> None:
        super().__init__(ctx)
        from bench.celery_tasks import make_app

        self.mode = results
        self.key = {"off": "celery-off", "django-db": "celery-db", "redis": "celery-redis"}[results]
        self.results = {"off": "off", "django-db": "django-db", "redis": "Redis"}[results]
        self.label = LABELS[results]
        self.figures = frozenset(FIGURES[results])
        self.app = make_app(results)
        self.noop = self.app.tasks["bench.noop"]
        self.mark = self.app.tasks["bench.mark"]
        self.count = self.app.tasks["bench.count"]
        if results == "django-db":
            self.n = 5_000
            self.n_note = "about 200 jobs/s: 20,000 would take 100 s a repetition"
            self.roundtrips = 20
            self.roundtrip_note = "AsyncResult.get() polls the database every 0.5 s"

    def worker_argv(self) -> list[str]:
        return [python(), "-m", "celery", "-A", "bench.celery_tasks", "worker", "-P", "prefork",
                "-c", "2", "-Q", self.queue, "-l", "WARNING", "-n", f"{self.ctx.prefix}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_CELERY_RESULTS": self.mode, "BENCH_CELERY_QUEUE": self.queue}

    def enqueue(self, n: int) -> None:
        delay = self.noop.delay
        for _ in range(n):
            delay()

    def enqueue_bulk(self, n: int) -> None:
        from celery import group

        group(self.noop.s() for _ in range(n)).apply_async()

    def enqueue_delayed(self, n: int, seconds: int) -> None:
        apply_async = self.noop.apply_async
        for _ in range(n):
            apply_async(countdown=seconds)

    def send_mark(self, key: str) -> None:
        self.mark.delay(key)

    def round_trip(self) -> None:
        result = self.noop.delay()
        result.get(timeout=10)
        if self.mode == "redis":
            result.forget()

    def chord(self, n: int) -> None:
        from celery import chord

        result = chord(self.noop.s() for _ in range(n))(self.count.s())
        assert result.get(timeout=max(60, n / 10)) == n
        result.forget()

    def stored_results(self) -> int | None:
        if self.mode != "django-db":
            return None
        from django_celery_results.models import TaskResult

        return TaskResult.objects.filter(status="SUCCESS").count()

    def purge(self) -> None:
        super().purge()
        if self.mode == "django-db":
            from django_celery_results.models import TaskResult

            truncate(TaskResult._meta.db_table)
