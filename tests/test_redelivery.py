"""Messages a broker hands back while the worker still runs their jobs. RabbitMQ closes a
channel whose delivery stayed unacknowledged past its consumer timeout (30 minutes by
default), and delivers its messages again at once, often to the same worker's next
connection: the job runs once all the same, and the worker says why its channel closed. On
Redis and ``django://`` a message whose lease isn't renewed goes to another worker: a long
job on the ``solo`` pool, which holds up the worker's loop, keeps its lease all the same."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis

from jobs.execution import Delivery
from jobs.middleware.redelivery import Redeliveries
from jobs.models import JobRecord
from jobs.outcome import Kind, Outcome
from jobs.testing import running_worker
from tests.conftest import IN_CI, require, use_broker, wait_for
from tests.jobs_app import jobs as testjobs
from tests.test_broadcast import (
    broadcasting,  # noqa: F401 (a fixture)
    delayed_broadcast_runs,
)

pytestmark = pytest.mark.long

AMQP = [pytest.param("amqp", id="amqp")]


def _rabbit(expression: str) -> str:
    done = subprocess.run(["rabbitmqctl", "eval", expression], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


#: (consumer_timeout, channel_tick_interval) in milliseconds: RabbitMQ's own, and this test's.
RABBIT_DEFAULTS, SHORT = ("1800000", "60000"), ("1500", "500")


def _set_rabbit_timeouts(values: tuple[str, str]) -> None:
    assert _rabbit(f"application:set_env(rabbit, consumer_timeout, {values[0]}), "
                   f"application:set_env(rabbit, channel_tick_interval, {values[1]}).") == "ok"


@pytest.fixture
def short_consumer_timeout():
    """RabbitMQ closes a channel whose delivery stays unacknowledged for 1.5 s, and looks
    every half second: settings of the whole server, so the test runs alone (``serial``),
    and they are set back afterwards (to RabbitMQ's own if a run cut short left ours)."""
    require("rabbitmq")
    if shutil.which("rabbitmqctl") is None:
        message = "rabbitmqctl is not installed: apt-get install rabbitmq-server"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    found = _rabbit("{application:get_env(rabbit, consumer_timeout), "
                    "application:get_env(rabbit, channel_tick_interval)}.")
    before = RABBIT_DEFAULTS
    if found.startswith("{{ok,"):  # {{ok,1800000},{ok,60000}}
        before = tuple(part.split(",")[1].rstrip("}") for part in found[1:-1].split("},"))
    if before == SHORT:
        before = RABBIT_DEFAULTS
    _set_rabbit_timeouts(SHORT)
    try:
        yield
    finally:
        _set_rabbit_timeouts(before)


@pytest.fixture
def quick_heartbeat(settings):
    """Workers that renew their messages' leases (4 s in the tests) every half second."""
    settings.JOBS = {**settings.JOBS, "WORKER_HEARTBEAT_INTERVAL": 0.5}


@pytest.fixture
def own_redis_broker(own_redis, settings, transactional_db):
    """A Redis server of the test's own as the broker: the test closes every connection to
    it, which on the shared server would cut other tests' too."""
    use_broker(settings, own_redis.url)
    return own_redis.url


def kill_redis_clients(url: str) -> redis.Redis:
    """Close every worker's Redis connection, as a network cut would; the client that did."""
    client = redis.Redis.from_url(url)
    client.client_kill_filter(_type="normal", skipme=True)
    return client


def runs(directory, name) -> int:
    path = directory / str(name)
    return len(path.read_text().split()) if path.exists() else 0


@pytest.mark.serial
@pytest.mark.parametrize("broker_url", AMQP, indirect=True)
def test_a_job_running_past_rabbitmqs_consumer_timeout_runs_once_and_the_worker_says_why(
        broker_url, short_consumer_timeout, tmp_path, caplog):
    with caplog.at_level("INFO", logger="jobs.worker"), \
            running_worker(pool="threads", concurrency=2):
        result = testjobs.leave_mark.delay(str(tmp_path), 1, 4)
        assert result.get(timeout=30) == 1
        # Its message came back while it ran (the channel closed after 1.5 s): acknowledged
        # once the run ended, not run again. A second run would start now, and take 4 s.
        next_job = testjobs.leave_mark.delay(str(tmp_path), 2, 0)
        assert next_job.get(timeout=30) == 2

    assert runs(tmp_path, 1) == 1
    assert JobRecord.objects.get(job_id=result.id).deliveries == 1
    said = [r.getMessage() for r in caplog.records if "consumer timeout" in r.getMessage()]
    assert said and "consumer_timeout" in said[0], said
    assert f"leave_mark[{result.id}]" in said[0]
    assert any("delivered again while it still runs here" in r.getMessage()
               for r in caplog.records)


@pytest.mark.serial
@pytest.mark.usefixtures("broadcasting")
@pytest.mark.parametrize("broker_url", AMQP, indirect=True)
def test_a_broadcast_copy_waiting_for_its_eta_outlasts_rabbitmqs_consumer_timeout(
        broker_url, short_consumer_timeout, tmp_path):
    # Unacknowledged while it waited, it had the channel closed and went with the worker's
    # queue, never to run.
    delayed_broadcast_runs(tmp_path, 4)


class _Worker:
    """What the middleware asks of the worker, noted."""

    def __init__(self, running) -> None:
        self.running, self.acked, self.held, self.resumed = running, [], [], []
        self.given_back = []
        self.pool = self

    def running_deliveries(self):
        return self.running

    def ack(self, delivery):
        self.acked.append(delivery)

    def ack_lost(self, delivery):
        self.acked.append(delivery)

    def give_back_lost(self, delivery):
        self.given_back.append(delivery)

    def hold(self, delivery):
        self.held.append(delivery)

    def resume(self, delivery, after):
        self.resumed.append(delivery)


def _delivery(tag, job_id="j", retries=0) -> Delivery:
    return Delivery(tag=tag, headers={"id": job_id, "retries": retries, "task": "t"}, body=b"",
                    content_type="application/json", content_encoding="utf-8", queue="default")


@pytest.mark.parametrize("kind", [Kind.SUCCEEDED, Kind.FAILED, Kind.RETRIED, Kind.REJECTED,
                                  Kind.REVOKED])
def test_a_message_back_after_its_orphaned_run_ended_is_acknowledged_not_run(kind):
    running = _delivery((1, 1))
    worker, middleware = _Worker([running]), Redeliveries()
    middleware.connection_lost(worker)
    worker.running = []
    # The run ends (its outcome comes without its delivery) before its message is back.
    middleware.completed(worker, None, Outcome(kind, "j", "t"))

    assert worker.acked == [running]  # its message, where the broker can (Redis)
    assert worker.given_back == []
    back, retry, other = _delivery((2, 1)), _delivery((2, 2), retries=1), _delivery((2, 3), "k")
    assert middleware.receive(worker, back) is None
    assert worker.acked == [running, back]
    assert middleware.receive(worker, retry) is retry  # the next attempt runs
    assert middleware.receive(worker, other) is other


@pytest.mark.parametrize("kind", [Kind.LOST, Kind.TIME_LIMIT, Kind.NO_DATABASE, Kind.REQUEUE])
def test_a_message_that_waited_for_a_run_that_ended_without_an_outcome_runs(kind):
    running = _delivery((1, 1))
    worker, middleware = _Worker([running]), Redeliveries()
    middleware.connection_lost(worker)
    back = _delivery((2, 1))
    assert middleware.receive(worker, back) is None
    assert worker.held == [back]

    middleware.completed(worker, None, Outcome(kind, "j", "t"))
    assert worker.resumed == [back]
    assert worker.acked == []
    # Where the broker kept the message for the run (Redis, django://), it goes back now.
    assert worker.given_back == [running]
    assert middleware.receive(worker, _delivery((2, 2))) is not None  # nothing remembered


@pytest.mark.parametrize("broker_url", [pytest.param("redis", id="redis"),
                                        pytest.param("django", id="django")], indirect=True)
def test_a_job_longer_than_the_visibility_timeout_on_the_solo_pool_runs_once(
        broker_url, quick_heartbeat, tmp_path):
    # The solo pool runs a job in the worker's loop, which made no heartbeat meanwhile: the
    # message's lease ran out (4 s here), and the other worker took the job and ran it too.
    with running_worker(pool="solo", hostname="one@solo"), \
            running_worker(pool="solo", hostname="two@solo"):
        result = testjobs.leave_mark.delay(str(tmp_path), 1, 6)
        assert result.get(timeout=30) == 1
        assert testjobs.leave_mark.delay(str(tmp_path), 2, 0).get(timeout=30) == 2

    assert runs(tmp_path, 1) == 1


def test_a_message_that_waited_for_a_run_whose_outcome_never_came_runs(monkeypatch):
    # A run that could not reach the database ends with no outcome any middleware hears of.
    clock = [100.0]
    monkeypatch.setattr("jobs.middleware.redelivery.time.monotonic", lambda: clock[0])
    running = _delivery((1, 1))
    worker, middleware = _Worker([running]), Redeliveries()
    middleware.connection_lost(worker)
    back = _delivery((2, 1))
    assert middleware.receive(worker, back) is None

    middleware.tick(worker)  # still running: it waits
    worker.running = []
    middleware.tick(worker)  # ended: its outcome may be on its way
    clock[0] += 0.5
    middleware.tick(worker)
    assert worker.resumed == []
    clock[0] += 0.6
    middleware.tick(worker)
    assert worker.resumed == [back]
    assert worker.given_back == [running]


def test_a_long_job_whose_worker_lost_its_redis_connection_runs_once(
        own_redis_broker, settings, quick_heartbeat, tmp_path):
    # The message's visibility timeout (4 s here) was renewed for the current connection's
    # messages only: another worker took the job and ran it again, and once the first run
    # ended, its message was left to come back once more.
    with running_worker(pool="threads", hostname="one@redis"), \
            running_worker(pool="threads", hostname="two@redis"):
        result = testjobs.leave_mark.delay(str(tmp_path), 1, 9)
        wait_for(lambda: JobRecord.objects.filter(job_id=result.id, state="STARTED").exists(),
                 timeout=20, message="the job did not start")
        client = kill_redis_clients(own_redis_broker)
        assert result.get(timeout=30) == 1
        assert testjobs.leave_mark.delay(str(tmp_path), 2, 0).get(timeout=30) == 2
        unacked = f"{settings.JOBS['BROKER_TRANSPORT_OPTIONS']['global_keyprefix']}jobs.unacked"
        wait_for(lambda: client.hlen(unacked) == 0, timeout=5,
                 message="a message of a finished job is left to come back")

    assert runs(tmp_path, 1) == 1


def test_jobs_waiting_in_a_worker_that_lost_its_connection_run_once(
        own_redis_broker, quick_heartbeat, tmp_path):
    # They ran from the worker's own backlog once the running job was done, and again when
    # their messages, handed back with the connection, came to it a second time.
    # Room left in its prefetch window: it is reading from the broker, and sees the loss.
    with running_worker(pool="threads", prefetch_multiplier=8) as worker:
        first = testjobs.leave_mark.delay(str(tmp_path), 0, 3)
        waiting = [testjobs.leave_mark.delay(str(tmp_path), i, 0) for i in (1, 2, 3)]
        wait_for(lambda: worker.pool.waiting() == 3, timeout=20,
                 message="the jobs did not reach the worker")
        kill_redis_clients(own_redis_broker)
        assert [r.get(timeout=30) for r in (first, *waiting)] == [0, 1, 2, 3]
        worker.stop()  # and finish what it has

    assert [runs(tmp_path, i) for i in (0, 1, 2, 3)] == [1, 1, 1, 1]


def kill_postgresql_clients() -> None:
    """Close every other connection to the test database, as a network cut or a proxy's
    restart would: the workers' (the ``django://`` broker's among them). The database is
    this test process's alone (one per pytest-xdist worker): no other test's connection."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.mark.parametrize("broker_url", [pytest.param(name, id=name, marks=pytest.mark.pg)
                                        for name in ("django", "redis")], indirect=True)
def test_a_long_job_whose_worker_lost_its_database_connection_runs_once(
        broker_url, quick_heartbeat, tmp_path, caplog):
    # The job's own connection died while it ran: its outcome could not be written, and it
    # ran again. And the broker's closed: with its channel the worker let go of the leases of
    # the messages it held, the running job's too, for any worker to take (here the same
    # one took it back, and held it until the run ended).
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("ends PostgreSQL connections: run with DATABASE_URL=postgres://...")
    with running_worker(pool="threads", hostname="one@db"):
        result = testjobs.leave_mark.delay(str(tmp_path), 1, 9)
        wait_for(lambda: JobRecord.objects.filter(job_id=result.id, state="STARTED").exists(),
                 timeout=20, message="the job did not start")
        kill_postgresql_clients()
        with running_worker(pool="threads", hostname="two@db"):
            assert result.get(timeout=30) == 1
            assert testjobs.leave_mark.delay(str(tmp_path), 2, 0).get(timeout=30) == 2

    assert runs(tmp_path, 1) == 1
    assert not [r.message for r in caplog.records if "delivered again" in r.message]
