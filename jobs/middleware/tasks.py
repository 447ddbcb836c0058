"""Django's ``task_started`` and ``task_finished`` signals for Django tasks
(:mod:`jobs.backends`), sent by the worker as Django's own backends send them.

``task_started`` goes out just before the task's function runs, with the RUNNING result;
``task_finished`` once its final state (SUCCESSFUL or FAILED) is recorded, with the result
``get_result()`` now reads. A retried attempt is not finished: the task is READY again.
Plain jobs skip it (``applies_to``).
"""

from __future__ import annotations

from jobs.middleware import Middleware
from jobs.outcome import Kind
from jobs.taskjob import TaskJob

#: Outcomes after which a task's result is final.
FINAL = frozenset({Kind.SUCCEEDED, Kind.FAILED, Kind.REVOKED})


class TaskSignals(Middleware):
    def applies_to(self, job) -> bool:
        return job.__class__ is TaskJob  # plain jobs skip its hooks at no cost

    def started(self, execution) -> None:
        job = execution.job
        if job.__class__ is TaskJob:
            from jobs.backends import JobsBackend, send
            from jobs.compat.tasks import task_started

            if task_started.receivers:
                send(task_started, JobsBackend, job.running_result(execution.request))

    def finished(self, execution, outcome) -> None:
        job = execution.job
        if job.__class__ is TaskJob and outcome.kind in FINAL:
            from jobs.backends import JobsBackend, send
            from jobs.compat.tasks import task_finished
            from jobs.models import JobRecord

            if task_finished.receivers:
                row = JobRecord.objects.get(job_id=execution.message.id)
                send(task_finished, JobsBackend, job.result_of(row))
