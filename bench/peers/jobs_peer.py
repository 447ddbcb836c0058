"""``jobs`` itself: ``manage.py jobs_worker -c 2 -P prefork`` with results in the ORM or off,
and with results in the ORM but no STARTED row (``TASK_TRACK_STARTED = False``: one write per
job, as Huey's and as Celery's default)."""

from __future__ import annotations

import json
import os

from bench.peers import ROOT, Peer, python, truncate


class JobsPeer(Peer):
    library = "jobs"

    def __init__(self, ctx, ignore_result: bool = False, track_started: bool = True) -> None:
        super().__init__(ctx)
        from bench import tasks

        self.tasks = tasks
        self.ignore_result = ignore_result
        self.track_started = track_started
        if ignore_result:
            self.key, self.results, self.label = "jobs-off", "off", "jobs, results off"
        elif not track_started:
            self.key, self.results = "jobs-untracked", "ORM, no STARTED"
            self.label = "jobs, STARTED untracked (`TASK_TRACK_STARTED = False`)"
        else:
            self.key, self.results, self.label = "jobs", "ORM", "jobs (defaults, results in ORM)"
        self.figures = frozenset({"enqueue", "drain", "roundtrip", "scale", "chord"}
                                 if self.key == "jobs" else {"enqueue", "drain"})
        self.has_bulk = hasattr(tasks.noop, "delay_many")
        self.bulk_method = "delay_many" if self.has_bulk else "no bulk API: delay() loop"

    def worker_argv(self) -> list[str]:
        return [python(), str(ROOT / "manage.py"), "jobs_worker", "-c", "2", "-P", "prefork",
                "-Q", self.queue, "-l", "WARNING"]

    def worker_env(self) -> dict[str, str]:
        env = {"BENCH_QUEUE": self.queue,
               "BENCH_JOBS_IGNORE_RESULT": "1" if self.ignore_result else "0"}
        if not self.track_started:
            extra = json.loads(os.environ.get("BENCH_JOBS_EXTRA", "{}"))
            env["BENCH_JOBS_EXTRA"] = json.dumps({**extra, "TASK_TRACK_STARTED": False})
        return env

    def enqueue(self, n: int) -> None:
        delay = self.tasks.noop.delay
        for _ in range(n):
            delay()

    def enqueue_bulk(self, n: int) -> None:
        if self.has_bulk:
            self.tasks.noop.delay_many([()] * n)
        else:
            self.enqueue(n)

    def enqueue_delayed(self, n: int, seconds: int) -> None:
        if self.has_bulk:
            self.tasks.noop.delay_many([()] * n, countdown=seconds)
            return
        apply_async = self.tasks.noop.apply_async
        for _ in range(n):
            apply_async(countdown=seconds)

    def send_mark(self, key: str) -> None:
        self.tasks.mark.delay(key)

    def round_trip(self) -> None:
        self.tasks.noop.delay().get(timeout=10)

    def chord(self, n: int) -> None:
        from jobs import chord

        header = (self.tasks.noop.s() for _ in range(n))
        assert chord(header, self.tasks.count.s()).delay().get(timeout=max(60, n / 10)) == n

    def stored_results(self) -> int | None:
        if self.ignore_result:
            return None
        from jobs.models import JobRecord, States

        return JobRecord.objects.filter(name=self.tasks.noop.name, state=States.SUCCESS).count()

    def purge(self) -> None:
        from jobs.models import ChordPart, GroupRecord, JobRecord, Message

        super().purge()
        truncate(JobRecord._meta.db_table)
        truncate(GroupRecord._meta.db_table)
        truncate(ChordPart._meta.db_table)
        Message.objects.filter(queue__startswith=self.ctx.prefix).delete()
