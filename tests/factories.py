"""Rows for tests: ``factories.record(state=States.FAILURE)``, ``factories.worker_row()``...

Each function saves one row and takes any field of its model. What a test leaves out gets a
plausible default (a unique id, a job name, dates, a one-process worker): name in the test
what its assertions depend on, and nothing else.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta

from django.utils import timezone

from jobs.models import READY_STATES, DeadLetter, JobRecord, Message, States, Worker
from jobs_beat.models import IntervalSchedule, PeriodicTask

#: The job a row names unless told: not one of this project's, like most jobs in the tests.
JOB = "shop.jobs.charge"
#: A job of this project (the demo's ``add``), for rows a worker or the admin must find.
ADD = "project.demo.jobs.add"
#: The body of a call without arguments, ``[[], {}, {}]``, as the transport stores it (base64).
EMPTY_CALL = "W1tdLCB7fSwge31d"

_numbers = itertools.count(1)


def unique(prefix: str) -> str:
    """``job-1``, ``job-2``... unique in the test run (and free of letters a test looks for)."""
    return f"{prefix}-{next(_numbers)}"


def record(**fields) -> JobRecord:
    """A job's row (:class:`JobRecord`): a job that succeeded a moment ago, unless told.

    A job in a final state gets ``date_done`` (now) unless given; others get none."""
    now = timezone.now()
    fields.setdefault("job_id", unique("job"))
    fields.setdefault("name", JOB)
    state = fields.setdefault("state", States.SUCCESS)
    fields.setdefault("date_created", now)
    if state in READY_STATES:
        fields.setdefault("date_done", now)
    return JobRecord.objects.create(**fields)


def dead_letter(**fields) -> DeadLetter:
    """A message no worker could run, kept whole: a call of a job that isn't registered."""
    job_id = fields.setdefault("job_id", unique("job"))
    name = fields.setdefault("job_name", "shop.jobs.gone")
    defaults = {
        "queue": "default", "reason": f"NotRegistered: no job named {name!r}",
        "content_type": "application/json", "content_encoding": "utf-8",
        "headers": {"task": name, "id": job_id}, "body": b"[[], {}, {}]",
    }
    return DeadLetter.objects.create(**{**defaults, **fields})


def worker_row(**fields) -> Worker:
    """A worker's row, online (its heartbeat is now): one solo process on ``default``."""
    defaults = {"hostname": f"jobs@{unique('host')}", "pid": 1, "queues": ["default"],
                "pool": "solo", "concurrency": 1}
    return Worker.objects.create(**{**defaults, **fields})


def message_row(*, job_id: str | None = None, name: str = JOB, **fields) -> Message:
    """A job's message queued on the ``django://`` transport, ready to be taken: a call of
    job ``name`` without arguments. ``payload`` replaces the whole message."""
    payload = {"body": EMPTY_CALL, "headers": {"task": name, "id": job_id or unique("job")},
               "properties": {"delivery_tag": unique("tag")}}
    return Message.objects.create(**{"queue": "default", "payload": json.dumps(payload),
                                     **fields})


def every(seconds: int) -> IntervalSchedule:
    """The interval schedule of ``seconds`` (one row per interval, as the admin keeps them)."""
    every, period = IntervalSchedule.from_timedelta(timedelta(seconds=seconds))
    return IntervalSchedule.objects.get_or_create(every=every, period=period)[0]


def periodic_task(name: str | None = None, *, due: datetime | None = None,
                  **fields) -> PeriodicTask:
    """A periodic task: ``add(2, 3)`` every 10 s unless told, due at ``due`` if given."""
    fields.setdefault("task", ADD)
    fields.setdefault("args", [2, 3])
    if not any(fields.get(k) for k in ("interval", "crontab", "clocked")):
        fields["interval"] = every(10)
    task = PeriodicTask.objects.create(name=name or unique("task"), **fields)
    if due is not None:
        PeriodicTask.objects.filter(pk=task.pk).update(next_run_at=due)
    task.refresh_from_db()
    return task
