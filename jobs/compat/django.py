"""Django's undocumented connection internals, spelt in this module only.

A worker treats its database connections the way Django's request cycle does (keep them
across jobs, check their health after a pause, end a transaction a job left open, close the
broken and the old ones), and that needs attributes of Django's database wrapper that are
not in its documentation. Each is named here, once; ``tests/test_django_contract.py`` checks
them against the installed Django, so that a release that changes one fails that test, by
name, rather than a worker.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from functools import lru_cache, partial
from operator import attrgetter
from typing import NamedTuple

from django.db import connections

#: Every undocumented name of Django's ``BaseDatabaseWrapper`` (or ``connections``) used here.
USED = frozenset({
    "BaseDatabaseWrapper.in_atomic_block",
    "BaseDatabaseWrapper.savepoint_ids",
    "BaseDatabaseWrapper.needs_rollback",
    "BaseDatabaseWrapper.atomic_blocks",
    "BaseDatabaseWrapper.commit_on_exit",
    "BaseDatabaseWrapper.health_check_done",
    "BaseDatabaseWrapper.close_at",
    "BaseDatabaseWrapper.errors_occurred",
    "BaseDatabaseWrapper.is_usable",
    "BaseDatabaseWrapper.close_if_unusable_or_obsolete",
    "BaseDatabaseWrapper.get_connection_params",
    "ConnectionHandler.all(initialized_only=)",
    "ConnectionHandler.create_connection",
    "ConnectionHandler.__setitem__",
    "ConnectionHandler.__delitem__",
    "BaseDatabaseWrapper.inc_thread_sharing",
    "BaseDatabaseWrapper.wrap_database_errors",
    "BaseDatabaseWrapper.connection",
    "BaseDatabaseWrapper.execute_wrappers",
})


#: (connection) -> bool: whether it is inside ``transaction.atomic()``. An attrgetter, as
#: cheap as reading the attribute: publishing asks at every call.
in_atomic_block = attrgetter("in_atomic_block")

#: (connection) -> bool: whether a database error was raised on it since the last clear.
errors_occurred = attrgetter("errors_occurred")


#: () -> list: this thread's database connections that were used (the others have nothing
#: to tidy). A partial: the worker asks before and after every job.
initialized_connections = partial(connections.all, initialized_only=True)


def add_execute_wrapper(connection, wrapper) -> None:
    """Have ``wrapper`` wrap every statement run on ``connection`` through Django from now on
    (as ``connection.execute_wrapper(wrapper)`` does for a block), once however often it is
    added. It stays as long as the connection object: make it cheap when it has nothing to
    do."""
    wrappers = connection.execute_wrappers
    if wrapper not in wrappers:
        wrappers.append(wrapper)


def check_health_before_next_use(connection) -> None:
    """With CONN_HEALTH_CHECKS, have Django check the connection before its next query."""
    connection.health_check_done = False


def abandon_transaction(connection) -> None:
    """Roll back a transaction that will never be committed (a job entered ``atomic()`` and
    never left it), and make the connection usable outside ``atomic()`` again."""
    # Leave the atomic blocks first: Django refuses to roll back inside one.
    connection.in_atomic_block = False
    connection.atomic_blocks = []
    connection.savepoint_ids = []
    connection.needs_rollback = False
    connection.commit_on_exit = True
    connection.rollback()
    connection.set_autocommit(True)


def past_max_age(connection) -> bool:
    """Whether the connection has lived its CONN_MAX_AGE (None: it lives for ever)."""
    return connection.close_at is not None and time.monotonic() >= connection.close_at


def clear_errors(connection) -> None:
    connection.errors_occurred = False


def is_usable(connection) -> bool:
    """Whether the connection still answers (a round trip to the server)."""
    return connection.is_usable()


def close_if_unusable_or_obsolete(connection) -> None:
    """Close the connection if it is broken or past CONN_MAX_AGE, as Django does after a
    request."""
    connection.close_if_unusable_or_obsolete()


def driver_connection(connection):
    """The driver's own connection under ``connection``, opened if need be: for a statement
    a waiter repeats thousands of times a second, at the driver's cost, without Django's
    cursor wrapper around it."""
    connection.ensure_connection()
    return connection.connection


def copy_rows(connection, sql: str, rows) -> None:
    """PostgreSQL's ``COPY ... FROM STDIN`` of ``rows`` (tuples of the columns ``sql``
    names) on ``connection``, in its transaction: through psycopg's own cursor, as Django's
    cursor has no ``copy``; the driver's errors raised as Django's."""
    with connection.wrap_database_errors:
        with driver_connection(connection).cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)


def connection_params(connection) -> dict:
    """The driver's connect() arguments of ``connection``'s settings (to open another one)."""
    return connection.get_connection_params()


def shareable_connections() -> dict:
    """A new connection object for each database (not connected yet), that any thread may
    use once it is lent to it (:func:`lend`): one thread at a time."""
    made = {}
    for alias in connections:
        made[alias] = connection = connections.create_connection(alias)
        connection.inc_thread_sharing()
    return made


def lend(lent: dict) -> None:
    """Make the connections of :func:`shareable_connections` this thread's own."""
    for alias, connection in lent.items():
        connections[alias] = connection


def take_back(lent: dict) -> None:
    """This thread no longer has the connections it was lent (it has none until it is lent
    some again, or opens its own)."""
    for alias in lent:
        del connections[alias]


def execute_bound(connection, sql: str, params: list):
    """Run one statement that a worker repeats for every job: what it did (rows changed,
    rows returned).

    On PostgreSQL with psycopg 3 the parameters travel apart from the SQL (bound on the
    server): a Django cursor binds them into the SQL text on the client instead, which
    costs a quarter of a job's recording. The statement is prepared on the server only if
    the database's OPTIONS set ``prepare_threshold`` (Django leaves it unset, for
    PgBouncer's transaction pooling). On SQLite the driver's cursor runs it, its ``%s``
    placeholders turned into ``?`` once per statement (Django's cursor does that for every
    call, with a regular expression). Errors are raised as Django's (``IntegrityError``,
    ``DataError``...), as from a Django cursor. Elsewhere a Django cursor runs it.
    """
    raw = driver_connection(connection)
    if connection.vendor == "sqlite":
        with connection.wrap_database_errors:
            cursor = raw.execute(_qmark(sql), params)
            try:
                return _done(cursor)
            finally:
                cursor.close()
    if connection.vendor != "postgresql" or not hasattr(raw, "prepare_threshold"):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return _done(cursor)
    with connection.wrap_database_errors:
        cursor = _bound_cursor(connection, raw)
        cursor.execute(sql, params)
        return _done(cursor)


def call_function(connection, sql: str, params: list) -> int | None:
    """Run ``sql``, a SELECT of one function that answers an integer, with ``params`` (each
    a str, int, float, datetime or None; JSON as its text): the integer, or None for NULL.

    For the two writes of every job on PostgreSQL (:mod:`jobs.lifecycle`): with psycopg 3,
    and prepared statements off (Django's default), the statement goes to libpq itself
    (``PGconn.exec_params``), its parameters as text, and its one value comes back as text.
    psycopg's cursor (converting the query, choosing dumpers, its wait loop) took half the
    CPU of a job's two writes, on the way of every round trip. Errors are raised as a
    cursor raises them, then as Django's: the class of their SQLSTATE (``IntegrityError``,
    ``DataError``...), ``OperationalError`` where the connection broke. With
    ``prepare_threshold`` in the database's OPTIONS, or another driver, a cursor runs it.
    """
    raw = driver_connection(connection)
    if getattr(raw, "prepare_threshold", 0) is not None or connection.vendor != "postgresql":
        rows = execute_bound(connection, sql, params).rows
        return rows[0][0] if rows else None
    with connection.wrap_database_errors:
        return _call(raw.pgconn, _numbered(sql), [_text(value) for value in params])


def _call(pgconn, sql: bytes, params: list) -> int | None:
    from psycopg import pq

    result = pgconn.exec_params(sql, params)  # the wait releases the interpreter's lock
    if result.status == pq.ExecStatus.TUPLES_OK:
        value = result.get_value(0, 0) if result.ntuples and result.nfields else None
        return None if value is None else int(value)
    raise _error(pgconn, result)


def _error(pgconn, result) -> Exception:
    """psycopg's exception for the failed ``result``, as its cursor would raise it."""
    import psycopg
    from psycopg import pq

    message = result.error_message.decode("utf-8", "replace").strip() or "the statement failed"
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    if pgconn.status == pq.ConnStatus.BAD:
        return psycopg.OperationalError(message)
    if result.status != pq.ExecStatus.FATAL_ERROR:  # not a SELECT
        status = pq.ExecStatus(result.status).name
        return psycopg.ProgrammingError(f"the statement answered {status}, not a row")
    if not state:  # libpq's own error: the connection lost
        return psycopg.OperationalError(message)
    try:
        return psycopg.errors.lookup(state.decode())(message)
    except KeyError:
        return psycopg.DatabaseError(message)


def _text(value) -> bytes | None:
    """A parameter of :func:`call_function` as PostgreSQL's text input takes it."""
    if isinstance(value, str):
        if "\x00" in value:
            import psycopg

            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return str.encode(value)  # a TextChoices member: its value
    if value is None:
        return None
    if isinstance(value, float):  # every digit; inf and nan as PostgreSQL spells them too
        return float.__repr__(value).encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value).encode()
    if isinstance(value, datetime):  # naive (USE_TZ = False): in the connection's zone
        return value.isoformat().encode()
    raise TypeError(f"not a parameter of call_function(): {value!r}")


@lru_cache(maxsize=64)
def _numbered(sql: str) -> bytes:
    """``sql`` with libpq's placeholders ($1, $2...) for the ``%s`` of Django's style."""
    count = iter(range(1, sql.count("%s") + 1))
    return re.sub(r"(?<!%)%s", lambda _: f"${next(count)}", sql).replace("%%", "%").encode()


def _bound_cursor(connection, raw):
    """A psycopg cursor binding on the server, kept on ``connection`` (used by one thread)
    for its driver connection ``raw``: a new cursor for each statement cost a quarter more,
    its row loaders made again every time."""
    kept = getattr(connection, "_jobs_bound_cursor", None)
    if kept is not None and kept[0] is raw and not kept[1].closed:
        return kept[1]
    import psycopg

    cursor = psycopg.Cursor(raw)
    connection._jobs_bound_cursor = (raw, cursor)
    return cursor


@lru_cache(maxsize=256)
def _qmark(sql: str) -> str:
    """``sql`` with sqlite3's placeholders (``?``) for the ``%s`` of Django's style, and
    ``%%`` made ``%`` again."""
    return re.sub(r"(?<!%)%s", "?", sql).replace("%%", "%")


class Done(NamedTuple):
    """What a statement of :func:`execute_bound` did."""

    rowcount: int
    rows: list


def _done(cursor) -> Done:
    rows = cursor.fetchall() if cursor.description else []  # SQLite counts rows as read
    return Done(cursor.rowcount, rows)
