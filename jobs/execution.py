"""Running one delivered job: decode it, pass it through the middleware, call the function.

decode -> look up the job -> the ``execute`` hooks of the middleware, outermost first ->
call the function -> an explicit :class:`Outcome`. What the middleware add (recording the
state, expiry, revocations, retries, time limits, ...) lives in :mod:`jobs.middleware`; this
module knows none of it. It runs wherever the pool runs jobs: a prefork child, a thread, or
the worker process itself.
"""

from __future__ import annotations

import time
import traceback as tb
from dataclasses import dataclass, field

from jobs import context, coroutines, lifecycle
from jobs.compression import decompress
from jobs.conf import settings
from jobs.exceptions import InvalidMessage, NotRegistered, Retry
from jobs.job import Job
from jobs.messages import JobMessage, decode
from jobs.middleware import Stack, stack
from jobs.outcome import Kind, Outcome
from jobs.registry import registry


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
    revoked: bool = False  # the worker knows the job was revoked (jobs.middleware.revocation)
    time_limit: float | None = None  # seconds after which the pool kills the job, if it can


@dataclass(slots=True)
class Execution:
    """One run of one message, in the process that runs it. Middleware read it and note
    what they learn on it (``starts``, ``started``)."""

    message: JobMessage
    job: Job
    hostname: str
    delivery: Delivery | None = None
    request: context.Request | None = None
    starts: int = 1  # times this attempt has been started, this one included
    started: bool = False  # the job's row holds STARTED (written by the results middleware)
    middleware: Stack | None = None  # those that apply to the job (set by run())

    @property
    def ignores_result(self) -> bool:
        return self.message.ignore_result or bool(self.job.option("ignore_result"))

    def outcome(self, kind: Kind, reason: str = "", **fields) -> Outcome:
        return Outcome(kind, self.message.id, self.message.name, reason, **fields)


def execute(delivery: Delivery, hostname: str, accept: set[str]) -> Outcome:
    """Run the job ``delivery`` names, through the middleware; returns what became of it."""
    try:
        message = decode(delivery.headers, body_of(delivery), delivery.content_type,
                         delivery.content_encoding, accept, delivery.queue)
        job = registry.get(message.name)
    except (InvalidMessage, NotRegistered) as exc:
        lifecycle.dead_letter(delivery, str(exc), hostname)
        return Outcome(Kind.REJECTED, delivery.headers.get("id") or "", reason=str(exc))
    return run(Execution(message, job, hostname, delivery))


def run(execution: Execution) -> Outcome:
    """Pass ``execution`` through the middleware to the job's function; then tell the
    observers how it ended."""
    middleware = execution.middleware = stack().for_job(execution.job)
    outcome = middleware.execute(call)(execution)
    middleware.notify("finished", execution, outcome)
    return outcome


def call(execution: Execution) -> Outcome:
    """The innermost step: call the job's function with the message's arguments."""
    message, job = execution.message, execution.job
    request = execution.request = request_for(execution)
    execution.middleware.notify("started", execution)
    token = context.current.set(request)
    began = time.perf_counter()
    try:
        value = job(*message.args, **message.kwargs)
        if job.is_async:
            value = coroutines.run(value)
    except Retry as retry:
        return execution.outcome(Kind.RETRIED, str(retry), exception=retry.exc, eta=retry.when,
                                 runtime=time.perf_counter() - began)
    except Exception as exc:
        return execution.outcome(Kind.FAILED, f"{type(exc).__name__}: {exc}", exception=exc,
                                 traceback=tb.format_exc(), runtime=time.perf_counter() - began)
    finally:
        context.current.reset(token)
    return execution.outcome(Kind.SUCCEEDED, value=value, runtime=time.perf_counter() - began)


def request_for(execution: Execution) -> context.Request:
    message, delivery = execution.message, execution.delivery
    return context.Request(
        id=message.id, name=message.name, args=message.args, kwargs=message.kwargs,
        retries=message.retries, queue=message.queue, eta=message.eta, expires=message.expires,
        root_id=message.root_id or message.id, parent_id=message.parent_id,
        group_id=message.group_id, hostname=execution.hostname, is_eager=delivery is None,
        delivery_info=delivery.delivery_info if delivery else {},
        headers=message.headers, group_index=message.group_index, embed=message.embed,
    )


def body_of(delivery: Delivery) -> bytes:
    """The serialized body of ``delivery``, decompressed."""
    compression = delivery.headers.get("compression")
    if not compression:
        return delivery.body
    return decompress(delivery.body, compression, settings.TASK_MAX_MESSAGE_SIZE)
