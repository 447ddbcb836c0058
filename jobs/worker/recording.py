"""Writing job states to the ``JobResult`` table, one short statement each."""

from __future__ import annotations

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
    if _attempt(message).update(**fields):
        return
    if Row.objects.filter(job_id=message.id).exists():
        return  # a later attempt owns the row
    try:
        with transaction.atomic():
            Row.objects.create(job_id=message.id, **_identity(message), **fields)
    except IntegrityError:  # written by someone else meanwhile
        _attempt(message).update(**fields)


def _identity(message: JobMessage) -> dict:
    return {
        "name": message.name,
        "args": storable(message.args),
        "kwargs": storable(message.kwargs),
        "queue": message.queue,
        "parent_id": message.parent_id or "",
        "root_id": message.root_id or message.id,
    }


def mark_started(message: JobMessage, hostname: str, track: bool) -> int | None:
    """Record that the job runs now; returns how many times this attempt has been started
    (more than once: a worker died running it), or None if it was revoked: don't run it."""
    now = timezone.now()
    fields = {"state": States.STARTED, "worker": hostname, "date_started": now,
              "retries": message.retries, "date_done": None}
    if not track:
        revoked = Row.objects.filter(job_id=message.id, state=States.REVOKED).exists()
        return None if revoked else 1
    try:
        with transaction.atomic():
            _commit_without_waiting_for_disk()
            Row.objects.create(job_id=message.id, deliveries=1, **_identity(message), **fields)
        return 1
    except IntegrityError:
        pass
    # Started before: a redelivery (count it), a retry (count afresh), or revoked.
    again = Case(When(retries=message.retries, then=F("deliveries") + 1), default=Value(1))
    attempt = _attempt(message).exclude(state=States.REVOKED)
    if not attempt.update(deliveries=again, **fields):
        return None
    return attempt.values_list("deliveries", flat=True).first() or 1


def _commit_without_waiting_for_disk() -> None:
    """Let this transaction's commit return before its WAL reaches the disk (PostgreSQL).

    Only for the STARTED mark: if the database crashes within the next moments the mark may
    be lost, which costs nothing (the job's message is still unacknowledged), while waiting
    for the flush would double the database time of a short job. Final states, after which
    the message is acknowledged, are committed durably.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


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
