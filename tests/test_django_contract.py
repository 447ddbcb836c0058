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
