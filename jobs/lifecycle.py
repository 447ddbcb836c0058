"""A job's states: every write of a job's state goes through this module.

The rules, written once:

- A job's row belongs to its latest attempt: a late write of an attempt never overwrites
  the state written by a retry that followed it (``retries`` only grows).
- STARTED counts deliveries: the same attempt started again (its worker died) adds one to
  ``deliveries``; a retry starts counting afresh. The poison-job cap reads that count.
- A REVOKED job may not start: the STARTED write skips a REVOKED row and reports it.
- A revocation never overwrites a final state (SUCCESS, FAILURE, REVOKED), and a job that
  has started (STARTED, or a custom state such as PROGRESS) is only revoked when it is to
  be terminated; nor does a custom state (``update_state``) overwrite a final one.
- A message no worker can run becomes a dead letter, kept whole with the reason.

A job's two writes (STARTED, then its outcome) are the worker's per-job cost on the
database. They are written as one SQL statement each, built once from the model's fields,
with values prepared by those fields as the ORM prepares them: going through a QuerySet
(query building, model instances) took longer than the database took to run them. On
PostgreSQL each is a call of a function of migration 0011, sent through libpq with its
values as text (:func:`jobs.compat.django.call_function`): JSON encoded by the field's
encoder, as Django's backend encodes it.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from functools import cache

from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from jobs import signals
from jobs.compat.django import call_function, execute_bound, in_atomic_block
from jobs.messages import JobMessage
from jobs.models import READY_STATES, WAITING_STATES, DeadLetter, JobRecord, States
from jobs.results import exception_to_dict
from jobs.storable import storable

logger = logging.getLogger("jobs.worker")


def _attempt(message: JobMessage):
    """The row, unless a later attempt of the job (a retry) has written it already: an
    attempt's late write must not overwrite the state of the retry that followed it."""
    return JobRecord.objects.filter(job_id=message.id, retries__lte=message.retries)


def _upsert(message: JobMessage, fields: dict, started: bool = True) -> None:
    """Write ``fields`` to the job's row, unless a later attempt owns it. ``started``: the
    row is there (STARTED was recorded), so an UPDATE comes first; else, where the database
    has ``ON CONFLICT``, one statement inserts the row or updates the one there."""
    db = connections[router.db_for_write(JobRecord)]
    if not started and db.vendor in UPSERTING:
        _insert_or_update(message, fields, db)
    elif not _update(message, fields, db) and not _create(message, fields):
        # Written meanwhile, or owned by a later attempt (which the filter leaves alone).
        _attempt(message).update(**fields)


#: Databases with INSERT .. ON CONFLICT (job_id) DO UPDATE .. WHERE.
UPSERTING = ("postgresql", "sqlite")


def _update(message: JobMessage, fields: dict, db) -> int:
    """``_attempt(message).update(**fields)`` as one statement built once; rows updated."""
    names = tuple(fields)
    if names == OUTCOME and db.vendor == "postgresql":
        return call_function(db, RECORD_OUTCOME, [*_as_text(fields), message.id,
                                                  message.retries])
    sql = _update_sql(db.alias, names)
    return execute_bound(db, sql, [*_prepared(fields, db), message.id, message.retries]).rowcount


#: The fields of a final outcome (mark_succeeded, mark_failed), in the order they set them.
OUTCOME = ("state", "result", "traceback", "date_done", "runtime", "worker", "retries")
#: An outcome's UPDATE on PostgreSQL: the function of migration 0011 (planned once per
#: connection), with the UPDATE's parameters, typed (the server then has none to infer).
RECORD_OUTCOME = ("SELECT jobs_record_outcome(%s::text, %s::jsonb, %s::text, %s::timestamptz, "
                  "%s::double precision, %s::text, %s::integer, %s::text, %s::integer)")


def _prepared(fields: dict, db) -> list:
    """The values as the database takes them, as the fields would save them. A string for a
    text column, a number for a numeric one, or None, is already what Django would send:
    only the others (dates, JSON) go through the field, which halves the cost."""
    plain = _plain_types()
    return [value if value is None or value.__class__ is plain.get(name)
            else JobRecord._meta.get_field(name).get_db_prep_save(value, db)
            for name, value in fields.items()]


@cache
def _plain_types() -> dict[str, type]:
    """Field name -> the type whose values that field saves unchanged."""
    kinds = {models.CharField: str, models.TextField: str, models.IntegerField: int,
             models.FloatField: float}
    return {f.name: kind for f in JobRecord._meta.concrete_fields
            for field_class, kind in kinds.items() if isinstance(f, field_class)}


def _as_text(fields: dict) -> list:
    """The values for :func:`call_function`: JSON as its text, encoded by the field's
    encoder as Django's PostgreSQL backend encodes it; the others as they are."""
    encoders = _json_encoders()
    return [value if value is None or name not in encoders
            else json.dumps(value, cls=encoders[name])
            for name, value in fields.items()]


@cache
def _json_encoders() -> dict:
    """JSON field name -> its encoder."""
    return {f.name: f.encoder for f in JobRecord._meta.concrete_fields
            if isinstance(f, models.JSONField)}


@cache
def _update_sql(alias: str, names: tuple[str, ...]) -> str:
    quote = connections[alias].ops.quote_name
    column = _columns(quote)
    assignments = ", ".join(f"{column[name]} = %s" for name in names)
    return (f"UPDATE {quote(JobRecord._meta.db_table)} SET {assignments} "
            f"WHERE {column['job_id']} = %s AND {column['retries']} <= %s")


def _columns(quote) -> dict[str, str]:
    return {f.name: quote(f.column) for f in JobRecord._meta.concrete_fields}


def _create(message: JobMessage, fields: dict) -> bool:
    """Insert the job's row in one statement; False if it exists already."""
    # Inside the caller's transaction, a savepoint: a failed insert must not spoil it.
    db = router.db_for_write(JobRecord)
    savepoint = transaction.atomic(using=db) if in_atomic_block(connections[db]) else nullcontext()
    try:
        with savepoint:
            JobRecord.objects.create(job_id=message.id, **_identity(message), **_created(fields),
                               **fields)
    except IntegrityError:
        return False
    return True


def _insert_or_update(message: JobMessage, fields: dict, db) -> None:
    row = {"job_id": message.id, **_identity(message), **_created(fields), **fields}
    row.update((f.name, f.get_default()) for f in _other_fields(tuple(row)))  # the defaults
    execute_bound(db, _insert_or_update_sql(db.alias, tuple(row), tuple(fields)),
                  [*_prepared(row, db), message.retries])


@cache
def _other_fields(names: tuple[str, ...]) -> list:
    return [f for f in JobRecord._meta.concrete_fields if not f.primary_key and f.name not in names]


@cache
def _insert_or_update_sql(alias: str, names: tuple[str, ...], updated: tuple[str, ...]) -> str:
    """Insert the row; if the job has one, update ``updated`` in it, as
    ``_attempt(message).update()`` would: not where a later attempt wrote."""
    quote = connections[alias].ops.quote_name
    table, column = quote(JobRecord._meta.db_table), _columns(quote)
    return (
        _insert_or_sql(table, column, names)
        + ", ".join(f"{column[n]} = excluded.{column[n]}" for n in updated)
        + f" WHERE {table}.{column['retries']} <= %s"
    )


def _insert_or_sql(table: str, column: dict[str, str], names: tuple[str, ...]) -> str:
    """``INSERT`` of a row with ``names``, up to the ``SET`` of its ``ON CONFLICT`` update."""
    return (f"INSERT INTO {table} ({', '.join(column[n] for n in names)}) "
            f"VALUES ({', '.join(['%s'] * len(names))}) "
            f"ON CONFLICT ({column['job_id']}) DO UPDATE SET ")


def _created(fields: dict) -> dict:
    """A row first written when the job started, or with its outcome, was created then."""
    return {"date_created": fields.get("date_started") or fields.get("date_done") or timezone.now()}


def _identity(message: JobMessage) -> dict:
    return {
        "name": message.name,
        "args": storable(message.args),
        "kwargs": storable(message.kwargs),
        "queue": message.queue,
        "parent_id": message.parent_id or "",
        "root_id": message.root_id or message.id,
        "group_id": message.group_id or "",
    }


def mark_enqueued(message: JobMessage, at=None) -> None:
    """A PENDING row for a job just sent, for a handle that must find the job before a
    worker starts it (a Django task's ``get_result``); written in the caller's transaction,
    so a rollback takes it with the job. Left alone if the job has a row already."""
    JobRecord.objects.bulk_create([JobRecord(
        job_id=message.id, state=States.PENDING, retries=message.retries,
        date_created=at or timezone.now(), **_identity(message),
    )], ignore_conflicts=True)


def forget_enqueued(message: JobMessage) -> None:
    """Remove the row of :func:`mark_enqueued` when the job could not be sent after all."""
    JobRecord.objects.filter(job_id=message.id, state=States.PENDING).delete()


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
    db = connections[router.db_for_write(JobRecord)]
    if db.vendor in UPSERTING:
        return _start(message, fields, db)
    if _create(message, {"deliveries": 1, **fields}):
        return 1
    # Started before: a redelivery (count it), a retry (count afresh), or revoked.
    again = Case(When(retries=message.retries, then=F("deliveries") + 1), default=Value(1))
    attempt = _attempt(message).exclude(state=States.REVOKED)
    if not attempt.update(deliveries=again, **fields):
        return None
    return attempt.values_list("deliveries", flat=True).first() or 1


def _start(message: JobMessage, fields: dict, db) -> int | None:
    """mark_started as one INSERT .. ON CONFLICT DO UPDATE (PostgreSQL, SQLite); on
    PostgreSQL in the function of migration 0011 (planned once per connection)."""
    if db.vendor == "postgresql":
        identity = _identity(message)
        args, kwargs = _as_text({"args": identity["args"], "kwargs": identity["kwargs"]})
        return call_function(db, RECORD_START, [
            message.id, identity["name"], args, kwargs, identity["queue"],
            identity["parent_id"], identity["root_id"], identity["group_id"],
            fields["worker"], fields["date_started"], fields["retries"]])
    row = {"job_id": message.id, **_identity(message), **fields, "deliveries": 1,
           "date_created": fields["date_started"], "result": None, "traceback": "",
           "meta": None, "runtime": None}
    found = execute_bound(db, _start_sql(db.alias, tuple(row)), _prepared(row, db)).rows
    return found[0][0] if found else None


RECORD_START = ("SELECT jobs_record_start(%s::text, %s::text, %s::jsonb, %s::jsonb, %s::text, "
                "%s::text, %s::text, %s::text, %s::text, %s::timestamptz, %s::integer)")


@cache
def _start_sql(alias: str, names: tuple[str, ...]) -> str:
    """Insert the STARTED row; if the job has one: count a redelivery of the same attempt
    (or start afresh for a retry), unless it was revoked or a later attempt owns it."""
    quote = connections[alias].ops.quote_name
    table, column = quote(JobRecord._meta.db_table), _columns(quote)
    retries, deliveries = column["retries"], column["deliveries"]
    updated = ["state", "worker", "date_started", "retries", "date_done"]
    return (
        _insert_or_sql(table, column, names)
        + f"{deliveries} = CASE WHEN {table}.{retries} = excluded.{retries} "
        f"THEN {table}.{deliveries} + 1 ELSE 1 END, "
        + ", ".join(f"{column[n]} = excluded.{column[n]}" for n in updated)
        + f" WHERE {table}.{retries} <= excluded.{retries} "
        f"AND {table}.{column['state']} <> '{States.REVOKED}' "
        f"RETURNING {deliveries}"
    )


# ``started``: whether mark_started wrote the row (see _upsert).

def mark_succeeded(message: JobMessage, value, runtime: float, hostname: str,
                   started: bool = True) -> None:
    _upsert(message, {"state": States.SUCCESS, "result": value, "traceback": "",
                      "date_done": timezone.now(), "runtime": runtime, "worker": hostname,
                      "retries": message.retries}, started)


def mark_failed(message: JobMessage, exc: BaseException, traceback: str, runtime: float | None,
                hostname: str, state: str = States.FAILURE, started: bool = True) -> None:
    _upsert(message, {"state": state, "result": storable(exception_to_dict(exc)),
                      "traceback": storable(traceback),
                      "date_done": timezone.now(), "runtime": runtime, "worker": hostname,
                      "retries": message.retries}, started)


def mark_retry(message: JobMessage, exc: BaseException | None, traceback: str,
               hostname: str, started: bool = True) -> None:
    _upsert(message, {"state": States.RETRY,
                      "result": storable(exception_to_dict(exc)) if exc else None,
                      "traceback": storable(traceback), "worker": hostname,
                      "retries": message.retries}, started)


def mark_revoked(message: JobMessage, reason: str, hostname: str = "") -> None:
    _upsert(message, {"state": States.REVOKED, "date_done": timezone.now(), "worker": hostname,
                      "result": _revoked_result(reason)})


def counts_starts(job, ignore_result: bool) -> bool:
    """Whether the job's row counts its starts (its STARTED write, which also refuses a
    revoked job): STARTED is tracked and the result kept."""
    return bool(job.option("track_started")) and not (ignore_result or job.option("ignore_result"))


def revoke_request(job_id: str, name: str = "", terminate: bool = False,
                   reason: str = "revoked") -> bool:
    """Record that ``job_id`` must not run (a worker that receives it records REVOKED
    instead); with ``terminate``, a running one is revoked too, and its worker kills it.
    Returns whether the row now says REVOKED because of this call."""
    now = timezone.now()
    revoked = _revoked_result("terminated" if terminate else reason)
    rows = _revocable(JobRecord.objects.filter(job_id=job_id), terminate)
    runs = 0
    if terminate:  # a broadcast job's running copies, one per worker (they have started)
        runs = _revocable(_broadcast_runs(job_id), terminate).update(
            state=States.REVOKED, result=revoked, date_done=now)
    if rows.update(state=States.REVOKED, result=revoked, date_done=now):
        return True
    _, created = JobRecord.objects.get_or_create(job_id=job_id, defaults={
        "name": name, "state": States.REVOKED, "result": revoked, "date_done": now})
    return created or bool(runs)


def _broadcast_runs(job_id: str):
    """The rows of each worker's run of broadcast job ``job_id`` (jobs.middleware.broadcast)."""
    return JobRecord.objects.filter(parent_id=job_id, job_id__startswith=f"{job_id}@")


def _revocable(rows, terminate: bool):
    """The rows a revocation may write REVOKED to: a running job (STARTED, or in a custom
    state such as PROGRESS) goes on unless it is to be terminated; its row must not say
    REVOKED, which the worker would kill it for."""
    return rows.exclude(state__in=READY_STATES) if terminate else \
        rows.filter(state__in=WAITING_STATES)


def mark_progress(job_id: str, name: str, state: str, meta: dict | None) -> bool:
    """A custom state of a running job (``update_state``: PROGRESS, ...) with its ``meta``;
    never written over a final state. Returns whether it was written."""
    rows = JobRecord.objects.filter(job_id=job_id).exclude(state__in=READY_STATES)
    if rows.update(state=state, meta=meta):
        return True
    _, created = JobRecord.objects.get_or_create(
        job_id=job_id, defaults={"name": name, "state": state, "meta": meta})
    return created


def _revoked_result(reason: str) -> dict:
    return {"exc_type": "JobRevoked", "exc_module": "jobs.exceptions", "exc_message": [reason]}


# Dead letters ----------------------------------------------------------------------------------

_HEADER_LIMIT = 64 * 1024


def dead_letter(delivery, reason: str, hostname: str = "") -> DeadLetter:
    """Keep ``delivery`` (a :class:`jobs.execution.Delivery`), a message no worker can run,
    whole as a dead letter with ``reason``: nothing is lost, and it can be requeued."""
    headers = delivery.headers if isinstance(delivery.headers, dict) else {}
    name, job_id = _text(headers.get("task"), 255), _text(headers.get("id"), 255)
    body = delivery.body if isinstance(delivery.body, bytes) else \
        str(delivery.body).encode("utf-8", "surrogatepass")
    reason = _text(reason, None)
    letter = DeadLetter.objects.create(
        queue=delivery.queue or "",
        job_id=job_id,
        job_name=name,
        reason=reason,
        content_type=_text(delivery.content_type, 100),
        content_encoding=_text(delivery.content_encoding, 50),
        headers=_jsonable(headers),
        properties=_jsonable(delivery.properties),
        body=body,
        worker=hostname,
    )
    logger.warning("Dead-lettered message %s (%s) from queue %r: %s", job_id or "?",
                   name or "no job name", delivery.queue, reason, extra={"job_id": job_id})
    signals.send(signals.job_dead_lettered, name or None, job_id=job_id, name=name,
                 reason=reason, queue=delivery.queue)
    return letter


def _text(value, limit: int | None) -> str:
    """A string column's value from whatever a producer sent (PostgreSQL refuses NUL)."""
    return storable(value)[:limit] if isinstance(value, str) else ""


def _jsonable(value):
    """Headers as a JSON column can hold them: anything exotic becomes its repr."""
    import json

    try:
        text = json.dumps(storable(value), default=repr, allow_nan=False)
    except (TypeError, ValueError):
        return {"repr": repr(value)[:_HEADER_LIMIT]}
    if len(text) > _HEADER_LIMIT:
        return {"truncated": text[:_HEADER_LIMIT]}
    return json.loads(text)
