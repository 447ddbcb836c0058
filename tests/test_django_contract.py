"""The contract with Django: every undocumented name of its database connections that jobs
relies on (all of them spelt in :mod:`jobs.compat.django`) exists in the installed Django, as
we use it. A release that changes one fails here, naming it."""

from __future__ import annotations

import inspect

import pytest
from django.db import connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import ConnectionHandler, DatabaseErrorWrapper

from jobs.compat import django as django_compat

#: Attributes Django sets on every connection in ``__init__``, and their types.
ATTRIBUTES = {
    "BaseDatabaseWrapper.in_atomic_block": bool,
    "BaseDatabaseWrapper.savepoint_ids": list,
    "BaseDatabaseWrapper.needs_rollback": bool,
    "BaseDatabaseWrapper.atomic_blocks": list,
    "BaseDatabaseWrapper.commit_on_exit": bool,
    "BaseDatabaseWrapper.health_check_done": bool,
    "BaseDatabaseWrapper.close_at": (float, type(None)),
    "BaseDatabaseWrapper.errors_occurred": bool,
    "BaseDatabaseWrapper.connection": object,  # the driver's, once connected
    "BaseDatabaseWrapper.wrap_database_errors": DatabaseErrorWrapper,
    "BaseDatabaseWrapper.execute_wrappers": list,
}

#: Methods we call, and their parameters.
METHODS = {
    "BaseDatabaseWrapper.is_usable": "(self)",
    "BaseDatabaseWrapper.close_if_unusable_or_obsolete": "(self)",
    "BaseDatabaseWrapper.get_connection_params": "(self)",
    "ConnectionHandler.all(initialized_only=)": "(self, initialized_only=False)",
    "ConnectionHandler.create_connection": "(self, alias)",
    "ConnectionHandler.__setitem__": "(self, key, value)",
    "ConnectionHandler.__delitem__": "(self, key)",
    "BaseDatabaseWrapper.inc_thread_sharing": "(self)",
}


def test_every_name_the_adapter_uses_is_checked_here():
    assert sorted(django_compat.USED ^ (set(ATTRIBUTES) | set(METHODS))) == []


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(ATTRIBUTES))
def test_a_connection_still_has_the_attribute(name):
    connection.ensure_connection()
    attribute = name.split(".", 1)[1]
    assert isinstance(getattr(connections["default"], attribute), ATTRIBUTES[name]), \
        f"{name} is gone or changed its type"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_method_still_takes_what_we_pass(name):
    owner, method = name.split("(")[0].split(".")
    function = getattr({"BaseDatabaseWrapper": BaseDatabaseWrapper,
                        "ConnectionHandler": ConnectionHandler}[owner], method)
    assert str(inspect.signature(function)) == METHODS[name], f"{name} changed its parameters"


def test_django_checks_health_again_when_told_to():
    source = inspect.getsource(BaseDatabaseWrapper.close_if_health_check_failed)
    assert "health_check_done" in source, "BaseDatabaseWrapper.health_check_done is not read"


@pytest.mark.django_db(transaction=True)
def test_in_atomic_block_says_whether_a_transaction_is_open():
    assert django_compat.in_atomic_block(connection) is False
    with transaction.atomic():
        assert django_compat.in_atomic_block(connection) is True


@pytest.mark.django_db(transaction=True)
def test_an_abandoned_transaction_is_rolled_back_and_the_connection_usable_again():
    from jobs.models import Message

    atomic = transaction.atomic()
    atomic.__enter__()
    Message.objects.create(queue="abandoned", payload="{}", delivery_tag="abandoned-1")
    django_compat.abandon_transaction(connection)

    assert not django_compat.in_atomic_block(connection)
    assert connection.get_autocommit()
    assert not Message.objects.filter(queue="abandoned").exists()
    with transaction.atomic():  # a new transaction starts cleanly
        Message.objects.create(queue="after", payload="{}", delivery_tag="after-1")
    assert Message.objects.filter(queue="after").count() == 1


@pytest.mark.django_db
def test_the_connection_params_open_another_connection():
    params = django_compat.connection_params(connection)
    assert isinstance(params, dict) and params


@pytest.mark.django_db(transaction=True)
def test_a_lent_connection_serves_one_thread_then_another():
    import threading

    from jobs.models import Message

    lent = django_compat.shareable_connections()
    seen = []

    def use():
        django_compat.lend(lent)
        seen.append((connections["default"] is lent["default"], Message.objects.count()))
        django_compat.take_back(lent)
        seen.append(lent["default"] in django_compat.initialized_connections())

    for _ in range(2):
        thread = threading.Thread(target=use)
        thread.start()
        thread.join()
    lent["default"].close()
    assert seen == [(True, 0), False, (True, 0), False]


# execute_bound: the statements a worker repeats for every job ---------------------------

INSERT = ("INSERT INTO jobs_deadletter (queue, job_id, job_name, reason, content_type, "
          "content_encoding, headers, properties, body, worker, date_created) "
          "VALUES (%s, %s, '', '', '', '', '{}', '{}', '', '', %s) RETURNING id")


def insert_letter(job_id: str):
    from django.utils import timezone

    return django_compat.execute_bound(connection, INSERT, ["q", job_id, timezone.now()])


@pytest.mark.pg
@pytest.mark.django_db
def test_a_bound_statement_returns_its_rows_and_counts():
    done = insert_letter("contract-1")
    assert done.rowcount == 1 and len(done.rows) == 1
    update = django_compat.execute_bound(
        connection, "UPDATE jobs_deadletter SET reason = %s WHERE job_id = %s", ["r", "none"])
    assert update.rowcount == 0 and update.rows == []


@pytest.mark.pg
@pytest.mark.django_db(transaction=True)
def test_a_bound_statement_raises_djangos_errors():
    from django.db import IntegrityError

    taken = insert_letter("contract-2").rows[0][0]
    insert_letter("contract-3")
    with pytest.raises(IntegrityError):
        django_compat.execute_bound(
            connection, "UPDATE jobs_deadletter SET id = %s WHERE job_id = %s",
            [taken, "contract-3"])
    assert insert_letter("contract-4").rowcount == 1  # the connection is usable afterwards


@pytest.mark.pg
@pytest.mark.django_db
def test_a_repeated_statement_is_prepared_on_the_server_where_the_settings_ask():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL prepares statements; run with DATABASE_URL=postgres://...")
    connection.ensure_connection()
    assert connection.connection.prepare_threshold is None  # Django's default: never
    insert_letter("contract-unprepared")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 0
    connection.connection.prepare_threshold = 1  # as OPTIONS {"prepare_threshold": 1} does
    try:
        for n in range(2):
            insert_letter(f"contract-prepared-{n}")
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [row[0] for row in cursor.fetchall()]
    finally:
        connection.connection.prepare_threshold = None
    assert any("INSERT INTO jobs_deadletter" in text for text in prepared), prepared


# call_function: a job's two writes on PostgreSQL, through libpq ---------------------------

def needs_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("libpq: PostgreSQL only (DATABASE_URL=postgres://... pytest -m pg)")


@pytest.mark.pg
@pytest.mark.django_db
def test_a_function_call_sends_each_kind_of_parameter_and_answers_its_integer():
    from django.utils import timezone

    needs_postgresql()
    call = django_compat.call_function
    at = timezone.now().replace(microsecond=842832)
    assert call(connection, "SELECT length(%s::text) + %s::integer + "
                "round(%s::double precision * 10)::integer", ["héllo €", 2, 0.3]) == 12
    assert call(connection, "SELECT floor(extract(epoch FROM %s::timestamptz))::bigint",
                [at]) == int(at.timestamp())
    assert call(connection, "SELECT extract(microseconds FROM %s::timestamptz)::integer",
                [at]) == at.second * 1_000_000 + at.microsecond
    assert call(connection, "SELECT (%s::jsonb ->> 'a')::integer + length('100%%')",
                ['{"a": 5}']) == 9
    assert call(connection, "SELECT (%s::jsonb IS NULL)::integer", [None]) == 1
    assert call(connection, "SELECT NULLIF(%s::integer, 0)", [0]) is None
    assert call(connection, "SELECT (%s::double precision = 'Infinity')::integer",
                [float("inf")]) == 1
    with pytest.raises(TypeError):
        call(connection, "SELECT %s::integer", [True])


@pytest.mark.pg
@pytest.mark.django_db(transaction=True)
def test_a_function_call_raises_djangos_errors_as_a_cursor_would():
    from django.db import DataError, IntegrityError, ProgrammingError

    needs_postgresql()
    call = django_compat.call_function
    with pytest.raises(DataError):  # refused by psycopg as by a cursor, never cut short
        call(connection, "SELECT length(%s::text)", ["a\x00b"])
    with pytest.raises(DataError):  # refused by the server
        call(connection, "SELECT jsonb_typeof(%s::jsonb)::integer", ["NaN"])
    taken = insert_letter("contract-5").rows[0][0]
    insert_letter("contract-6")
    with pytest.raises(IntegrityError):
        call(connection, "WITH u AS (UPDATE jobs_deadletter SET id = %s WHERE job_id = %s "
             "RETURNING id) SELECT count(*)::integer FROM u", [taken, "contract-6"])
    with pytest.raises(ProgrammingError):  # not a SELECT: never taken for an outage
        call(connection, "DO $$ BEGIN END $$", [])
    assert call(connection, "SELECT %s::integer", [7]) == 7  # usable afterwards


@pytest.mark.pg
@pytest.mark.django_db(transaction=True)
def test_a_function_call_on_a_connection_the_server_dropped_is_a_connection_error():
    import psycopg
    from django.db import OperationalError

    from jobs.connections import once_more_if_disconnected
    from jobs.database import is_connection_error

    needs_postgresql()
    call = django_compat.call_function
    assert call(connection, "SELECT pg_backend_pid()", []) > 0
    pid = call(connection, "SELECT pg_backend_pid()", [])
    params = django_compat.connection_params(connection)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:  # what a restart does
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(OperationalError) as raised:
        call(connection, "SELECT %s::integer", [1])
    assert is_connection_error(raised.value)
    # As the worker's first write does: on a fresh connection, once more.
    assert once_more_if_disconnected(call, connection, "SELECT pg_backend_pid()", []) != pid


@pytest.mark.pg
@pytest.mark.django_db
def test_a_function_call_is_prepared_on_the_server_where_the_settings_ask():
    needs_postgresql()
    call = django_compat.call_function
    connection.ensure_connection()
    assert call(connection, "SELECT %s::integer + 40", [2]) == 42
    connection.connection.prepare_threshold = 1
    try:
        for n in range(2):
            assert call(connection, "SELECT %s::integer + 41", [n]) == 41 + n
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [row[0] for row in cursor.fetchall()]
    finally:
        connection.connection.prepare_threshold = None
    assert any("+ 41" in text for text in prepared) and not any("+ 40" in t for t in prepared)
