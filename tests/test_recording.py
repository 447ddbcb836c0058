"""The worker's writes of a job's states (jobs.lifecycle), one SQL statement each:
what they leave in the JobRecord table, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime

import pytest
from django.db import connections

from jobs import JobResult, lifecycle as recording
from jobs.messages import JobMessage
from jobs.models import JobRecord, States

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pg]


def message(retries: int = 0, **options) -> JobMessage:
    options.setdefault("id", str(uuid.uuid4()))
    return JobMessage(name="project.demo.jobs.add", args=(1, 2), kwargs={"at": "noon"},
                      queue="default", retries=retries, **options)


def test_the_first_start_writes_the_whole_row_and_counts_one_delivery():
    msg = message(parent_id="parent-1", root_id="root-1")
    assert recording.mark_started(msg, "w1@host", track=True) == 1
    row = JobRecord.objects.get(job_id=msg.id)
    assert (row.state, row.worker, row.deliveries, row.retries) == (States.STARTED, "w1@host", 1, 0)
    assert (row.name, row.args, row.kwargs, row.queue) == (msg.name, [1, 2], {"at": "noon"}, "default")
    assert (row.parent_id, row.root_id) == ("parent-1", "root-1")
    assert isinstance(row.date_started, datetime) and row.date_started.tzinfo is not None
    assert row.date_created == row.date_started
    assert (row.date_done, row.result, row.traceback, row.meta, row.runtime) == (None, None, "", None, None)


def test_a_redelivery_of_the_same_attempt_counts_up_and_a_retry_counts_afresh():
    msg = message()
    assert [recording.mark_started(msg, "w", track=True) for _ in range(3)] == [1, 2, 3]
    retry = message(retries=1, id=msg.id)
    assert recording.mark_started(retry, "w2", track=True) == 1
    row = JobRecord.objects.get(job_id=msg.id)
    assert (row.deliveries, row.retries, row.worker) == (1, 1, "w2")


def test_a_revoked_job_is_not_started_and_stays_revoked():
    msg = message()
    JobResult(msg.id).revoke()
    assert recording.mark_started(msg, "w", track=True) is None
    assert JobRecord.objects.get(job_id=msg.id).state == States.REVOKED


def test_a_late_start_of_an_earlier_attempt_leaves_the_retry_alone():
    msg = message(retries=2)
    recording.mark_started(msg, "w", track=True)
    assert recording.mark_started(message(retries=1, id=msg.id), "old", track=True) is None
    recording.mark_succeeded(message(retries=1, id=msg.id), "stale", 0.1, "old")
    row = JobRecord.objects.get(job_id=msg.id)
    assert (row.state, row.retries, row.worker, row.result) == (States.STARTED, 2, "w", None)


def test_success_writes_the_value_as_json_and_wakes_get():
    msg = message()
    recording.mark_started(msg, "w", track=True)
    value = {"total": 3, "items": [1.5, None, "x"]}
    recording.mark_succeeded(msg, value, 0.25, "w")
    row = JobRecord.objects.get(job_id=msg.id)
    assert (row.state, row.result, row.runtime) == (States.SUCCESS, value, 0.25)
    assert row.date_done >= row.date_started
    assert JobResult(msg.id).get(timeout=5) == value


def test_get_reads_the_outcome_soon_after_another_connection_commits_it():
    # PostgreSQL: a NOTIFY; SQLite: get() checks for other connections' commits, more often
    # the sooner after it began. The outcome comes after 3 s, when a poll backing off by
    # half each time would sleep for more than a second; interval=60 leaves only the wake-up.
    msg = message()
    recording.mark_started(msg, "w", track=True)
    written = []

    def finish():
        try:
            recording.mark_succeeded(msg, 3, 0.1, "w")
            written.append(time.monotonic())
        finally:
            connections.close_all()  # this thread's own connection

    timer = threading.Timer(3.0, finish)
    timer.start()
    assert JobResult(msg.id).get(timeout=30, interval=60) == 3
    read = time.monotonic()
    timer.join()  # a notification can wake get() before the writer's thread notes the time
    assert read - written[0] < 0.75


@pytest.mark.parametrize("started", [True, False], ids=["update first", "one upsert"])
def test_an_outcome_without_a_started_row_creates_it(started):
    msg = message(parent_id="parent-1")  # track_started off: nothing was written before
    recording.mark_failed(msg, ValueError("bad input"), "Traceback ...", 0.5, "w",
                          started=started)
    row = JobRecord.objects.get(job_id=msg.id)
    assert (row.state, row.name, row.args, row.kwargs) == (States.FAILURE, msg.name, [1, 2],
                                                           {"at": "noon"})
    assert (row.queue, row.parent_id, row.root_id) == ("default", "parent-1", msg.id)
    assert (row.traceback, row.runtime, row.worker, row.deliveries) == ("Traceback ...", 0.5,
                                                                        "w", 0)
    assert row.date_done is not None and row.date_created == row.date_done
    assert row.date_started is None
    with pytest.raises(ValueError, match="bad input"):
        JobResult(msg.id).get(timeout=5)


def test_a_value_that_is_not_json_is_refused_and_the_row_is_left_started():
    msg = message()
    recording.mark_started(msg, "w", track=True)
    with pytest.raises(TypeError):
        recording.mark_succeeded(msg, object(), 0.1, "w")
    assert JobRecord.objects.get(job_id=msg.id).state == States.STARTED


def test_untracked_outcomes_update_the_row_of_an_earlier_attempt_not_of_a_later_one():
    msg = message()
    recording.mark_retry(msg, ValueError("again"), "", "w", started=False)
    recording.mark_succeeded(message(retries=1, id=msg.id), 42, 0.1, "w2", started=False)
    row = JobRecord.objects.get(job_id=msg.id)
    assert (row.state, row.result, row.retries, row.worker) == (States.SUCCESS, 42, 1, "w2")
    recording.mark_failed(message(id=msg.id), ValueError("stale"), "", 0.1, "old", started=False)
    row = JobRecord.objects.get(job_id=msg.id)
    assert (row.state, row.result, row.retries, row.worker) == (States.SUCCESS, 42, 1, "w2")
    assert JobRecord.objects.filter(job_id=msg.id).count() == 1


def test_an_untracked_value_that_is_not_json_is_refused_and_nothing_is_written():
    msg = message()
    with pytest.raises(TypeError):
        recording.mark_succeeded(msg, object(), 0.1, "w", started=False)
    assert not JobRecord.objects.filter(job_id=msg.id).exists()


def test_a_progress_state_is_recorded_with_its_meta_and_read_by_the_handle():
    msg = message()
    recording.mark_started(msg, "w", track=True)
    assert recording.mark_progress(msg.id, msg.name, "PROGRESS", {"done": 3, "of": 10})
    handle = JobResult(msg.id)
    assert (handle.state, JobRecord.objects.get(job_id=msg.id).meta) == (
        "PROGRESS", {"done": 3, "of": 10})


def test_a_progress_state_never_overwrites_a_final_one():
    msg = message()
    recording.mark_started(msg, "w", track=True)
    recording.mark_succeeded(msg, 3, 0.1, "w")
    assert not recording.mark_progress(msg.id, msg.name, "PROGRESS", {"late": True})
    row = JobRecord.objects.get(job_id=msg.id)
    assert (row.state, row.result, row.meta) == (States.SUCCESS, 3, None)


# PostgreSQL: the notification of a final state ---------------------------------------------

def postgresql():
    """The default connection, which must be PostgreSQL's (LISTEN/NOTIFY): else skip."""
    connection = connections["default"]
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY: PostgreSQL only (DATABASE_URL=postgres://... pytest -m pg)")
    return connection


@pytest.fixture
def listener():
    """A connection of its own; yields ``listen(*job_ids)``, which LISTENs on those jobs'
    channels (the channels ``get()`` waits on) and returns a function that returns the
    payloads received until one names ``last`` (notifications arrive in commit order:
    everything committed before it has arrived by then)."""
    import json

    import psycopg

    from jobs.compat.django import connection_params
    from jobs.results import result_channel

    connection = postgresql()
    params = connection_params(connection)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as pg:

        def listen(*job_ids: str):
            for job_id in job_ids:
                pg.execute(f"LISTEN {result_channel(job_id)}")

            def until(last: str) -> list[tuple[str, dict]]:
                received = []
                for notify in pg.notifies(timeout=10):
                    received.append((notify.channel, json.loads(notify.payload)))
                    if received[-1][1]["id"] == last:
                        return received
                raise AssertionError(f"no notification for {last} within 10 s: {received}")

            return until

        yield listen


def test_a_final_state_is_notified_once_with_its_value_on_the_jobs_own_channel(listener):
    from jobs.results import result_channel

    done, last, other = message(), message(), message()
    until = listener(done.id, last.id)
    for msg in (done, last, other):
        recording.mark_started(msg, "w", track=True)
    recording.mark_succeeded(done, {"total": 3}, 0.1, "w")
    recording.mark_succeeded(other, 1, 0.1, "w")  # listened for by nobody: not received
    recording.mark_failed(last, ValueError("bad"), "", 0.1, "w")
    received = until(last.id)
    assert [p for _, p in received if p["id"] == done.id] == [
        {"id": done.id, "state": States.SUCCESS, "result": {"total": 3}}]
    assert received[-1][1]["state"] == States.FAILURE
    assert [channel for channel, _ in received] == [result_channel(done.id),
                                                    result_channel(last.id)]


def test_a_final_state_written_in_the_callers_transaction_is_notified_at_its_commit(listener):
    from django.db import transaction

    inside, last = message(), message()
    until = listener(inside.id, last.id)
    for msg in (inside, last):
        recording.mark_started(msg, "w", track=True)
    with transaction.atomic():
        recording.mark_succeeded(inside, 1, 0.1, "w")
    recording.mark_succeeded(last, 2, 0.1, "w")
    assert [p["id"] for _, p in until(last.id)].count(inside.id) == 1


def test_a_value_too_large_for_a_notification_is_notified_by_its_id(listener):
    msg = message()
    until = listener(msg.id)
    recording.mark_started(msg, "w", track=True)
    recording.mark_succeeded(msg, "x" * 9000, 0.1, "w")
    assert until(msg.id)[-1][1] == {"id": msg.id}


def test_a_jobs_channel_is_the_md5_of_its_id_as_postgresql_computes_it():
    from jobs.results import result_channel

    connection = postgresql()
    ids = ["0c6b2a4e-1f7e-4c1e-9f43-0b8f6ad0f3b1", "my-own-id", "é€ unicode"]
    with connection.cursor() as cursor:
        for job_id in ids:
            cursor.execute("SELECT 'jobs_result_' || md5(%s)", [job_id])
            assert cursor.fetchone()[0] == result_channel(job_id)


def test_postgresqls_start_function_writes_every_column_of_the_row():
    # On PostgreSQL the STARTED row is written by a function of migration 0011, whose
    # column list was written by hand: a field added to JobRecord must be added there too
    # (in a migration of its own), or its column is left to the database's default.
    connection = connections["default"]
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL function: run with DATABASE_URL=postgres://...")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_functiondef('jobs_record_start'::regproc)")
        definition = cursor.fetchone()[0]
    inserted = definition.split("INSERT INTO", 1)[1].split("(", 1)[1].split(")", 1)[0]
    columns = {name.strip() for name in inserted.split(",")}
    assert columns == {f.column for f in JobRecord._meta.concrete_fields if not f.primary_key}


def test_get_stops_listening_before_the_connections_next_statement():
    # get() returns as soon as it has the outcome, and closes the job's channel with the
    # connection's next statement: the next get()'s LISTEN, or ahead of anything else (here
    # a transaction), so that a connection that goes on to a long transaction holds back
    # none of the database's notifications.
    from django.db import transaction

    connection = postgresql()
    first, second = message(), message()
    for msg, value in ((first, 1), (second, 2)):
        recording.mark_started(msg, "w", track=True)
        recording.mark_succeeded(msg, value, 0.1, "w")
    assert JobResult(first.id).get(timeout=5) == 1
    assert JobResult(second.id).get(timeout=5) == 2
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_listening_channels()")
        assert cursor.fetchall() == []


def test_get_stops_listening_when_the_request_ends():
    # Until its connection's next statement, a get() leaves its job's channel open: closed
    # when the request ends, before the connection waits idle for the next one (PostgreSQL
    # wakes every listening session for each NOTIFY of the database).
    from django.core.signals import request_finished

    connection = postgresql()
    msg = message()
    recording.mark_started(msg, "w", track=True)
    recording.mark_succeeded(msg, 1, 0.1, "w")
    assert JobResult(msg.id).get(timeout=5) == 1

    def listening() -> list:  # through the driver, not Django: no statement of Django's
        return connection.connection.execute("SELECT pg_listening_channels()").fetchall()

    assert listening() != []
    request_finished.send(sender=None)
    assert listening() == []


def test_get_polls_where_listening_fails_and_leaves_no_failed_transaction_behind(monkeypatch):
    # get() sends its LISTEN in a transaction of its own, committed before its read. When a
    # statement in it fails (a standby refuses LISTEN; here a division by zero goes in with
    # the channel's name), get() reads the row instead, and the connection is not left in
    # the failed transaction, where every later statement would be refused.
    from jobs import results

    connection = postgresql()
    msg, before = message(), message()
    for done in (msg, before):
        recording.mark_started(done, "w", track=True)
        recording.mark_succeeded(done, {"total": 3}, 0.1, "w")
    # A get() before it leaves its channel open, for the next statement to close: that
    # statement fails here, and the channel is still closed before any other.
    assert JobResult(before.id).get(timeout=5) == {"total": 3}
    monkeypatch.setattr(results, "result_channel", lambda job_id: "x; SELECT 1/0; LISTEN y")
    assert JobResult(msg.id).get(timeout=5) == {"total": 3}
    assert connection.connection.info.transaction_status.name == "IDLE"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_listening_channels()")
        assert cursor.fetchall() == []


def test_get_takes_a_notification_that_came_while_it_was_listening(monkeypatch):
    # The job finishes while get()'s own LISTEN-and-read is on its way: the notification
    # comes in the same reply, and libpq keeps it aside. Here the read itself NOTIFYs the
    # job's channel; the row stays STARTED, so only the notification can end the wait.
    import json

    from jobs import results

    postgresql()
    msg = message()
    recording.mark_started(msg, "w", track=True)
    channel = results.result_channel(msg.id)
    payload = json.dumps({"id": msg.id, "state": States.SUCCESS, "result": 42})
    run = results._run

    def finishing_meanwhile(pg, sql):
        if sql.startswith("BEGIN; LISTEN"):
            sql = sql.replace("COMMIT; ", f"COMMIT; NOTIFY {channel}, '{payload}'; ", 1)
        return run(pg, sql)

    monkeypatch.setattr(results, "_run", finishing_meanwhile)
    started = time.monotonic()
    assert JobResult(msg.id).get(timeout=4, interval=3) == 42
    assert time.monotonic() - started < 1.5  # not at the next read of the row, 3 s later
