"""Running one delivered job: a short pipeline ending in an explicit :class:`Outcome`.

decode -> look up the job -> honour expiry and revocation -> record STARTED -> run ->
record SUCCESS, RETRY or FAILURE. Runs wherever the pool runs jobs: a prefork child, a
thread, or the worker process itself.
"""

from __future__ import annotations

import logging
import time
import traceback as tb
from dataclasses import dataclass, field

from django.db import DataError, IntegrityError
from django.utils import timezone

from jobs import context, signals
from jobs.compression import decompress
from jobs.conf import settings
from jobs.exceptions import InvalidMessage, NotRegistered, Retry, WorkerLostError
from jobs.job import Job
from jobs.messages import JobMessage, decode
from jobs.registry import registry
from jobs.worker import connections, deadletters, recording
from jobs.worker.limits import soft_time_limit
from jobs.worker.outcome import Kind, Outcome

logger = logging.getLogger("jobs.worker")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message as the broker delivered it, in a form that can cross to a child process."""

    tag: object
    headers: dict
    body: bytes
    content_type: str
    content_encoding: str
    queue: str
    properties: dict = field(default_factory=dict)
    delivery_info: dict = field(default_factory=dict)
    revoked: bool = False  # the worker knows the job was revoked (jobs.worker.revocations)


def execute(delivery: Delivery, hostname: str, accept: set[str]) -> Outcome:
    """Run the job a delivery names and record what happened."""
    connections.before_job()
    try:
        return _execute(delivery, hostname, accept)
    finally:
        connections.after_job()


def _execute(delivery: Delivery, hostname: str, accept: set[str]) -> Outcome:
    try:
        message = decode(delivery.headers, _body(delivery), delivery.content_type,
                         delivery.content_encoding, accept, delivery.queue)
        job = registry.get(message.name)
    except (InvalidMessage, NotRegistered) as exc:
        deadletters.store(delivery, str(exc), hostname)
        return Outcome(Kind.REJECTED, delivery.headers.get("id") or "", reason=str(exc))
    if message.expires is not None and message.expires <= timezone.now():
        reason = f"expired at {message.expires.isoformat()}"
        return _revoke(job, message, reason, hostname)
    track = counts_starts(job, message.ignore_result)
    starts = connections.once_more_if_disconnected(recording.mark_started, message, hostname,
                                                   track, delivery.revoked)
    if starts is None:
        return _revoke(job, message, "revoked before it started", hostname)
    if starts > settings.TASK_MAX_DELIVERIES:
        return _poison(job, message, delivery, starts, hostname)
    request = _request(message, hostname, delivery)
    return run(job, message, request, hostname, started=track)


def _poison(job, message: JobMessage, delivery: Delivery, starts: int, hostname: str) -> Outcome:
    """A job that was started again and again without finishing: it kills its workers."""
    reason = (f"started {starts} times without finishing (TASK_MAX_DELIVERIES = "
              f"{settings.TASK_MAX_DELIVERIES}); it may be killing the workers that run it")
    deadletters.store(delivery, reason, hostname)
    recording.mark_failed(message, WorkerLostError(reason), "", None, hostname)
    signals.job_failed.send(job, job_id=message.id, name=message.name, request=None,
                            exception=WorkerLostError(reason), traceback="", runtime=None)
    return Outcome(Kind.REJECTED, message.id, message.name, reason)


def _body(delivery: Delivery) -> bytes:
    compression = delivery.headers.get("compression")
    if not compression:
        return delivery.body
    return decompress(delivery.body, compression, settings.TASK_MAX_MESSAGE_SIZE)


def counts_starts(job: Job, ignore_result: bool) -> bool:
    """Whether the job's row counts its starts (its STARTED write, which also refuses a
    revoked job): STARTED is tracked and the result kept."""
    return bool(job.option("track_started")) and not (ignore_result or job.option("ignore_result"))


def _ignores_result(job: Job, message: JobMessage) -> bool:
    return message.ignore_result or job.option("ignore_result")


def _revoke(job: Job, message: JobMessage, reason: str, hostname: str) -> Outcome:
    recording.mark_revoked(message, reason, hostname)
    logger.info("Job %s[%s] revoked: %s", message.name, message.id, reason,
                extra={"job_id": message.id})
    signals.job_revoked.send(job, job_id=message.id, name=message.name, reason=reason)
    return Outcome(Kind.REVOKED, message.id, message.name, reason)


def _request(message: JobMessage, hostname: str, delivery: Delivery | None) -> context.Request:
    return context.Request(
        id=message.id, name=message.name, args=message.args, kwargs=message.kwargs,
        retries=message.retries, queue=message.queue, eta=message.eta, expires=message.expires,
        root_id=message.root_id or message.id, parent_id=message.parent_id,
        group_id=message.group_id, hostname=hostname, is_eager=delivery is None,
        delivery_info=delivery.delivery_info if delivery else {},
        headers=message.headers,
    )


def run(job: Job, message: JobMessage, request: context.Request, hostname: str,
        started: bool = True) -> Outcome:
    """Call the job's function for ``request`` and record the outcome (``started``: in the
    row recorded when it started; else in a new one)."""
    signals.job_started.send(job, job_id=message.id, name=message.name, request=request)
    token = context.current.set(request)
    soft = message.soft_time_limit or job.option("soft_time_limit")
    began = time.perf_counter()
    try:
        with soft_time_limit(soft):
            value = job(*message.args, **message.kwargs)
    except Retry as retry:
        return _retried(job, message, request, retry, hostname, started=started)
    except Exception as exc:
        runtime = time.perf_counter() - began
        return _handle_error(job, message, request, exc, runtime, hostname, started)
    finally:
        context.current.reset(token)
    runtime = time.perf_counter() - began
    return _succeeded(job, message, request, value, runtime, hostname, started)


def _succeeded(job, message, request, value, runtime, hostname, started) -> Outcome:
    if not _ignores_result(job, message):
        try:
            recording.mark_succeeded(message, value, runtime, hostname, started)
        except (TypeError, ValueError, DataError, IntegrityError) as exc:  # NaN, NUL, bytes...
            error = TypeError(f"{message.name} returned a value that can't be stored: {exc}")
            return _failed(job, message, request, error, "", runtime, hostname, started)
    logger.info("Job %s[%s] succeeded in %.6fs", message.name, message.id, runtime,
                extra={"job_id": message.id})
    signals.job_succeeded.send(job, job_id=message.id, name=message.name, request=request,
                               result=value, runtime=runtime)
    return Outcome(Kind.SUCCEEDED, message.id, message.name, runtime=runtime)


def _handle_error(job, message, request, exc, runtime, hostname, started) -> Outcome:
    trace = tb.format_exc()
    if (job.autoretry_for and isinstance(exc, job.autoretry_for)
            and not isinstance(exc, job.dont_autoretry_for)):
        token = context.current.set(request)
        try:
            retry = job.retry(exc=exc, **_retry_options(job))
        except Exception as final:  # retries used up: the job fails with its exception
            return _failed(job, message, request, final, tb.format_exc(), runtime, hostname,
                           started)
        finally:
            context.current.reset(token)
        return _retried(job, message, request, retry, hostname, trace, started)
    return _failed(job, message, request, exc, trace, runtime, hostname, started)


def _retry_options(job: Job) -> dict:
    options = dict(job.retry_kwargs or {})
    options.pop("countdown", None)  # retry_delay() already honours it
    return options


def _retried(job, message, request, retry: Retry, hostname, trace: str = "",
             started: bool = True) -> Outcome:
    if not _ignores_result(job, message):
        recording.mark_retry(message, retry.exc, trace, hostname, started)
    logger.info("Job %s[%s] will retry: %s", message.name, message.id, retry,
                extra={"job_id": message.id})
    signals.job_retried.send(job, job_id=message.id, name=message.name, request=request,
                             exception=retry.exc, eta=retry.when)
    return Outcome(Kind.RETRIED, message.id, message.name, reason=str(retry))


def _failed(job, message, request, exc, trace, runtime, hostname, started=True) -> Outcome:
    if not _ignores_result(job, message):
        recording.mark_failed(message, exc, trace, runtime, hostname, started=started)
    logger.error("Job %s[%s] raised %s: %s", message.name, message.id, type(exc).__name__, exc,
                 extra={"job_id": message.id})
    signals.job_failed.send(job, job_id=message.id, name=message.name, request=request,
                            exception=exc, traceback=trace, runtime=runtime)
    return Outcome(Kind.FAILED, message.id, message.name, reason=f"{type(exc).__name__}: {exc}",
                   runtime=runtime)
