"""Jobs that kill the process running them: redelivered, up to a cap, then dead-lettered.

One rule: an attempt of a job started ``TASK_MAX_DELIVERIES`` times without an outcome is
poison (it may be killing the workers that run it); it is dead-lettered and recorded as
FAILURE with :class:`~jobs.exceptions.WorkerLostError`. The count comes from the job's row
where it counts its starts (STARTED tracked, result kept), which survives the whole worker
being killed; otherwise the worker counts the attempt's losses itself.

A job whose process died is delivered again (``reject_on_worker_lost``, the default) or
recorded as failed.
"""

from __future__ import annotations

import logging

from jobs import lifecycle
from jobs.conf import settings
from jobs.exceptions import WorkerLostError
from jobs.middleware import Middleware
from jobs.middleware.broadcast import own_run
from jobs.outcome import Kind, Outcome
from jobs.registry import registry

logger = logging.getLogger("jobs.worker")

MEMORY = 10_000  # attempts whose losses a worker remembers


class PoisonJobs(Middleware):
    def __init__(self) -> None:
        self._losses: dict[tuple, int] = {}  # (job id, retries) -> times lost with its process

    def execute(self, execution, call_next):
        if execution.starts <= settings.TASK_MAX_DELIVERIES:
            return call_next(execution)
        reason = _reason(f"started {execution.starts} times without finishing")
        if execution.delivery is not None:
            lifecycle.dead_letter(execution.delivery, reason, execution.hostname)
        return execution.outcome(Kind.FAILED, reason, exception=WorkerLostError(reason))

    def completed(self, worker, delivery, outcome: Outcome) -> Outcome:
        if outcome.kind is not Kind.LOST:
            return outcome
        if delivery is not None:
            delivery = own_run(worker, delivery)  # a broadcast job's copy: this worker's run
        job = registry.get(outcome.name) if outcome.name in registry else None
        if job is not None and not job.option("reject_on_worker_lost"):
            error = WorkerLostError(f"the process running the job died ({outcome.reason})")
            return worker.record_failure(delivery, outcome, error)
        poison = self._lost_too_often(job, delivery) if job and delivery else None
        if poison:
            lifecycle.dead_letter(delivery, poison, worker.hostname)
            return worker.record_failure(delivery, outcome, WorkerLostError(poison))
        logger.error("Job %s[%s] lost with its process (%s); it will run again",
                     outcome.name, outcome.job_id, outcome.reason,
                     extra={"job_id": outcome.job_id})
        return Outcome(Kind.REQUEUE, outcome.job_id, outcome.name, outcome.reason)

    def _lost_too_often(self, job, delivery) -> str | None:
        """For a job whose row doesn't count its starts: count this loss; the reason it is
        poison once the count reaches the cap, else None."""
        headers = delivery.headers
        if lifecycle.counts_starts(job, bool(headers.get("ignore_result"))):
            return None  # its STARTED write counts, and stops it after the cap
        key = (headers.get("id"), headers.get("retries"))
        losses = self._losses[key] = self._losses.pop(key, 0) + 1
        if len(self._losses) > MEMORY:
            del self._losses[next(iter(self._losses))]  # the oldest
        if losses < settings.TASK_MAX_DELIVERIES:
            return None
        del self._losses[key]
        return _reason(f"lost the process running it {losses} times")


def _reason(what: str) -> str:
    return (f"{what} (TASK_MAX_DELIVERIES = {settings.TASK_MAX_DELIVERIES}); "
            "it may be killing the workers that run it")
