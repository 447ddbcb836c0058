"""Sending a job by name, whether or not this process has its code.

The scheduler prepares a run's message first (arguments checked and serialized, which can
fail), then records the run, then publishes. A job registered here is prepared with its own
options (queue, serializer, compression, argument check), exactly as ``apply_async`` does;
one that isn't (a scheduler deployed without the job's code) goes out through a stand-in with
the default options, for the workers that have it. Both take the one enqueue path
(``Job.prepare`` and ``Job.publish``, through the middleware).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.job import Job
from jobs.messages import Envelope
from jobs.registry import registry


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message ready to publish, and the job it calls (a stand-in when this process doesn't
    have the job's code: :meth:`jobs.registry.Registry.by_name`)."""

    envelope: Envelope
    job: Job

    @property
    def job_id(self) -> str:
        return self.envelope.message.id


def prepare(name: str, args=(), kwargs=None, *, job_id: str | None = None,
            queue: str | None = None, priority: int | None = None,
            expires: float | datetime | None = None, headers: dict | None = None) -> Prepared:
    """Build and serialize a call of job ``name``; raise TypeError/EncodeError if it can't be
    sent (wrong arguments for the job, values the serializer can't carry)."""
    options: dict[str, Any] = {"task_id": job_id or str(uuid.uuid4()), "headers": headers or {}}
    if queue:
        options["queue"] = queue
    if priority is not None:
        options["priority"] = priority
    if expires is not None:
        options["expires"] = expires
    job = registry.by_name(name)
    return Prepared(job.prepare(args, kwargs, **options), job)


def publish(prepared: Prepared, *, on_commit: bool = False) -> None:
    """Send a prepared message (raises PublishError when the broker can't be reached)."""
    prepared.job.publish(prepared.envelope, on_commit=on_commit)


def send_job(name: str, args=(), kwargs=None, **options):
    """Send job ``name`` now, registered here or not; returns its :class:`jobs.JobResult`.

    Options: ``job_id``, ``queue``, ``priority``, ``expires`` (seconds or an aware datetime),
    ``headers``.
    """
    from jobs.results import JobResult

    prepared = prepare(name, args, kwargs, **options)
    publish(prepared)
    return JobResult(prepared.job_id, name=name)
