"""Background jobs for Django.

    from jobs import job

    @job
    def add(x, y):
        return x + y

    add.delay(2, 3).get(timeout=10)
"""

from jobs.job import Job, job
from jobs.registry import send_task

__all__ = ["AsyncResult", "Job", "JobResult", "job", "send_task"]


def __getattr__(name):
    # JobResult (and its Celery name, AsyncResult) reads the ORM, so it is imported only
    # once Django's apps are ready.
    if name in ("JobResult", "AsyncResult"):
        from jobs.results import JobResult

        return JobResult
    raise AttributeError(f"module 'jobs' has no attribute {name!r}")
