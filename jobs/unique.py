"""Unique jobs: ``@job(unique=True)`` sends a call only if the same call isn't queued or running.

A lock row (:class:`jobs.models.UniqueLock`) is taken when the call is enqueued, in the
caller's transaction, and released when the job reaches a final state (SUCCESS, FAILURE,
REVOKED). A second call with the same key while the lock is held is not sent: it gets the
handle of the first. The lock expires ``unique_for`` seconds (default: an hour) after the job
is due, so a job whose worker died and whose message was lost can't hold it forever; a retry
moves the expiry along with the retry's eta.

The key is the job's name and its arguments (bound to the signature, so ``add(1, 2)`` and
``add(x=1, y=2)`` are the same call), or whatever ``unique_key(*args, **kwargs)`` returns.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from kombu.utils.json import dumps

#: Seconds a lock lasts after its job is due, unless the job says ``unique_for``.
DEFAULT_TIMEOUT = 3600


def lock_key(job, args: tuple, kwargs: dict) -> str:
    """The SHA-256 (hex) naming one call of ``job`` for uniqueness."""
    if job.unique_key is not None:
        value = job.unique_key(*args, **kwargs)
    else:
        value = _bound_arguments(job, args, kwargs)
    try:
        text = dumps([job.name, value], sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise TypeError(f"{job.name}: the unique key {value!r} can't be serialized: {exc}") \
            from None
    return hashlib.sha256(text.encode()).hexdigest()


def _bound_arguments(job, args: tuple, kwargs: dict):
    try:
        bound = job.call_signature.bind(*((job,) if job.bind else ()), *args, **kwargs)
    except TypeError:  # typing=False and arguments that don't fit: take them as they are
        return [list(args), kwargs]
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    if job.bind:
        arguments.pop(next(iter(job.call_signature.parameters)), None)
    return arguments


def expiry(job, message, now: datetime) -> datetime:
    due = max(message.eta, now) if message.eta is not None else now
    return due + timedelta(seconds=job.unique_for or DEFAULT_TIMEOUT)


def acquire(job, message):
    """Take the lock for ``message``; returns None if taken, else the JobResult of the job
    that holds it."""
    from jobs.models import UniqueLock
    from jobs.results import JobResult

    key = lock_key(job, message.args, message.kwargs)
    for _ in range(3):
        now = timezone.now()
        expires = expiry(job, message, now)
        try:
            with transaction.atomic():
                UniqueLock.objects.create(key=key, name=job.name, job_id=message.id,
                                          expires_at=expires, created_at=now)
            return None
        except IntegrityError:
            pass
        # Held, or left behind by a job that never ended: take it over if it has expired.
        if UniqueLock.objects.expired(now).filter(key=key).update(
                job_id=message.id, expires_at=expires, created_at=now):
            return None
        holder = UniqueLock.objects.filter(key=key).values_list("job_id", flat=True).first()
        if holder is not None:
            return JobResult(holder, name=job.name)
        # Released between our insert and our read: try again.
    raise RuntimeError(f"{job.name}: could not take or read its unique lock {key}")


def release(job_id: str) -> int:
    """Free the lock held by ``job_id`` (if any); returns how many were freed."""
    from jobs.models import UniqueLock

    deleted, _ = UniqueLock.objects.filter(job_id=job_id).delete()
    return deleted


def extend(job, job_id: str, eta) -> int:
    """A retry is the same job, still to run: keep its lock until after the retry is due."""
    from jobs.models import UniqueLock

    due = max(eta or timezone.now(), timezone.now())
    return UniqueLock.objects.filter(job_id=job_id).update(
        expires_at=due + timedelta(seconds=job.unique_for or DEFAULT_TIMEOUT))
