"""Writing job states to the ``JobResult`` table, one short statement each."""

from __future__ import annotations

from contextlib import nullcontext

from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from jobs.messages import JobMessage
from jobs.models import JobResult as Row, States
from jobs.results import exception_to_dict
from jobs.worker.storable import storable


def _attempt(message: JobMessage):
    """The row, unless a later attempt of the job (a retry) has written it already: an
    attempt's late write must not overwrite the state of the retry that followed it."""
    return Row.objects.filter(job_id=message.id, retries__lte=message.retries)


def _upsert(message: JobMessage, fields: dict) -> None:
    if not _attempt(message).update(**fields) and not _create(message, fields):
        # Written meanwhile, or owned by a later attempt (which the filter leaves alone).
        _attempt(message).update(**fields)


def _create(message: JobMessage, fields: dict) -> bool:
    """Insert the job's row in one statement; False if it exists already."""
    # Inside the caller's transaction, a savepoint: a failed insert must not spoil it.
    savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with savepoint:
            Row.objects.create(job_id=message.id, **_identity(message), **fields)
    except IntegrityError:
        return False
    return True


def _identity(message: JobMessage) -> dict:
    return {
        "name": message.name,
        "args": storable(message.args),
        "kwargs": storable(message.kwargs),
        "queue": message.queue,
        "parent_id": message.parent_id or "",
        "root_id": message.root_id or message.id,
    }


def mark_started(message: JobMessage, hostname: str, track: bool,
                 revoked: bool = False) -> int | None:
    """Record that the job runs now; returns how many times this attempt has been started
    (more than once: a worker died running it), or None if it was revoked: don't run it.

    Untracked, nothing is written: ``revoked`` is what the worker knows (its revocations).
    On PostgreSQL a trigger commits this mark without waiting for the disk (migration 0002).
    """
    if not track:
        return None if revoked else 1
    now = timezone.now()
    fields = {"state": States.STARTED, "worker": hostname, "date_started": now,
              "retries": message.retries, "date_done": None}
    if _create(message, {"deliveries": 1, **fields}):
        return 1
    # Started before: a redelivery (count it), a retry (count afresh), or revoked.
    again = Case(When(retries=message.retries, then=F("deliveries") + 1), default=Value(1))
    attempt = _attempt(message).exclude(state=States.REVOKED)
    if not attempt.update(deliveries=again, **fields):
        return None
    return attempt.values_list("deliveries", flat=True).first() or 1


def mark_succeeded(message: JobMessage, value, runtime: float, hostname: str) -> None:
    _upsert(message, {"state": States.SUCCESS, "result": value, "traceback": "",
                      "date_done": timezone.now(), "runtime": runtime, "worker": hostname,
                      "retries": message.retries})


def mark_failed(message: JobMessage, exc: BaseException, traceback: str, runtime: float | None,
                hostname: str, state: str = States.FAILURE) -> None:
    _upsert(message, {"state": state, "result": storable(exception_to_dict(exc)),
                      "traceback": storable(traceback),
                      "date_done": timezone.now(), "runtime": runtime, "worker": hostname,
                      "retries": message.retries})


def mark_retry(message: JobMessage, exc: BaseException | None, traceback: str,
               hostname: str) -> None:
    _upsert(message, {"state": States.RETRY,
                      "result": storable(exception_to_dict(exc)) if exc else None,
                      "traceback": storable(traceback), "worker": hostname,
                      "retries": message.retries})


def mark_revoked(message: JobMessage, reason: str, hostname: str = "") -> None:
    _upsert(message, {"state": States.REVOKED, "date_done": timezone.now(), "worker": hostname,
                      "result": {"exc_type": "JobRevoked", "exc_module": "jobs.exceptions",
                                 "exc_message": [reason]}})
