"""``JobResult``: a handle on a job's state and outcome, usable from any process."""

from __future__ import annotations

import builtins
import functools
import hashlib
import json
import time
import weakref
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.core.signals import request_finished
from django.db import DatabaseError, connections, router
from django.utils import timezone

from jobs import context, exceptions
from jobs.changes import Changes, watchable
from jobs.compat.django import add_execute_wrapper, in_atomic_block, initialized_connections
from jobs.models import EXCEPTION_STATES, READY_STATES, JobRecord, States
from jobs.waiting import readable_within


class JobResult:
    """Look up a job by id: ``JobResult(job_id).get(timeout=10)``.

    Reads the :class:`jobs.models.JobRecord` row; a job no worker has picked up yet is PENDING.
    """

    def __init__(self, id: str, name: str | None = None) -> None:
        self.id = str(id)
        self.name = name
        self._row: JobRecord | None = None
        self._parent = None

    def __repr__(self) -> str:
        return f"<JobResult {self.id} [{self.state}]>"

    @property
    def task_id(self) -> str:
        """The job's id (Celery's name for it)."""
        return self.id

    def __eq__(self, other) -> bool:
        return isinstance(other, JobResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # Reading the row -------------------------------------------------------------------------

    def _fetch(self) -> JobRecord | None:
        if self._row is not None and self._row.state in READY_STATES:
            return self._row  # a finished job doesn't change again
        # No ORDER BY (the model's default ordering): the id is unique.
        self._row = next(iter(JobRecord.objects.filter(job_id=self.id).order_by()[:1]), None)
        return self._row

    @property
    def state(self) -> str:
        row = self._fetch()
        return row.state if row else States.PENDING

    status = state

    def ready(self) -> bool:
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state == States.SUCCESS

    def failed(self) -> bool:
        return self.state == States.FAILURE

    @property
    def result(self) -> Any:
        """The return value, the exception for a failed job, or the meta of a custom state."""
        row = self._fetch()
        if row is None:
            return None
        if row.state in EXCEPTION_STATES:
            return rebuild_exception(row.result)
        if row.state == States.SUCCESS:
            return row.result
        return row.meta

    info = result

    @property
    def traceback(self) -> str | None:
        row = self._fetch()
        return (row.traceback or None) if row else None

    @property
    def date_done(self) -> datetime | None:
        row = self._fetch()
        return row.date_done if row else None

    @property
    def retries(self) -> int:
        row = self._fetch()
        return row.retries if row else 0

    # The workflow around it ------------------------------------------------------------------

    @property
    def parent(self):
        """The job (or group) this one came after: set by a chain or chord that was just
        sent, else read from the row (the job that sent this one)."""
        if self._parent is not None:
            return self._parent
        row = self._fetch()
        return JobResult(row.parent_id) if row is not None and row.parent_id else None

    @parent.setter
    def parent(self, value) -> None:
        self._parent = value

    @property
    def children(self) -> list[JobResult]:
        """The jobs this one sent while it ran, or that a workflow sent after it (the next
        step of a chain, its callbacks), oldest first, as far as a worker has started them."""
        ids = (JobRecord.objects.filter(parent_id=self.id).exclude(job_id=self.id)
               .order_by("date_created").values_list("job_id", flat=True))
        return [JobResult(job_id) for job_id in ids]

    # Waiting -------------------------------------------------------------------------------

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, disable_sync_subtasks: bool = True) -> Any:
        """Wait until the job is done and return its value.

        Raises the job's exception when it failed (``propagate=False`` returns it instead),
        and :class:`jobs.exceptions.TimeoutError` after ``timeout`` seconds. Called inside a
        running job it raises RuntimeError, as in Celery (a job waiting for another can hold
        the worker that would run it), unless ``disable_sync_subtasks=False``. On PostgreSQL
        the database notifies the waiting caller the moment the job's final state is
        committed (LISTEN/NOTIFY), and the row is read again every ``interval`` seconds all
        the same. On SQLite the row is read again when another connection has committed
        (checked every fraction of a millisecond at first, less often the longer the job
        takes: see :func:`_wait_for_commit`), and every ``interval`` seconds. Elsewhere it
        polls (one indexed read), starting at a millisecond and backing off by half each time
        up to ``interval`` seconds between reads.
        """
        if disable_sync_subtasks:
            _refuse_inside_a_job()
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._row is not None and self._row.state in READY_STATES:
            return self._outcome(self._row.state, self._row.result, propagate)
        with _notifications(self.id) as (wait_for, state):  # listening before the first
            # read of the state (which may come with it), so that no notification is missed
            pause = interval if wait_for else min(0.001, interval)
            while True:
                if state is UNREAD:
                    state = _state_of(self.id)  # one column: the row costs ten times more
                if state in READY_STATES:
                    found = _outcome_of(self.id)
                    if found is not None and found[0] in READY_STATES:
                        return self._outcome(*found, propagate)
                if deadline is not None and time.monotonic() >= deadline:
                    raise exceptions.TimeoutError(
                        f"job {self.id} is still {state or States.PENDING} after {timeout}s"
                    )
                wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
                if not wait_for:
                    time.sleep(wait)
                    pause = min(pause * 1.5, interval)
                    state = UNREAD
                    continue
                done = wait_for(wait, self.id)
                if done is not None and done.get("state") in READY_STATES and "result" in done:
                    # The notification carries the outcome: no need to read it back.
                    return self._outcome(done["state"], done["result"], propagate)
                state = UNREAD

    wait = get

    async def aget(self, *args, **kwargs) -> Any:
        """:meth:`get` for async code (``await result.aget(timeout=10)``): the wait takes a
        thread of its own, never the event loop, nor the thread Django runs the ORM in for
        async code, so that waits of several callers don't queue behind one another."""
        return await sync_to_async(_closing_connections(self.get),
                                   thread_sensitive=False)(*args, **kwargs)

    def _outcome(self, state: str, result: Any, propagate: bool) -> Any:
        if state == States.SUCCESS:
            return result
        error = rebuild_exception(result)
        if propagate:
            raise error
        return error

    # Acting on the job ---------------------------------------------------------------------

    def forget(self) -> None:
        """Delete the stored result."""
        JobRecord.objects.filter(job_id=self.id).delete()
        self._row = None

    def revoke(self, terminate: bool = False, reason: str = "revoked") -> None:
        """Make sure the job doesn't run: a worker that receives it records REVOKED instead.

        A job already running goes on, unless ``terminate=True``: then a prefork worker
        kills the process running it (within a heartbeat, a few seconds).
        """
        from jobs.lifecycle import revoke_request

        if revoke_request(self.id, self.name or "", terminate, reason):
            from jobs.unique import release

            release(self.id)  # a revoked job no longer holds its unique lock
        self._row = None


def _state_of(job_id: str) -> str | None:
    """The state in the job's row (None without a row)."""
    found, _ = _read(job_id, ("state",))
    return found[0] if found else None


def _outcome_of(job_id: str) -> tuple[str, Any] | None:
    """``(state, result)`` of the job's row (None without one), the result decoded as the
    model's field decodes it."""
    found, connection = _read(job_id, ("state", "result"))
    if found is None:
        return None
    return found[0], _RESULT.from_db_value(found[1], None, connection)


_RESULT = JobRecord._meta.get_field("result")


def _read(job_id: str, names: tuple[str, ...]):
    """``(the columns `names` of the job's row or None, the connection)``: one statement
    built once, where the ORM's query for the row costs ten times the database's work (a
    third of a millisecond on SQLite)."""
    connection = connections[router.db_for_read(JobRecord)]
    with connection.cursor() as cursor:
        cursor.execute(_select_sql(connection.alias, names), [job_id])
        return cursor.fetchone(), connection


@functools.cache
def _select_sql(alias: str, names: tuple[str, ...]) -> str:
    quote = connections[alias].ops.quote_name
    field = JobRecord._meta.get_field
    columns = ", ".join(quote(field(name).column) for name in names)
    return (f"SELECT {columns} FROM {quote(JobRecord._meta.db_table)} "
            f"WHERE {quote(field('job_id').column)} = %s")


def _refuse_inside_a_job() -> None:
    request = context.current.get()
    if request.id is not None and not request.is_eager:
        raise RuntimeError(
            f"Never call JobResult.get() within a job (it runs in job {request.id}): the "
            "job waited for may need this very worker. Chain the jobs instead, or pass "
            "disable_sync_subtasks=False if you must.")


def _closing_connections(func):
    """``func``, closing the database connections of the thread it ran in after it (a
    thread of an executor, which Django's request cycle never closes)."""
    @functools.wraps(func)
    def call(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()
    return call


#: ``state`` before the row was read.
UNREAD = object()


def result_channel(job_id: str) -> str:
    """The channel PostgreSQL notifies ``job_id``'s final state on (migration 0012)."""
    return "jobs_result_" + hashlib.md5(job_id.encode(), usedforsecurity=False).hexdigest()


@contextmanager
def _notifications(job_id: str):
    """While the block runs, this thread's database connection LISTENs for ``job_id``'s
    final state (PostgreSQL) or watches for commits (SQLite); yields ``(wait, state)``:
    ``wait(seconds, job_id)``, or None where that can't be (another database, PostgreSQL
    without psycopg 3, or inside a transaction, where LISTEN waits for the commit and
    SQLite's snapshot stays the same); and the job's state if it was read on the way
    (:data:`UNREAD` otherwise).

    On PostgreSQL one round trip listens on the job's own channel and reads its state. The
    channel is closed after the block, before the connection's next statement: with the
    next get()'s LISTEN, or ahead of whatever else runs on it first, or when the request
    ends (:func:`_unlisten_later`). So the caller has its outcome a round trip sooner, and a
    connection that goes on to a long transaction holds back none of the database's
    notifications."""
    connection = connections[router.db_for_read(JobRecord)]
    if in_atomic_block(connection):
        yield None, UNREAD
        return
    if watchable(connection):
        yield functools.partial(_wait_for_commit, Changes(connection), time.monotonic()), UNREAD
        return
    if connection.vendor != "postgresql":
        yield None, UNREAD
        return
    try:
        found = _listen(connection, job_id)
    except DatabaseError:
        yield None, UNREAD
        return
    if found is UNREAD:  # not psycopg 3
        yield None, UNREAD
        return
    pg = connection.connection
    try:
        yield functools.partial(_wait_for_notification, pg), found
    finally:
        _unlisten_later(connection, pg, result_channel(job_id))


#: psycopg connection -> the channel it listens on still, closed before its next statement.
_listening: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _unlisten_later(connection, pg, channel: str) -> None:
    """Close ``channel`` on ``pg`` (the driver's connection of Django's ``connection``)
    before the next statement that goes through it: the next get()'s LISTEN takes it along,
    or, ahead of any other statement of Django's, :func:`_unlisten_first` sends it alone;
    at the latest when the request ends (:func:`_unlisten_now`)."""
    _listening[pg] = channel
    add_execute_wrapper(connection, _unlisten_first)


def _unlisten_now(**kwargs) -> None:
    """At the end of a request, before this thread's connections wait idle for the next:
    close the channels get() left open on them. PostgreSQL wakes every listening session
    for each NOTIFY of the database, whatever its channel."""
    if not _listening:
        return
    for connection in initialized_connections():
        if connection.vendor == "postgresql":  # (SQLite's can't even be weakly referred to)
            _unlisten_left(connection.connection)


request_finished.connect(_unlisten_now, dispatch_uid="jobs.results.unlisten")


def _unlisten_first(execute, sql, params, many, context):
    """Django's execute wrapper: send the UNLISTEN a get() left on this connection, then the
    statement. Outside any transaction: psycopg opens one only with the statement."""
    _unlisten_left(context["connection"].connection)
    return execute(sql, params, many, context)


def _unlisten_left(pg) -> None:
    """Close the channel a get() left open on ``pg`` (a psycopg connection, or None), if any."""
    channel = _listening.pop(pg, None) if pg is not None else None
    if channel is not None:
        try:
            _run(pg, f"UNLISTEN {channel}")
        except Exception:  # the connection broke: Django replaces it, its next use says so
            pass


def _listen(connection, job_id: str):
    """LISTEN on ``job_id``'s channel, then read the job's state, in one round trip; the
    state, or :data:`UNREAD` without psycopg 3.

    The LISTEN is committed before the read: a LISTEN takes effect when its transaction
    commits, so a read in the same transaction could miss an outcome committed after its
    snapshot and before the LISTEN, and that outcome's notification too."""
    connection.ensure_connection()
    pg = connection.connection
    if not callable(getattr(pg, "notifies", None)):
        return UNREAD
    from psycopg.pq import TransactionStatus
    from psycopg.sql import Literal

    select = _select_sql(connection.alias, ("state",)) % Literal(job_id).as_string(pg)
    earlier = _listening.pop(pg, None)  # the channel of the last get() on this connection
    unlisten = f"UNLISTEN {earlier}; " if earlier is not None else ""
    try:
        found = _run(pg, f"BEGIN; {unlisten}LISTEN {result_channel(job_id)}; COMMIT; {select}")
    except DatabaseError:
        if earlier is not None:  # its UNLISTEN went with the failed transaction
            _listening[pg] = earlier
        try:
            if pg.info.transaction_status != TransactionStatus.IDLE:  # the LISTEN failed
                pg.execute("ROLLBACK")  # (a standby refuses it): not left in its transaction
        except Exception:  # the connection broke: Django replaces it
            pass
        raise
    return found[0].decode() if found else None


def _run(pg, sql: str) -> tuple | None:
    """Run ``sql`` (statements without parameters) on the psycopg 3 connection ``pg``
    through libpq itself; the first row of the last statement's result, as bytes, or None.

    A caller's ``get()`` sends two such statements per job, the second after the outcome
    came: through a Django cursor each took three times the CPU (an UNLISTEN: 95 against
    32 µs), on the way of every round trip."""
    import psycopg
    from psycopg import pq

    try:
        result = pg.pgconn.exec_(sql.encode())  # the wait releases the interpreter's lock
    except psycopg.Error as exc:  # closed
        raise DatabaseError(str(exc)) from exc
    if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        raise DatabaseError(result.error_message.decode(errors="replace").strip()
                            or "the statement failed")
    if result.status != pq.ExecStatus.TUPLES_OK or not result.ntuples:
        return None
    return tuple(result.get_value(0, column) for column in range(result.nfields))


#: SQLite: the shortest pause between two checks for a commit while ``get()`` waits.
FIRST_STEP = 0.0002


def _wait_for_commit(changes: Changes, since: float, seconds: float, job_id: str) -> None:
    """Return once another connection has committed, or after ``seconds``. The pause
    between checks is a twentieth of the time waited so far (from ``since``), and never less
    than :data:`FIRST_STEP`: a quick job's result is read within a fraction of a millisecond,
    a long job's caller reads no more than about 20 times per doubling of its wait, however
    busy the database."""
    changes.wait(seconds, max(FIRST_STEP, (time.monotonic() - since) / 20))


def _wait_for_notification(pg, seconds: float, job_id: str) -> dict | None:
    """The notification that ``job_id`` is done (its payload), or None after ``seconds``.

    Read through libpq itself (psycopg's ``notifies()`` generator, its lock and its objects,
    cost a third of the caller's work between the notification and the outcome). One that
    arrived while get()'s own statement ran (the job finished during its LISTEN and read)
    was kept by libpq already: it is taken first, or the wait would last until the next
    read of the row, ``interval`` later."""
    deadline = time.monotonic() + seconds
    pgconn = pg.pgconn
    try:
        while True:
            while (notify := pgconn.notifies()) is not None:
                if (payload := _payload_for(job_id, notify.extra.decode(errors="replace"))):
                    return payload
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if readable_within([pgconn.socket], left):
                pgconn.consume_input()
    except Exception:  # the connection broke: the caller's next read tells
        time.sleep(max(0.0, deadline - time.monotonic()))
    return None


def _payload_for(job_id: str, text: str) -> dict | None:
    """A notification's payload, if it is ``job_id``'s."""
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) and payload.get("id") == job_id else None


class EagerResult(JobResult):
    """The outcome of a job run in this process with ``apply()`` (or ALWAYS_EAGER)."""

    def __init__(self, id: str, name: str, state: str, value: Any, traceback: str = "",
                 retries: int = 0) -> None:
        super().__init__(id, name)
        self._state, self._value, self._traceback, self._retries = state, value, traceback, retries
        self._done = timezone.now()

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def result(self) -> Any:
        return self._value

    info = result

    @property
    def traceback(self) -> str | None:
        return self._traceback or None

    @property
    def date_done(self) -> datetime:
        return self._done

    @property
    def retries(self) -> int:
        return self._retries

    def get(self, timeout=None, propagate=True, interval=0.5, disable_sync_subtasks=True):
        if self._state == States.SUCCESS:
            return self._value
        if propagate:
            raise self._value
        return self._value

    def forget(self) -> None:
        pass

    def revoke(self, terminate: bool = False, reason: str = "revoked") -> None:
        pass


#: Celery's name for the handle: ``from jobs import AsyncResult``.
AsyncResult = JobResult


def exception_to_dict(exc: BaseException) -> dict:
    """The JSON form of an exception stored in ``JobRecord.result``."""
    cls = type(exc)
    try:
        args = [a if isinstance(a, (str, int, float, bool, type(None))) else repr(a)
                for a in exc.args]
    except Exception:
        args = [str(exc)]
    return {"exc_type": cls.__name__, "exc_module": cls.__module__, "exc_message": args}


def rebuild_exception(data) -> BaseException:
    """Turn a stored exception back into one to raise; unknown classes become RemoteError."""
    if not isinstance(data, dict) or "exc_type" not in data:
        return exceptions.RemoteError("Error", repr(data))
    name, module = data.get("exc_type"), data.get("exc_module") or "builtins"
    args = data.get("exc_message") or []
    if not isinstance(args, list):
        args = [args]
    cls = _exception_class(module, name)
    if cls is not None:
        try:
            return cls(*args)
        except Exception:
            pass
    return exceptions.RemoteError(f"{module}.{name}", " ".join(map(str, args)))


def _exception_class(module: str, name: str):
    if module == "builtins":
        cls = getattr(builtins, name, None)
    else:
        import sys

        # Only classes of modules this process has already imported: never import on behalf
        # of a stored result.
        cls = getattr(sys.modules.get(module), name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return None
