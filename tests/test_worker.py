"""The worker under failure: time limits, dying processes, poison messages, recycling,
revocation, shutdown. Pool-level behaviour, shown on the database broker (no server needed)
and, where the broker matters, on each broker; what more than one pool does, on each of them."""

from __future__ import annotations

import signal
import time

import pytest
from django.utils import timezone

from jobs import JobResult
from jobs.models import DeadLetter, JobRecord, Message, Worker
from jobs.testing import running_worker
from project.demo import jobs as demo
from tests.conftest import broker_params, pool_matrix, wait_for
from tests.jobs_app import jobs as testjobs

pytestmark = [pytest.mark.e2e, pytest.mark.long]
database_broker = pytest.mark.parametrize(
    "broker_url", [pytest.param("django", marks=pytest.mark.pg)], indirect=True)
brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


@database_broker
def test_a_hard_time_limit_kills_the_job_and_the_worker_goes_on(broker_url, start_worker):
    start_worker(broker_url, "-c", "1")
    stuck = testjobs.spin_forever.delay()
    after = demo.add.delay(1, 2)
    with pytest.raises(Exception, match="passed its hard time limit"):
        stuck.get(timeout=20)
    assert stuck.state == "FAILURE"
    assert JobRecord.objects.get(job_id=stuck.id).result["exc_type"] == "TimeLimitExceeded"
    assert after.get(timeout=20) == 3


@pool_matrix(("prefork", "solo"), every_broker=False)  # threads: see docs/worker.md
def test_a_soft_time_limit_lets_the_job_clean_up(broker_url, pool, start_worker):
    start_worker(broker_url, "-P", pool, "-c", "1")
    assert testjobs.tidy_up_when_told.delay().get(timeout=20) == "cleaned up"


@database_broker
def test_a_job_whose_process_died_fails_with_worker_lost_when_not_redelivered(
        broker_url, start_worker):
    start_worker(broker_url, "-c", "1")
    handle = testjobs.die_once.delay()
    with pytest.raises(Exception, match="the process running the job died"):
        handle.get(timeout=20)
    assert JobRecord.objects.get(job_id=handle.id).result["exc_type"] == "WorkerLostError"
    assert demo.add.delay(2, 2).get(timeout=20) == 4


@database_broker
def test_a_poison_job_is_dead_lettered_after_max_deliveries(broker_url, start_worker):
    start_worker(broker_url, "-c", "1")
    handle = testjobs.die_always.delay()
    with pytest.raises(Exception, match="started 6 times without finishing"):
        handle.get(timeout=40)
    letter = DeadLetter.objects.get(job_id=handle.id)
    assert "TASK_MAX_DELIVERIES = 5" in letter.reason
    assert demo.add.delay(2, 3).get(timeout=20) == 5


@database_broker
def test_a_poison_job_that_records_nothing_is_dead_lettered_too(broker_url, start_worker):
    start_worker(broker_url, "-c", "1")
    handle = testjobs.die_always_quietly.delay()
    letter = wait_for(lambda: DeadLetter.objects.filter(job_id=handle.id).first(), timeout=40,
                      message="the poison job was not dead-lettered")
    assert "lost the process running it 5 times (TASK_MAX_DELIVERIES = 5)" in letter.reason
    assert letter.job_name == "tests.jobs_app.jobs.die_always_quietly"
    with pytest.raises(Exception, match="lost the process running it 5 times"):
        handle.get(timeout=5)
    assert demo.add.delay(2, 3).get(timeout=20) == 5


@database_broker
def test_max_tasks_per_child_replaces_the_child(broker_url, start_worker):
    start_worker(broker_url, "-c", "1", "--max-tasks-per-child", "2")
    pids = [testjobs.pid.delay().get(timeout=20) for _ in range(6)]
    assert len(set(pids)) == 3
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]


@database_broker
def test_max_memory_per_child_replaces_the_child(broker_url, start_worker):
    start_worker(broker_url, "-c", "1", "--max-memory-per-child", "1000")  # 1 MB: always over
    pids = [testjobs.pid.delay().get(timeout=20) for _ in range(3)]
    assert len(set(pids)) == 3


@database_broker
def test_jobs_waiting_while_a_child_leaves_for_its_memory_limit_all_run(broker_url,
                                                                       start_worker):
    handles = testjobs.pid.delay_many([()] * 6)  # queued first: the worker holds several at once
    worker = start_worker(broker_url, "-c", "1", "--max-memory-per-child", "1000")
    pids = [handle.get(timeout=30) for handle in handles]
    assert len(set(pids)) == 6  # each in a fresh child
    assert "died" not in worker.output and "lost" not in worker.output


@database_broker
def test_revoke_with_terminate_stops_a_running_job(broker_url, start_worker):
    start_worker(broker_url, "-c", "1")
    handle = demo.sleep_then_add.delay(30, 1, 1)
    wait_for(lambda: handle.state == "STARTED", message="the job never started")
    started = time.monotonic()
    handle.revoke(terminate=True)
    assert demo.add.delay(1, 1).get(timeout=20) == 2
    assert time.monotonic() - started < 10
    assert handle.state == "REVOKED"


@pool_matrix(every_broker=False)
def test_a_stop_requested_from_the_admin_shuts_the_worker_down(broker_url, pool, start_worker):
    worker = start_worker(broker_url, "-P", pool, "-c", "1")
    record = wait_for(lambda: Worker.objects.filter(stopped_at=None).first())
    Worker.objects.filter(pk=record.pk).update(stop_requested_at=timezone.now())
    assert worker.wait(20) == 0
    assert Worker.objects.get(pk=record.pk).stopped_at is not None


@pool_matrix(every_broker=False)
def test_a_second_signal_leaves_at_once_and_the_job_runs_again_later(broker_url, pool, start_worker):
    first = start_worker(broker_url, "-P", pool, "-c", "1")
    handle = demo.sleep_then_add.delay(4, 2, 3)
    wait_for(lambda: handle.state == "STARTED", message="the job never started")
    first.signal(signal.SIGTERM)
    time.sleep(0.3)
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 1
    start_worker(broker_url, "-P", pool, "-c", "1")
    assert handle.get(timeout=40) == 5


@pool_matrix()
def test_warm_shutdown_hands_back_jobs_it_had_not_started(broker_url, pool, start_worker):
    first = start_worker(broker_url, "-P", pool, "-c", "1", "--prefetch-multiplier", "4")
    running = demo.sleep_then_add.delay(1.5, 0, 1)
    waiting = [demo.add.delay(i, 0) for i in range(3)]
    wait_for(lambda: running.state == "STARTED", message="the job never started")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert running.get(timeout=1) == 1
    assert all(JobResult(h.id).state == "PENDING" for h in waiting)
    start_worker(broker_url, "-P", pool, "-c", "1")
    assert [h.get(timeout=30) for h in waiting] == [0, 1, 2]
    assert demo.add.delay(1, 1).get(timeout=30) == 2  # queued after anything handed back
    assert JobRecord.objects.get(job_id=running.id).deliveries == 1  # it finished: not run again


@pool_matrix()
def test_prefetch_multiplier_one_keeps_short_jobs_from_waiting_behind_a_long_one(
        broker_url, pool, start_worker):
    start_worker(broker_url, "-P", pool, "-c", "1", "--prefetch-multiplier", "1", "-n", "busy@e2e")
    long = demo.sleep_then_add.delay(6, 0, 0)
    wait_for(lambda: long.state == "STARTED", message="the long job never started")
    start_worker(broker_url, "-P", pool, "-c", "1", "--prefetch-multiplier", "1", "-n", "free@e2e")
    short = [demo.add.delay(i, i) for i in range(4)]
    assert [h.get(timeout=5) for h in short] == [0, 2, 4, 6]
    assert {JobRecord.objects.get(job_id=h.id).worker for h in short} == {"free@e2e"}
    assert long.state == "STARTED"


@brokers
def test_a_dead_letter_requeued_from_the_admin_runs(broker_url, start_worker, admin_client):
    from jobs.messages import JobMessage, encode

    envelope = encode(JobMessage(id="back-again", name="project.demo.jobs.add", args=(20, 22)),
                      "json")
    letter = DeadLetter.objects.create(
        queue="default", job_id="back-again", job_name="project.demo.jobs.add",
        reason="unregistered job 'project.demo.jobs.add'", content_type=envelope.content_type,
        content_encoding=envelope.content_encoding, headers=envelope.headers, properties={},
        body=envelope.payload.encode())
    start_worker(broker_url, "-c", "1")
    response = admin_client.post("/admin/jobs/deadletter/", {
        "action": "requeue", "_selected_action": [letter.pk]})
    assert response.status_code == 302
    assert JobResult("back-again").get(timeout=30) == 42
    assert not DeadLetter.objects.filter(pk=letter.pk).exists()


@brokers
def test_a_delayed_job_survives_the_restart_of_its_worker(broker_url, start_worker):
    first = start_worker(broker_url, "-c", "1")
    handle = demo.add.apply_async((5, 5), countdown=3)
    # Parked by the worker as a row of the database (Redis, RabbitMQ), or a row from the start.
    wait_for(lambda: Message.objects.exists(), message="the delayed job was not parked")
    first.kill_all(signal.SIGKILL)
    start_worker(broker_url, "-c", "1")
    assert handle.get(timeout=30) == 10


@pool_matrix(every_broker=False)
def test_acks_late_false_does_not_run_a_job_again_after_its_worker_died(broker_url, pool, start_worker):
    first = start_worker(broker_url, "-P", pool, "-c", "1")
    handle = testjobs.at_most_once.delay(3)
    wait_for(lambda: handle.state == "STARTED", message="the job never started")
    first.kill_all(signal.SIGKILL)
    start_worker(broker_url, "-P", pool, "-c", "1")
    assert demo.add.delay(1, 1).get(timeout=20) == 2
    time.sleep(5)  # longer than the lease (visibility_timeout 4 s in tests)
    assert handle.state == "STARTED"
    assert JobRecord.objects.get(job_id=handle.id).deliveries == 1


def test_publishing_to_a_broker_that_is_down_fails_fast_with_a_clear_error(settings):
    from jobs.exceptions import PublishError

    settings.JOBS = {"BROKER_URL": "redis://127.0.0.1:1/0"}  # nothing listens on port 1
    started = time.monotonic()
    with pytest.raises(PublishError, match=r"could not send job project.demo.jobs.add\[.*\] to "
                                           r"'redis://127.0.0.1:1/0'"):
        demo.add.delay(1, 2)
    assert time.monotonic() - started < 10


@pytest.mark.pg
@database_broker
def test_jobs_succeed_after_the_database_dropped_the_workers_connections(broker_url,
                                                                          start_worker):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("terminates server connections: PostgreSQL only (pytest -m pg)")
    start_worker(broker_url, "-c", "2")
    assert demo.add.delay(1, 1).get(timeout=20) == 2
    with connection.cursor() as cursor:  # what a database restart does to every client
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    handles = [demo.add.delay(i, i) for i in range(10)]
    assert [h.get(timeout=30) for h in handles] == [2 * i for i in range(10)]
    assert not JobRecord.objects.filter(state="FAILURE").exists()


@pool_matrix(every_broker=False)
def test_a_rate_limit_spaces_the_starts_of_a_job(broker_url, pool, start_worker):
    start_worker(broker_url, "-P", pool, "-c", "2")
    handles = [testjobs.limited.delay(i) for i in range(6)]
    assert [h.get(timeout=30) for h in handles] == list(range(6))
    starts = sorted(JobRecord.objects.filter(name="tests.jobs_app.jobs.limited")
                    .values_list("date_started", flat=True))
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.15  # five a second: one every 0.2 s
    assert (starts[-1] - starts[0]).total_seconds() >= 0.9


# The prefetch window, wider while jobs are short (jobs.middleware.prefetch) -------------------


def test_the_window_widens_in_steps_of_the_base_with_the_rate_jobs_finish():
    from jobs.middleware.prefetch import window_for

    assert window_for(8, 2, 0) == 8  # idle, or long jobs: Celery's 4 per slot
    assert window_for(8, 2, 100) == 8  # 5 jobs in 50 ms: the base holds them
    assert window_for(8, 2, 300) == 32  # 17: doubled until it holds them
    assert window_for(8, 2, 100_000) == 32  # at most 16 per slot
    assert window_for(4, 1, 150) == 16


@pytest.mark.parametrize("broker_url", [pytest.param("redis", id="redis"),
                                        pytest.param("django", id="django")], indirect=True)
def test_short_jobs_widen_the_window_and_a_long_run_hands_back_what_waits_beyond_it(
        broker_url, transactional_db):
    from jobs.control.commands import dispatch

    windows = []
    with running_worker(pool="threads", concurrency=1, hostname="busy@window") as busy:
        burst = [demo.add.delay(i, 1) for i in range(400)]
        long = demo.sleep_then_add.delay(6, 0, 0)
        short = [demo.add.delay(i, i) for i in range(8)]
        wait_for(lambda: windows.append(dispatch(busy, "stats", {})["prefetch_count"])
                 or long.state == "STARTED", timeout=60, message="the long job never started")
        assert burst[-1].get(timeout=1) == 400
        assert max(windows) > 4  # wider than Celery's 4 per slot while the jobs were short
        # Its one slot runs a long job: what waits there beyond its base window (4, the
        # running one included) goes back to the broker, for the worker started now.
        with running_worker(pool="threads", concurrency=1, prefetch_multiplier=1,
                            hostname="free@window"):
            wait_for(lambda: sum(h.ready() for h in short) >= 5, timeout=5,
                     message="the short jobs waited behind the long one")
            assert long.state == "STARTED"
        assert [h.get(timeout=15) for h in short] == [2 * i for i in range(8)]
        assert dispatch(busy, "stats", {})["prefetch_count"] == 4

    ran_on = [JobRecord.objects.get(job_id=h.id).worker for h in short]
    assert ran_on.count("busy@window") <= 3
