"""``@job(unique=True)``: a call is sent only if the same call isn't queued or running.

The lock (:mod:`jobs.unique`) is taken before the message is sent, released if sending
fails, kept across retries, and released when the job reaches a final state. For a job sent
to a broadcast queue, that is when the first worker's run ends: the lock is the broadcast's,
under its id, and each worker's run has an id of its own.
"""

from __future__ import annotations

from jobs import unique
from jobs.middleware import Middleware
from jobs.middleware.broadcast import HEADER as BROADCAST_ID
from jobs.outcome import Kind

_RELEASING = frozenset({Kind.SUCCEEDED, Kind.FAILED, Kind.REVOKED})


class Unique(Middleware):
    def before_publish(self, job, envelope, options):
        if not job.unique or envelope.message.retries:
            return envelope  # a retry: the job holds its lock already (kept by finished())
        existing = unique.acquire(job, envelope.message)
        return envelope if existing is None else existing  # the same call, already queued

    def passes_through(self, job, message, options) -> bool:
        return not job.unique or bool(message.retries)  # each call takes its own lock

    def publish_failed(self, job, envelope, exc) -> None:
        if job.unique:
            unique.release(envelope.message.id)

    def finished(self, execution, outcome) -> None:
        if not execution.job.unique:
            return
        if outcome.kind in _RELEASING:
            headers = execution.message.headers
            unique.release(headers.get(BROADCAST_ID) or execution.message.id)
        elif outcome.kind is Kind.RETRIED:
            unique.extend(execution.job, execution.message.id, outcome.eta)
