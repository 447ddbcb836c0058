"""Background jobs for Django.

    from jobs import job

    @job
    def add(x, y):
        return x + y

    add.delay(2, 3).get(timeout=10)
"""

from jobs.canvas import Signature, chain, chord, chunks, group, signature, xmap, xstarmap
from jobs.job import Job, job
from jobs.registry import send_task

__all__ = ["AsyncResult", "GroupResult", "Job", "JobResult", "Signature", "chain", "chord",
           "chunks", "group", "job", "send_task", "signature", "xmap", "xstarmap"]


def __getattr__(name):
    # JobResult (and its Celery name, AsyncResult) reads the ORM, so it is imported only
    # once Django's apps are ready.
    if name in ("JobResult", "AsyncResult"):
        from jobs.results import JobResult

        return JobResult
    if name == "GroupResult":
        from jobs.groups import GroupResult

        return GroupResult
    raise AttributeError(f"module 'jobs' has no attribute {name!r}")
