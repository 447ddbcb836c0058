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


def rate_limit(job_name: str, rate, *, is_global: bool = False,
               destination: list[str] | None = None, timeout: float = 1.0) -> dict:
    """Limit job ``job_name`` to ``rate`` (``"10/m"``; 0: no limit) in each worker, or with
    ``is_global`` across all workers, from now on; returns the live workers' answers.
    Without a ``destination`` the change is saved, and holds for workers started later too
    until :func:`reset_rate_limit`; with one, it holds in the workers named until they stop."""
    from jobs import ratelimits

    if destination is None:
        ratelimits.save(job_name, rate, is_global=is_global)
    return broadcast("rate_limit", {"job_name": job_name, "rate": rate, "is_global": is_global},
                     destination, timeout)


def reset_rate_limit(job_name: str, destination: list[str] | None = None,
                     timeout: float = 1.0) -> dict:
    """Give job ``job_name`` back the rate limits of its code, everywhere."""
    from jobs import ratelimits

    if destination is None:
        ratelimits.reset(job_name)
    return broadcast("rate_limit", {"job_name": job_name, "reload": True}, destination, timeout)


__all__ = ["CONTROL", "INSPECT", "broadcast", "rate_limit", "reset_rate_limit", "revoke"]
