"""Broadcast queues (kombu's ``Broadcast``, a queue bound to a fanout exchange): a job sent
there runs once on every worker consuming it, each run recorded apart; what a broker can't
broadcast is refused by manage.py check and at the call."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.utils import timezone
from kombu import Exchange, Queue

from jobs.broker import new_connection
from jobs.control import broadcast
from jobs.models import DeadLetter, JobRecord, States, UniqueLock
from jobs.results import JobResult
from jobs.testing import capture_jobs, running_worker
from tests.broadcast_settings import BROADCAST_QUEUE, broadcast_jobs
from tests.conftest import AMQP_URL, REDIS_URL, unique, wait_for
from tests.jobs_app import jobs as testjobs

#: The brokers that broadcast (the database broker refuses a broadcast queue).
BROADCASTING = [pytest.param("redis", id="redis"), pytest.param("amqp", id="amqp")]
QUEUES = f"default,{BROADCAST_QUEUE}"


@pytest.fixture
def broadcasting(settings, monkeypatch):
    """``broadcast_tasks`` declared, here and in the worker processes the test starts."""
    settings.JOBS = {**settings.JOBS, **broadcast_jobs()}
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.broadcast_settings")


def runs(directory: Path, name: str) -> list[str]:
    """The workers that ran ``note_worker(directory, name)``, one line per run."""
    path = directory / name
    return sorted(path.read_text().split()) if path.exists() else []


def until_every_worker_hears(directory: Path, workers: list[str]) -> None:
    """Broadcast a warm-up job until each worker has run one: a worker is subscribed to the
    fanout exchange by then (on Redis only subscribers present at the time get a message,
    and a worker subscribes in its first turn of the event loop, after it says it is
    ready)."""
    def heard() -> bool:
        testjobs.note_worker.delay(str(directory), "warm-up")
        return set(runs(directory, "warm-up")) >= set(workers)

    wait_for(heard, timeout=30, interval=0.5, message="a worker never got the warm-up job")


@pytest.mark.parametrize("broker_url", BROADCASTING, indirect=True)
def test_a_broadcast_job_runs_once_on_every_worker(broker_url, broadcasting, start_worker,
                                                   tmp_path):
    workers = ["one@broadcast", "two@broadcast"]
    for name in workers:
        start_worker(broker_url, "-Q", QUEUES, "-c", "1", "-n", name)
    until_every_worker_hears(tmp_path, workers)

    sent = testjobs.note_worker.delay(str(tmp_path), "once")
    plain = testjobs.leave_mark.delay(str(tmp_path), "plain", 0)

    assert plain.get(timeout=30) == "plain"
    wait_for(lambda: runs(tmp_path, "once") == workers, timeout=30,
             message="not run by both workers")
    # Each worker's queue keeps the order sent: once this one has run everywhere, a second
    # copy of the first would have run as well.
    testjobs.note_worker.delay(str(tmp_path), "after")
    wait_for(lambda: runs(tmp_path, "after") == workers, timeout=30)

    assert runs(tmp_path, "once") == workers
    done = JobRecord.objects.filter(parent_id=sent.id)
    assert {row.job_id: (row.state, row.result, row.deliveries) for row in done} == {
        f"{sent.id}@{name}": (States.SUCCESS, name, 1) for name in workers}
    assert sent.state == States.PENDING  # the broadcast has no single outcome; its runs:
    assert sorted(r.id for r in sent.children) == sorted(f"{sent.id}@{name}" for name in workers)
    assert (tmp_path / "plain").read_text().count("\n") == 1
    assert JobRecord.objects.filter(job_id__startswith=plain.id).count() == 1


@pytest.mark.parametrize("broker_url", BROADCASTING, indirect=True)
def test_a_broadcast_queue_paused_on_one_worker_reaches_only_the_other(
        broker_url, broadcasting, start_worker, tmp_path):
    workers = ["one@pause", "two@pause"]
    for name in workers:
        start_worker(broker_url, "-Q", QUEUES, "-c", "1", "-n", name)
    until_every_worker_hears(tmp_path, workers)
    answers = broadcast("cancel_consumer", {"queue": BROADCAST_QUEUE}, ["one@pause"], timeout=5)
    assert answers == {"one@pause": {"ok": f"no longer consuming from {BROADCAST_QUEUE}"}}
    testjobs.note_worker.delay(str(tmp_path), "paused")
    wait_for(lambda: runs(tmp_path, "paused") == ["two@pause"], timeout=30)
    testjobs.note_worker.delay(str(tmp_path), "after")  # in order: "paused" got no further
    wait_for(lambda: runs(tmp_path, "after") == ["two@pause"], timeout=30)
    assert runs(tmp_path, "paused") == ["two@pause"]


@pytest.mark.parametrize("broker_url", BROADCASTING, indirect=True)
def test_a_worker_records_its_run_under_its_own_id(broker_url, broadcasting, tmp_path):
    with running_worker(queues=QUEUES.split(",")) as worker:
        until_every_worker_hears(tmp_path, [worker.hostname])
        sent = testjobs.note_worker.delay(str(tmp_path), "mine")
        run = JobResult(f"{sent.id}@{worker.hostname}")
        assert run.get(timeout=30) == worker.hostname

    row = JobRecord.objects.get(job_id=run.id)
    assert (row.parent_id, row.root_id, row.queue, row.worker) == (
        sent.id, sent.id, BROADCAST_QUEUE, worker.hostname)
    assert not JobRecord.objects.filter(job_id=sent.id).exists()


def send_like_celery(job_id: str, name: str, args: list, eta: datetime) -> None:
    """Send job ``name`` to the broadcast queue's exchange as a Celery producer does (its
    message protocol 2), with an ``eta``: jobs' own call refuses that."""
    headers = {"lang": "py", "task": name, "id": job_id, "shadow": None,
               "eta": eta.isoformat(), "expires": None, "group": None, "group_index": None,
               "retries": 0, "timelimit": [None, None], "root_id": job_id, "parent_id": None,
               "argsrepr": repr(args), "kwargsrepr": "{}", "origin": "celery@producer",
               "ignore_result": False}
    body = [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    exchange = Exchange(BROADCAST_QUEUE, type="fanout")
    with new_connection() as connection:
        connection.Producer().publish(body, exchange=exchange, routing_key="", declare=[exchange],
                                      headers=headers, serializer="json")


def delayed_broadcast_runs(directory: Path, seconds: float) -> tuple[str, str, datetime]:
    """A worker consuming the broadcast queue in this process gets a Celery producer's
    broadcast of ``note_worker(directory, "later")`` due in ``seconds``, and runs it: the
    job's id, the worker's run's id and the eta."""
    with running_worker(queues=QUEUES.split(",")) as worker:
        until_every_worker_hears(directory, [worker.hostname])
        job_id = unique("broadcast-eta")
        eta = timezone.now() + timedelta(seconds=seconds)
        send_like_celery(job_id, "tests.jobs_app.jobs.note_worker", [str(directory), "later"],
                         eta)
        run = JobResult(f"{job_id}@{worker.hostname}")
        assert run.get(timeout=30) == worker.hostname
    assert runs(directory, "later") == [worker.hostname]
    return job_id, run.id, eta


@pytest.mark.parametrize("broker_url", BROADCASTING, indirect=True)
def test_a_celery_producers_delayed_broadcast_job_runs_on_the_worker_when_due(
        broker_url, broadcasting, tmp_path):
    # Parked, it went back to the broker by the queue's name, where no worker consumes it.
    job_id, run_id, eta = delayed_broadcast_runs(tmp_path, 2)  # past PARK_HORIZON

    assert JobRecord.objects.get(job_id=run_id).date_started >= eta
    assert not JobRecord.objects.filter(job_id=job_id).exists()


@pytest.mark.parametrize("broker_url", BROADCASTING, indirect=True)
def test_a_unique_broadcast_job_can_be_sent_again_once_a_run_is_done(broker_url, broadcasting,
                                                                   tmp_path):
    with running_worker(queues=QUEUES.split(",")) as worker:
        until_every_worker_hears(tmp_path, [worker.hostname])
        first = testjobs.refresh_report.apply_async((7,), queue=BROADCAST_QUEUE)
        assert JobResult(f"{first.id}@{worker.hostname}").get(timeout=30) == 7
        # Freed once the run's outcome is recorded (kept until it expired before).
        wait_for(lambda: not UniqueLock.objects.filter(job_id=first.id).exists(), timeout=10,
                 message="the broadcast's lock was kept after its run")
        second = testjobs.refresh_report.apply_async((7,), queue=BROADCAST_QUEUE)
        assert second.id != first.id
        assert JobResult(f"{second.id}@{worker.hostname}").get(timeout=30) == 7


@pytest.mark.parametrize("broker_url", BROADCASTING, indirect=True)
def test_revoking_a_broadcast_job_stops_each_workers_copy(broker_url, broadcasting, tmp_path):
    job_id = unique("broadcast")
    JobResult(job_id).revoke()
    with running_worker(queues=QUEUES.split(",")) as worker:
        until_every_worker_hears(tmp_path, [worker.hostname])
        testjobs.note_worker.apply_async((str(tmp_path), "revoked"), task_id=job_id)
        run = wait_for(lambda: JobRecord.objects.filter(
            job_id=f"{job_id}@{worker.hostname}", state=States.REVOKED).first(), timeout=30)

    assert runs(tmp_path, "revoked") == []
    assert run.result["exc_type"] == "JobRevoked"


@pytest.mark.parametrize("broker_url", BROADCASTING, indirect=True)
def test_terminating_a_broadcast_job_kills_every_running_copy(broker_url, broadcasting,
                                                              start_worker, tmp_path):
    workers = ["one@terminate", "two@terminate"]
    processes = [start_worker(broker_url, "-Q", QUEUES, "-c", "1", "-P", "prefork", "-n", name)
                 for name in workers]
    until_every_worker_hears(tmp_path, workers)
    release = tmp_path / "release"
    sent = testjobs.wait_for_file.apply_async((str(release), "done"), queue=BROADCAST_QUEUE)
    copies = [f"{sent.id}@{name}" for name in workers]
    wait_for(lambda: JobRecord.objects.filter(job_id__in=copies, state=States.STARTED)
             .count() == 2, timeout=30, message="the copies did not start")

    sent.revoke(terminate=True)
    wait_for(lambda: all("Terminating job" in p.output for p in processes), timeout=30)
    release.touch()  # a copy still running would now succeed
    testjobs.note_worker.delay(str(tmp_path), "after")
    wait_for(lambda: runs(tmp_path, "after") == workers, timeout=30)

    assert set(JobRecord.objects.filter(job_id__in=copies).values_list("state", flat=True)) \
        == {States.REVOKED}


@pytest.mark.parametrize("broker_url", BROADCASTING, indirect=True)
def test_a_copy_that_kills_its_process_counts_toward_its_own_workers_cap_only(
        broker_url, broadcasting, start_worker, tmp_path):
    workers = ["one@poison", "two@poison"]
    for name in workers:
        start_worker(broker_url, "-Q", QUEUES, "-c", "1", "-P", "prefork", "-n", name)
    until_every_worker_hears(tmp_path, workers)
    sent = testjobs.die_always.apply_async(queue=BROADCAST_QUEUE)
    copies = [f"{sent.id}@{name}" for name in workers]

    if broker_url.startswith("amqp"):
        # Handed back to the worker's own queue each time its process dies, up to the cap.
        wait_for(lambda: JobRecord.objects.filter(job_id__in=copies, state=States.FAILURE)
                 .count() == 2, timeout=60, message="the copies did not fail")
        rows = JobRecord.objects.filter(job_id__in=copies)
        assert {row.deliveries for row in rows} == {6}
        assert "started 6 times without finishing" in rows[0].result["exc_message"][0]
        assert sorted(DeadLetter.objects.values_list("job_id", flat=True)) == sorted(copies)
    else:
        # PUB/SUB: nothing to hand back, so a lost copy is not delivered again.
        wait_for(lambda: JobRecord.objects.filter(job_id__in=copies).count() == 2, timeout=30)
        testjobs.note_worker.delay(str(tmp_path), "after")
        wait_for(lambda: runs(tmp_path, "after") == workers, timeout=30)
        rows = JobRecord.objects.filter(job_id__in=copies)
        assert {(row.state, row.deliveries) for row in rows} == {(States.STARTED, 1)}
    assert not JobRecord.objects.filter(job_id=sent.id).exists()


@pytest.mark.parametrize("broker_url", BROADCASTING, indirect=True)
def test_a_copy_whose_process_died_is_recorded_as_its_workers_run(broker_url, broadcasting,
                                                                   start_worker, tmp_path):
    start_worker(broker_url, "-Q", QUEUES, "-c", "1", "-P", "prefork", "-n", "one@lost")
    until_every_worker_hears(tmp_path, ["one@lost"])
    sent = testjobs.die_once.apply_async(queue=BROADCAST_QUEUE)  # reject_on_worker_lost=False

    run = JobResult(f"{sent.id}@one@lost")
    with pytest.raises(Exception, match="the process running the job died"):
        run.get(timeout=30)
    assert not JobRecord.objects.filter(job_id=sent.id).exists()


def test_a_broadcast_job_cant_be_delayed_nor_retried(settings):
    settings.JOBS = {**settings.JOBS, **broadcast_jobs(), "BROKER_URL": REDIS_URL}
    with capture_jobs() as captured:
        testjobs.note_worker.delay("/tmp", "now")
        with pytest.raises(ValueError, match="a broadcast job can't be delayed"):
            testjobs.note_worker.apply_async(("/tmp", "later"), countdown=10)
        with pytest.raises(ValueError, match="a broadcast job is not retried"):
            testjobs.note_worker.apply_async(("/tmp", "again"), retries=1)
    [message] = captured.messages
    assert (message.queue, message.exchange, message.routing_key) == (
        BROADCAST_QUEUE, BROADCAST_QUEUE, "")


def test_a_job_sent_with_queue_to_a_broadcast_queue_goes_through_its_exchange(settings):
    settings.JOBS = {**settings.JOBS, **broadcast_jobs(), "BROKER_URL": AMQP_URL}
    with capture_jobs() as captured:
        testjobs.add_untracked.apply_async((1, 2), queue=BROADCAST_QUEUE)
        testjobs.add_untracked.apply_async((1, 2), queue="other")
    assert [(m.queue, m.exchange, m.routing_key) for m in captured.messages] == [
        (BROADCAST_QUEUE, BROADCAST_QUEUE, ""), ("other", None, None)]


def test_the_database_broker_refuses_a_broadcast_job_at_the_call(settings):
    settings.JOBS = {**settings.JOBS, **broadcast_jobs(), "BROKER_URL": "django://"}
    with capture_jobs(), pytest.raises(ValueError, match="django:// can't broadcast"):
        testjobs.note_worker.delay("/tmp", "now")


@pytest.mark.parametrize("url, refused", [
    ("django://", True), (REDIS_URL, False), (AMQP_URL, False)])
def test_the_check_refuses_a_broadcast_queue_where_the_broker_cant_broadcast(settings, url,
                                                                            refused):
    settings.JOBS = {**settings.JOBS, **broadcast_jobs(), "BROKER_URL": url}
    found = [m.msg for m in run_checks() if m.id == "jobs.E016"]
    assert bool(found) is refused, found
    if refused:
        assert f"queue {BROADCAST_QUEUE!r} is bound to a fanout exchange" in found[0]
        assert "django:// can't" in found[0]


def test_the_check_refuses_a_broadcast_queue_as_the_default(settings):
    settings.JOBS = {**settings.JOBS, "BROKER_URL": REDIS_URL, "TASK_DEFAULT_QUEUE": "all",
                     "TASK_QUEUES": [Queue("all", Exchange("all", "fanout"))]}
    found = [m.msg for m in run_checks() if m.id == "jobs.E016"]
    assert any("TASK_DEFAULT_QUEUE 'all' is a broadcast queue" in text for text in found), found


def test_each_worker_consumes_a_broadcast_queue_of_its_own(settings):
    settings.JOBS = {**settings.JOBS, **broadcast_jobs(), "BROKER_URL": REDIS_URL}
    from jobs.broker import Broker

    first, second = Broker.for_url(REDIS_URL), Broker.for_url(REDIS_URL)
    [own] = first.consuming(None, [BROADCAST_QUEUE])
    [other] = second.consuming(None, [BROADCAST_QUEUE])

    assert own.name != other.name and own.name.startswith(f"{BROADCAST_QUEUE}.")
    assert own.exchange == Exchange(BROADCAST_QUEUE, "fanout") == other.exchange
    assert own.auto_delete and own.no_ack  # Redis: PUB/SUB, nothing to acknowledge
    assert first.consuming(None, ["default"])[0].name == "default"
