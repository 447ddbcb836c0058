"""Sending a job by name, whether or not this process has its code.

The scheduler prepares a run's message first (arguments checked and serialized, which can
fail), then records the run, then publishes. A job registered here is prepared with its own
options (queue, serializer, compression, argument check), exactly as ``apply_async`` does;
one that isn't (a scheduler deployed without the job's code) goes out as a plain message
for the workers that have it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from jobs import broker, signals
from jobs.conf import settings
from jobs.job import Job
from jobs.messages import Envelope, JobMessage, encode
from jobs.options import priority_problem, queue_problem
from jobs.registry import registry


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message ready to publish, and how."""

    envelope: Envelope
    compression: str | None
    sender: Any  # the Job, or its name when it isn't registered here

    @property
    def job_id(self) -> str:
        return self.envelope.message.id


def prepare(name: str, args=(), kwargs=None, *, job_id: str | None = None,
            queue: str | None = None, priority: int | None = None,
            expires: float | datetime | None = None, headers: dict | None = None) -> Prepared:
    """Build and serialize a call of job ``name``; raise TypeError/EncodeError if it can't be
    sent (wrong arguments for the job, values the serializer can't carry)."""
    args, kwargs = tuple(args or ()), dict(kwargs or {})
    options: dict[str, Any] = {"task_id": job_id or str(uuid.uuid4()), "headers": headers or {}}
    if queue:
        options["queue"] = queue
    if priority is not None:
        options["priority"] = priority
    if expires is not None:
        options["expires"] = expires
    if name in registry:
        job = registry.get(name)
        return Prepared(job.prepare(args, kwargs, **options), job.compression, job)
    message = _plain_message(name, args, kwargs, options)
    envelope = encode(message, settings.TASK_SERIALIZER, None, settings.TASK_MAX_MESSAGE_SIZE)
    return Prepared(envelope, None, name)


def publish(prepared: Prepared, *, on_commit: bool = False) -> None:
    """Send a prepared message (raises PublishError when the broker can't be reached)."""
    if isinstance(prepared.sender, Job):
        prepared.sender.publish(prepared.envelope, on_commit=on_commit)
        return
    broker.publish(prepared.envelope, on_commit=on_commit, compression=prepared.compression)
    message = prepared.envelope.message
    signals.send(signals.job_enqueued, prepared.sender, job_id=message.id, name=message.name,
                 message=message)


def send_job(name: str, args=(), kwargs=None, **options):
    """Send job ``name`` now, registered here or not; returns its :class:`jobs.JobResult`.

    Options: ``job_id``, ``queue``, ``priority``, ``expires`` (seconds or an aware datetime),
    ``headers``.
    """
    from jobs.results import JobResult

    prepared = prepare(name, args, kwargs, **options)
    publish(prepared)
    return JobResult(prepared.job_id, name=name)


def _plain_message(name: str, args: tuple, kwargs: dict, options: dict) -> JobMessage:
    queue = options.get("queue") or broker.route(name)
    problem = queue_problem(queue) or priority_problem(options.get("priority"))
    if problem:
        raise ValueError(f"{name}: {problem}")
    expires = options.get("expires")
    if isinstance(expires, (int, float)):
        expires = timezone.now() + timedelta(seconds=expires)
    return JobMessage(
        id=options["task_id"],
        name=name,
        args=args,
        kwargs=kwargs,
        queue=queue,
        expires=expires,
        priority=options.get("priority"),
        headers=options["headers"],
    )
