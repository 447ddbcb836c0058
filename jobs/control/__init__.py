"""Remote control of the workers: ask every live worker what it is doing (``jobs_inspect``)
or tell it what to do (``jobs_control``), as Celery's ``inspect`` and ``control`` do.

:func:`broadcast` sends a command on the project's control channel and returns the answers,
``{worker name: reply}``; :func:`revoke` records revocations in the database (so they
outlive every worker) and then tells the live workers.
"""

from __future__ import annotations

from jobs.control.channels import broadcast

#: What ``jobs_inspect`` can ask.
INSPECT = ("ping", "active", "reserved", "scheduled", "registered", "stats", "active_queues",
           "revoked")
#: What ``jobs_control`` can tell.
CONTROL = ("revoke", "terminate", "shutdown", "add_consumer", "cancel_consumer", "rate_limit",
           "time_limit", "pool_grow", "pool_shrink")


def revoke(job_ids: list[str], terminate: bool = False, destination: list[str] | None = None,
           timeout: float = 1.0) -> dict:
    """Revoke the jobs ``job_ids`` for good (a worker started later still won't run them),
    tell the live workers at once, and return their answers. With ``terminate``, a running
    one is stopped where its pool can (prefork)."""
    from jobs.results import JobResult

    for job_id in job_ids:
        JobResult(job_id).revoke(terminate=terminate)
    return broadcast("revoke", {"job_ids": list(job_ids), "terminate": terminate},
                     destination, timeout)


__all__ = ["CONTROL", "INSPECT", "broadcast", "revoke"]
