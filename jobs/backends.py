"""A backend for Django's Tasks API: Django's ``@task`` runs on ``jobs_worker``.

::

    TASKS = {"default": {"BACKEND": "jobs.backends.JobsBackend"}}

Each task is a job (:class:`jobs.taskjob.TaskJob`, registered when the task is declared),
sent through the same enqueue path as ``@job`` (after the commit, to the task's queue, a
``run_after`` kept in the database until due) and run by the same workers, with the same
middleware: results in the ORM and the admin, retries, time limits, dead letters. ``OPTIONS``
are ``@job`` options given to every task of the backend (:data:`OPTIONS`). Written against
the documented API that Django 6's ``django.tasks`` and the ``django-tasks`` package share.
"""

from __future__ import annotations

import logging
from functools import partial

from django.core import checks
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from jobs import lifecycle
from jobs.broker import get_broker
from jobs.compat.tasks import (
    DEFAULT_TASK_BACKEND_ALIAS,
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    BaseTaskBackend,
    InvalidTask,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
)
from jobs.conf import settings
from jobs.exceptions import ConfigurationError
from jobs.models import JobRecord
from jobs.options import queue_problem
from jobs.registry import registry
from jobs.taskjob import TaskJob

logger = logging.getLogger("jobs.backends")

#: The ``@job`` options a backend's ``OPTIONS`` may give its tasks (what the worker does
#: with a task; where it goes is the task's own ``queue_name`` and ``priority``).
OPTIONS = frozenset({
    "max_retries", "default_retry_delay", "autoretry_for", "dont_autoretry_for", "retry_kwargs",
    "retry_backoff", "retry_backoff_max", "retry_jitter", "time_limit", "soft_time_limit",
    "acks_late", "reject_on_worker_lost", "track_started", "expires", "rate_limit",
    "global_rate_limit", "serializer", "compression",
})
SIGNALS_MIDDLEWARE = "jobs.middleware.tasks.TaskSignals"


class JobsBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True

    @property
    def supports_priority(self) -> bool:
        """Whether the broker orders messages by priority (RabbitMQ's queues only with
        ``JOBS["TASK_QUEUE_MAX_PRIORITY"]``)."""
        return bool(get_broker().priority_levels)

    # Declaring --------------------------------------------------------------------------

    def validate_task(self, task) -> None:
        """Django's checks, a queue name a broker takes; then the task is registered as a
        job, so that a worker that imports it can run it."""
        super().validate_task(task)
        problem = queue_problem(task.queue_name)
        if problem:
            raise InvalidTask(problem)
        self.job_for(task)

    def job_for(self, task) -> TaskJob:
        """The registered job of ``task`` (registered now if it isn't)."""
        name = task.module_path
        if self.alias != DEFAULT_TASK_BACKEND_ALIAS:
            name = f"{self.alias}:{name}"
        if name in registry:
            job = registry.get(name)
            if isinstance(job, TaskJob) and job.func is task.func:
                return job
        job = TaskJob(task, name, self.job_options())
        registry.register(job)
        return job

    def job_options(self) -> dict:
        """``OPTIONS`` as ``@job`` options; raises ConfigurationError for an unknown key
        (a bad value fails when a task's job is made from them)."""
        options = dict(self.options)
        unknown = set(options) - OPTIONS
        if unknown:
            raise ConfigurationError(
                f"TASKS[{self.alias!r}]['OPTIONS'] has unknown key(s) {', '.join(sorted(unknown))}; "
                f"it takes these options of @job: {', '.join(sorted(OPTIONS))}.")
        for key in ("autoretry_for", "dont_autoretry_for"):  # dotted paths in settings
            if key in options:
                options[key] = tuple(import_string(c) if isinstance(c, str) else c
                                     for c in options[key])
        return options

    # Enqueueing ---------------------------------------------------------------------------

    def enqueue(self, task, args, kwargs):
        self.validate_task(task)
        job = self.job_for(task)
        options = {"queue": task.queue_name, "priority": self.broker_priority(task.priority),
                   "eta": task.run_after}
        envelope = job.prepare(args, kwargs, **options)
        message, now = envelope.message, timezone.now()
        lifecycle.mark_enqueued(message, now)
        try:
            job.publish(envelope, **options)
        except BaseException:
            lifecycle.forget_enqueued(message)
            raise
        result = TaskResult(
            task=task, id=message.id, status=TaskResultStatus.READY, enqueued_at=now,
            started_at=None, last_attempted_at=None, finished_at=None, args=list(args),
            kwargs=dict(kwargs), backend=self.alias, errors=[], worker_ids=[],
        )
        # Sent once the job is on its way: after the commit, as the message is.
        announce = partial(send, task_enqueued, type(self), result)
        if settings.TASK_ENQUEUE_ON_COMMIT:
            transaction.on_commit(announce)
        else:
            announce()
        return result

    def broker_priority(self, priority: int) -> int | None:
        """Django's priority (-100..100) as one of the broker's levels, spread over them in
        order (the highest first on both); None where the broker has no levels."""
        levels = get_broker().priority_levels
        if not levels:
            return None
        steps = len(levels) - 1
        span = TASK_MAX_PRIORITY - TASK_MIN_PRIORITY
        return levels[0] + round((priority - TASK_MIN_PRIORITY) * steps / span)

    # Results --------------------------------------------------------------------------------

    def get_result(self, result_id: str):
        row = JobRecord.objects.filter(job_id=result_id).first()
        job = registry.get(row.name) if row is not None and row.name in registry else None
        if not isinstance(job, TaskJob):
            raise TaskResultDoesNotExist(result_id)
        return job.result_of(row)

    # Checks -------------------------------------------------------------------------------

    def check(self, **kwargs):
        yield from super().check(**kwargs)
        where = f"settings.TASKS[{self.alias!r}]"
        try:
            options = self.job_options()
            from jobs.options import JobOptions

            JobOptions.of(_stand_in, options)
        except (ConfigurationError, ImportError) as exc:
            yield checks.Error(str(exc), obj=where, id="jobs.E050",
                               hint="OPTIONS takes @job's options, by the same names.")
        for queue in sorted(self.queues):
            if queue_problem(queue):
                yield checks.Error(f"QUEUES: {queue_problem(queue)}.", obj=where, id="jobs.E051")
        from jobs.conf import DEFAULT_MIDDLEWARE

        if SIGNALS_MIDDLEWARE not in (settings.MIDDLEWARE or DEFAULT_MIDDLEWARE):
            yield checks.Warning(
                f"JOBS['MIDDLEWARE'] leaves out {SIGNALS_MIDDLEWARE}: workers won't send "
                "Django's task_started and task_finished signals.",
                hint=f"List {SIGNALS_MIDDLEWARE!r} in JOBS['MIDDLEWARE'].", obj=where,
                id="jobs.W050")


def _stand_in() -> None:
    """Stands for a task in the check of OPTIONS' values."""


def send(signal, sender, result) -> None:
    """Send one of Django's task signals robustly: a receiver that raises is logged."""
    for receiver, response in signal.send_robust(sender, task_result=result):
        if isinstance(response, Exception):
            logger.error("A receiver of a task signal raised; ignored: %s",
                         getattr(receiver, "__qualname__", receiver), exc_info=response)
