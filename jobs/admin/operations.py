"""What an operator does from the admin: retry or revoke a job, run a delayed job now, revoke a
queued one, ask a worker to shut down. Each acts on rows only; workers do the rest."""

from __future__ import annotations

from django.utils import timezone

from jobs.display import message_job_id, payload_headers
from jobs.exceptions import JobsError, NotRegistered, PublishError
from jobs.models import JobRecord, Message, Worker
from jobs.registry import registry
from jobs.results import JobResult


class OperationError(JobsError):
    """An operation that can't be done, with the reason to show to the operator."""


def retry_job(row: JobRecord) -> JobResult:
    """Enqueue ``row``'s job again with the same arguments and queue, as a new job.

    The new job's parent is the old one, so each lists the other on its page. Nothing is
    sent when the job is no longer registered or its arguments no longer fit.
    """
    try:
        job = registry.get(row.name)
    except NotRegistered:
        raise OperationError(f"no job named {row.name!r} is registered in this project")
    args, kwargs = row.args or [], row.kwargs or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise OperationError("its recorded arguments are not a list and a dict")
    try:
        return job.apply_async(args, kwargs, queue=row.queue or None, parent_id=row.job_id,
                               root_id=row.root_id or row.job_id)
    except (TypeError, ValueError, PublishError) as exc:
        raise OperationError(str(exc))


def revoke_job(row: JobRecord) -> None:
    """Make sure ``row``'s job doesn't run; if it runs now, its worker stops it at its next
    heartbeat where the pool can (prefork)."""
    JobResult(row.job_id, name=row.name).revoke(terminate=True)


def revoke_message(message: Message, reason: str = "revoked") -> str | None:
    """Record the job of a queued message REVOKED, so a worker drops it instead of running
    it (or stops it, if it runs already and the pool can); returns the job id, or None for a
    message that is not a job."""
    job_id, name = message_job_id(message), payload_headers(message).get("task")
    if job_id is None:
        return None
    held = message.lease_until is not None and message.lease_until >= timezone.now()
    handle = JobResult(job_id, name=name if isinstance(name, str) else None)
    handle.revoke(terminate=held, reason=reason)
    return job_id


def run_now(messages) -> int:
    """Make the delayed messages among ``messages`` (a queryset) due now; returns how many.

    A worker serving the queue takes them at its next poll (on Redis and RabbitMQ, its
    releaser moves them to the broker within a second)."""
    now = timezone.now()
    return messages.filter(visible_at__gt=now).exclude(lease_until__gte=now).update(
        visible_at=now)


def pause_queue(name: str) -> dict:
    """Every live worker stops taking jobs from queue ``name`` (``cancel_consumer``); the
    answers, ``{worker: reply}``. What was queued stays queued."""
    from jobs.control import broadcast

    return broadcast("cancel_consumer", {"queue": name}, timeout=2.0)


def resume_queue(name: str) -> dict:
    """The workers that paused queue ``name`` take jobs from it again (``add_consumer``)."""
    from jobs.control import broadcast

    return broadcast("add_consumer", {"queue": name, "only_if_paused": True}, timeout=2.0)


def request_shutdown(worker: Worker) -> None:
    """Ask ``worker`` for a warm shutdown: it stops at its next heartbeat, letting its
    running jobs finish."""
    if worker.stopped_at is not None:
        raise OperationError("it has stopped already")
    if worker.stop_requested_at is not None:
        raise OperationError("a shutdown was requested already")
    Worker.objects.filter(pk=worker.pk).update(stop_requested_at=timezone.now())
