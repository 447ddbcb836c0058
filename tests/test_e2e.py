"""End to end: jobs enqueued here run in real ``jobs_worker`` processes, on every broker;
what every pool must do runs on each pool too."""

from __future__ import annotations

import hashlib
import signal
import time

import pytest

from jobs.broker import publish
from jobs.messages import JobMessage, encode
from jobs.models import DeadLetter, JobRecord, Worker
from project.demo import jobs as demo
from tests.conftest import broker_params, pool_matrix, wait_for
from tests.jobs_app import jobs as testjobs

pytestmark = [pytest.mark.e2e, pytest.mark.long]
brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


@pool_matrix()
def test_results_arrive_with_their_values(broker_url, pool, start_worker):
    start_worker(broker_url, "-P", pool, "-c", "2")
    handles = [demo.add.delay(i, i) for i in range(40)]
    assert [h.get(timeout=30) for h in handles] == [2 * i for i in range(40)]
    row = JobRecord.objects.get(job_id=handles[0].id)
    assert row.state == "SUCCESS"
    assert row.name == "project.demo.jobs.add"
    assert row.args == [0, 0]
    assert row.worker.startswith("jobs@")
    assert row.runtime is not None and row.date_done is not None


@brokers
def test_untracked_jobs_are_recorded_once_done(broker_url, start_worker):
    start_worker(broker_url, "-c", "2")
    handles = [testjobs.add_untracked.delay(i, 1) for i in range(20)]
    assert [h.get(timeout=30) for h in handles] == [i + 1 for i in range(20)]
    rows = {row.job_id: row for row in JobRecord.objects.filter(job_id__in=[h.id for h in handles])}
    assert len(rows) == 20
    for i, h in enumerate(handles):
        row = rows[h.id]
        assert (row.state, row.args, row.result, row.deliveries) == ("SUCCESS", [i, 1], i + 1, 0)
        assert row.date_started is None and row.date_created == row.date_done
        assert row.worker.startswith("jobs@") and row.runtime is not None


@brokers
def test_jobs_sent_in_bulk_all_run_in_the_order_sent(broker_url, start_worker):
    handles = demo.add.delay_many([(i, 0) for i in range(60)])
    start_worker(broker_url, "-c", "1")
    assert [h.get(timeout=30) for h in handles] == list(range(60))
    rows = JobRecord.objects.filter(job_id__in=[h.id for h in handles]).order_by("date_started")
    assert [row.args[0] for row in rows] == list(range(60))


@pytest.mark.parametrize("broker_url", [p for p in broker_params() if p.id != "django"],
                         indirect=True)
def test_a_prefork_worker_takes_each_lone_job_the_moment_it_comes(broker_url, start_worker):
    """Its main thread waits on the broker's socket and its children's pipes at once: a job
    sent to an idle worker is taken as it arrives, not at the loop's next look (0.1 s). One
    queue: on Redis a worker waits for the next message on one queue at a time, and looks
    at the others every 0.25 s (jobs.transport.redis)."""
    start_worker(broker_url, "-P", "prefork", "-c", "1", "-Q", "default")
    assert demo.add.delay(0, 0).get(timeout=30) == 0
    started = time.monotonic()
    for i in range(40):
        assert demo.add.delay(i, 1).get(timeout=10) == i + 1
    assert time.monotonic() - started < 2.0, "40 round trips: a missed wake-up costs 0.1 s each"


@pool_matrix()
def test_a_failing_job_records_failure_with_its_traceback(broker_url, pool, start_worker):
    start_worker(broker_url, "-P", pool, "-c", "1")
    handle = demo.fail.delay("bad input")
    with pytest.raises(ValueError, match="bad input"):
        handle.get(timeout=30)
    assert handle.state == "FAILURE"
    assert "raise ValueError(message)" in handle.traceback
    assert isinstance(handle.get(timeout=1, propagate=False), ValueError)


@pool_matrix()
def test_a_worker_killed_mid_job_leaves_the_job_to_another(broker_url, pool, start_worker):
    first = start_worker(broker_url, "-P", pool, "-c", "1", "--hostname", "first@e2e")
    handle = demo.sleep_then_add.delay(3, 20, 22)
    wait_for(lambda: handle.state == "STARTED", message="the job never started")
    first.kill_all(signal.SIGKILL)
    assert JobRecord.objects.get(job_id=handle.id).worker == "first@e2e"

    start_worker(broker_url, "-c", "1", "--hostname", "second@e2e")
    assert handle.get(timeout=40) == 42
    row = JobRecord.objects.get(job_id=handle.id)
    assert (row.state, row.worker) == ("SUCCESS", "second@e2e")


@brokers
def test_an_unregistered_job_is_dead_lettered_and_the_worker_goes_on(broker_url, start_worker):
    start_worker(broker_url, "-c", "1")
    stranger = JobMessage(id="stranger-1", name="another.service.jobs.report", args=(1,))
    publish(encode(stranger, "json"))
    after = demo.add.delay(1, 1)
    assert after.get(timeout=30) == 2
    letter = wait_for(lambda: DeadLetter.objects.filter(job_id="stranger-1").first())
    assert letter.reason == ("unregistered job 'another.service.jobs.report' — is the module "
                             "imported by this worker?")
    assert letter.job_name == "another.service.jobs.report"
    assert b"[[1]" in bytes(letter.body)


@pool_matrix()
def test_retries_end_in_success_with_their_count(broker_url, pool, start_worker):
    start_worker(broker_url, "-P", pool, "-c", "2")
    handle = testjobs.flaky.delay(3)
    assert handle.get(timeout=30) == 2
    assert JobRecord.objects.get(job_id=handle.id).retries == 2


@brokers
def test_a_delayed_job_waits_for_its_time(broker_url, start_worker):
    start_worker(broker_url, "-c", "1")
    sent = time.monotonic()
    handle = demo.add.apply_async((2, 2), countdown=2)
    assert handle.get(timeout=30) == 4
    assert time.monotonic() - sent >= 1.9


@brokers
def test_a_job_routed_to_another_queue_is_left_to_its_workers(broker_url, start_worker):
    start_worker(broker_url, "-c", "1", "-Q", "default")
    handle = testjobs.on_other_queue.delay(21)
    time.sleep(1.5)
    assert handle.state == "PENDING"
    start_worker(broker_url, "-c", "1", "-Q", "other")
    assert handle.get(timeout=30) == 42


@brokers
def test_a_revoked_job_does_not_run(broker_url, start_worker):
    handle = demo.add.delay(1, 2)
    handle.revoke()
    start_worker(broker_url, "-c", "1")
    after = demo.add.delay(3, 4)
    assert after.get(timeout=30) == 7
    assert handle.state == "REVOKED"
    assert JobRecord.objects.get(job_id=handle.id).date_started is None


@brokers
def test_a_revoked_job_that_records_no_result_does_not_run_either(broker_url, start_worker):
    handle = demo.add.apply_async((1, 2), ignore_result=True)
    handle.revoke()
    worker = start_worker(broker_url, "-c", "1")
    assert demo.add.delay(3, 4).get(timeout=30) == 7  # queued after the revoked one
    assert f"{handle.id}] revoked" in worker.output
    assert f"{handle.id}] succeeded" not in worker.output


@pytest.mark.pg
@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_get_wakes_when_the_database_says_the_job_is_done(broker_url, start_worker):
    # PostgreSQL notifies (LISTEN/NOTIFY); on SQLite get() sees the worker's commit.
    start_worker(broker_url, "-c", "1")
    handle = demo.sleep_then_add.delay(0.5, 1, 2)
    # Polling once a minute, only the notification can end this wait within the timeout.
    assert handle.get(timeout=20, interval=60) == 3
    with pytest.raises(ValueError, match="bad"):
        demo.fail.delay("bad").get(timeout=20, interval=60)
    # Too large for the notification's payload: it carries the id, and get() reads the row.
    large = demo.add.delay("a" * 5000, "b" * 5000)
    assert large.get(timeout=20, interval=60) == "a" * 5000 + "b" * 5000
    from django.db import connection

    from jobs.results import result_channel

    if connection.vendor == "postgresql":
        # get() listened on each job's own channel, and closed it before it returned.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_listening_channels()")
            assert cursor.fetchall() == []
        assert result_channel(large.id) == f"jobs_result_{hashlib.md5(large.id.encode()).hexdigest()}"


@brokers
def test_an_expired_job_is_revoked_with_the_reason(broker_url, start_worker):
    handle = demo.add.apply_async((1, 2), expires=0.01)
    time.sleep(0.1)
    start_worker(broker_url, "-c", "1")
    with pytest.raises(Exception, match="expired at"):
        handle.get(timeout=30)
    assert handle.state == "REVOKED"


@pool_matrix()
def test_sigterm_lets_the_running_job_finish(broker_url, pool, start_worker):
    worker = start_worker(broker_url, "-P", pool, "-c", "1")
    handle = demo.sleep_then_add.delay(1.5, 1, 1)
    wait_for(lambda: handle.state == "STARTED", message="the job never started")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert handle.get(timeout=1) == 2
    record = Worker.objects.get(hostname__startswith="jobs@")
    assert record.stopped_at is not None and record.processed >= 1
