"""A Django task (``@task`` of Django's Tasks API) as a job, and its results as Django's.

:class:`TaskJob` is what :class:`jobs.backends.JobsBackend` registers for each task: the
worker runs it as it runs any job, with the same middleware (results, retries, time limits,
dead letters). This module imports nothing of the Tasks API until it is used, so that the
middleware can tell a task from a job without django-tasks installed.
"""

from __future__ import annotations

from django.utils import timezone

from jobs.job import Job
from jobs.models import READY_STATES, States

#: A job's states as Django's ``TaskResultStatus`` names them (any other state, a custom one
#: that ``update_state`` wrote, is RUNNING).
STATUS = {
    States.PENDING: "READY",
    States.RECEIVED: "READY",
    States.RETRY: "READY",
    States.STARTED: "RUNNING",
    States.SUCCESS: "SUCCESSFUL",
    States.FAILURE: "FAILED",
    States.REVOKED: "FAILED",
}


class TaskJob(Job):
    """A Django task run by the worker: a job named after the task's function (and the
    backend alias, if not the default), with the backend's ``OPTIONS`` as its options."""

    def __init__(self, task, name: str, options: dict) -> None:
        super().__init__(task.func, name=name, **options)
        self.task = task  # as declared: its default queue, priority, backend

    def __call__(self, *args, **kwargs):
        if self.task.takes_context:
            from jobs.compat.tasks import TaskContext

            return self.func(TaskContext(task_result=self.running_result(self.request)), *args, **kwargs)
        return self.func(*args, **kwargs)

    def check_arguments(self, args: tuple, kwargs: dict) -> None:
        if self.task.takes_context:  # the worker passes the context first
            args = (None, *args)
        super().check_arguments(args, kwargs)

    def running_result(self, request):
        """The TaskResult of the attempt running now (RUNNING), from its request."""
        from jobs.compat.tasks import TaskResult, TaskResultStatus

        now = timezone.now()
        return TaskResult(
            task=self.task, id=request.id, status=TaskResultStatus.RUNNING, enqueued_at=None,
            started_at=now, last_attempted_at=now, finished_at=None, args=list(request.args),
            kwargs=dict(request.kwargs), backend=self.task.backend, errors=[],
            worker_ids=[request.hostname or ""] * (request.retries + 1),
        )

    def result_of(self, row):
        """The TaskResult a :class:`jobs.models.JobRecord` row says."""
        from jobs.compat.tasks import TaskResult, TaskResultStatus, set_return_value

        state = row.state
        status = TaskResultStatus(STATUS.get(state, "RUNNING"))
        result = TaskResult(
            task=self.task, id=row.job_id, status=status, enqueued_at=row.date_created,
            started_at=row.date_started, last_attempted_at=row.date_started,
            finished_at=row.date_done if state in READY_STATES else None,
            args=row.args or [], kwargs=row.kwargs or {}, backend=self.task.backend,
            errors=errors_of(row), worker_ids=worker_ids_of(row),
        )
        if state == States.SUCCESS:
            set_return_value(result, row.result)
        return result


def errors_of(row) -> list:
    """The error a failed (or retried, or revoked) attempt stored, as Django's TaskError:
    the exception's class and traceback."""
    from jobs.compat.tasks import TaskError

    data = row.result
    if row.state not in (States.FAILURE, States.RETRY, States.REVOKED) or not isinstance(data, dict):
        return []
    path = f"{data.get('exc_module') or 'builtins'}.{data.get('exc_type') or 'Exception'}"
    return [TaskError(exception_class_path=path, traceback=row.traceback or "")]


def worker_ids_of(row) -> list[str]:
    """One entry per attempt: retries before this one, and this one's deliveries (more than
    one when a worker died running it). Only the latest worker's name is stored."""
    if not row.worker or row.state == States.PENDING:
        return []
    return [row.worker] * (row.retries + max(row.deliveries, 1))
