"""Chaos: workers killed, brokers restarted, jobs failing at random, garbage on the queue.
Nothing may be lost; every job ends in a final state. Lean versions of bench/chaos.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest
from kombu import Connection

from jobs.broker import Broker, queue_for
from jobs.models import DeadLetter, JobRecord
from project.demo import jobs as demo
from tests.conftest import ROOT, broker_params, use_broker, wait_for
from tests.jobs_app import jobs as testjobs

pytestmark = [pytest.mark.e2e, pytest.mark.long]
brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)

N = int(os.environ.get("CHAOS_JOBS", "2000"))  # bench/chaos.py runs it bigger


def done(name: str) -> int:
    return JobRecord.objects.filter(name=name, state__in=("SUCCESS", "FAILURE")).count()


def unfinished(name: str, handles) -> str:
    """What became of the jobs that didn't finish, for a failure message."""
    rows = {r.job_id: r for r in JobRecord.objects.filter(name=name)}
    missing = [h.id for h in handles if h.id not in rows]
    stuck = [(r.job_id, r.state, r.worker, r.deliveries) for r in rows.values()
             if r.state not in ("SUCCESS", "FAILURE")]
    return f"never started: {len(missing)} {missing[:5]}; stuck: {stuck[:10]}"


def report(**figures) -> None:
    """Keep the figures of a run where .ci/run prints them (artifacts/chaos.jsonl)."""
    folder = ROOT / "artifacts"
    folder.mkdir(exist_ok=True)
    with open(folder / "chaos.jsonl", "a") as out:
        out.write(json.dumps(figures) + "\n")


@pytest.mark.parametrize("broker_url", [*broker_params(), pytest.param("rediss", id="rediss")],
                         indirect=True)  # rediss: Redis over TLS
def test_workers_killed_three_times_lose_no_job(broker_url, start_worker):
    start_worker(broker_url, "-c", "2", "-n", "steady@chaos")
    victim = start_worker(broker_url, "-c", "2", "-n", "victim-0@chaos")
    handles = testjobs.work.delay_many([(i, 0.002) for i in range(N)])
    for kill in range(1, 4):
        target = kill * N // 5
        wait_for(lambda: done("tests.jobs_app.jobs.work") >= target, timeout=120,  # noqa: B023
                 interval=0.1, message=f"the run stalled before kill {kill}")
        victim.kill_all(9)
        victim = start_worker(broker_url, "-c", "2", "-n", f"victim-{kill}@chaos")
    try:
        wait_for(lambda: done("tests.jobs_app.jobs.work") == N, timeout=60 + N / 100, interval=0.2)
    except AssertionError:
        raise AssertionError(unfinished("tests.jobs_app.jobs.work", handles)) from None
    rows = {r.job_id: r for r in JobRecord.objects.filter(name="tests.jobs_app.jobs.work")}
    assert [rows[h.id].state for h in handles] == ["SUCCESS"] * N
    assert [rows[h.id].result for h in handles] == list(range(N))
    ran_twice = sum(1 for r in rows.values() if r.deliveries > 1)
    report(test="sigkill x3", broker=broker_url.split(":")[0], jobs=N, lost=0,
           ran_more_than_once=ran_twice)


def _wait_port(port: int, up: bool, timeout: float = 60) -> None:
    def state():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return up
        except OSError:
            return not up

    wait_for(state, timeout=timeout, interval=0.2, message=f"port {port} never went {up}")


def restart_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
    _wait_port(5672, up=True)


def run_through_a_restart(broker_url: str, start_worker, restart) -> None:
    """Two workers drain N jobs; ``restart()`` restarts their broker a fifth of the way
    through; every job must end, once recorded, with its result."""
    start_worker(broker_url, "-c", "2")
    start_worker(broker_url, "-c", "2")
    handles = testjobs.work.delay_many([(i, 0.002) for i in range(N)])
    wait_for(lambda: done("tests.jobs_app.jobs.work") >= N // 5, timeout=120, interval=0.1)
    restart()
    wait_for(lambda: done("tests.jobs_app.jobs.work") == N, timeout=180, interval=0.2,
             message="not every job finished after the restart")
    rows = {r.job_id: r for r in JobRecord.objects.filter(name="tests.jobs_app.jobs.work")}
    assert sorted(rows[h.id].result for h in handles) == list(range(N))
    report(test="broker restart", broker=broker_url.split(":")[0], jobs=N, lost=0,
           ran_more_than_once=sum(1 for r in rows.values() if r.deliveries > 1))


def test_a_redis_restart_mid_run_loses_no_job(own_redis, settings, start_worker):
    # A server of the test's own, stopped keeping its data (as a production server with
    # persistence is) and started again: a restart of the shared one would cut every other
    # test's connections.
    use_broker(settings, own_redis.url)

    def restart():
        own_redis.stop(save=True)
        own_redis.start()

    run_through_a_restart(own_redis.url, start_worker, restart)


@pytest.mark.serial  # RabbitMQ is the machine's: no other test runs meanwhile
@pytest.mark.parametrize("broker_url", ["amqp"], indirect=True)
def test_a_rabbitmq_restart_mid_run_loses_no_job(broker_url, start_worker):
    run_through_a_restart(broker_url, start_worker, restart_rabbitmq)


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_random_failures_end_in_success_or_failure_with_the_right_retry_count(
        broker_url, start_worker):
    start_worker(broker_url, "-c", "2")
    start_worker(broker_url, "-c", "2")
    n = 1000
    handles = testjobs.unreliable.delay_many([(i,) for i in range(n)])
    wait_for(lambda: done("tests.jobs_app.jobs.unreliable") == n, timeout=180, interval=0.2,
             message="some jobs never reached SUCCESS or FAILURE")
    rows = {r.job_id: r for r in JobRecord.objects.filter(name="tests.jobs_app.jobs.unreliable")}
    for i, handle in enumerate(handles):
        failures = 0
        while failures <= 3 and testjobs.fails_on(i, failures):
            failures += 1
        row = rows[handle.id]
        if failures > 3:
            assert (row.state, row.retries) == ("FAILURE", 3), i
            assert row.result["exc_type"] == "ConnectionError"
        else:
            assert (row.state, row.retries, row.result) == ("SUCCESS", failures, i), i
    assert not JobRecord.objects.exclude(state__in=("SUCCESS", "FAILURE")).exists()


@brokers
def test_garbage_is_dead_lettered_and_good_jobs_run_around_it(broker_url, start_worker):
    start_worker(broker_url, "-c", "2")
    garbage = [
        dict(body=os.urandom(64), content_type="application/json",
             headers={"task": "project.demo.jobs.add", "id": "g1"}),
        dict(body=b"\x80\x04K\x01.", content_type="application/x-python-serialize",
             content_encoding="binary", headers={"task": "project.demo.jobs.add", "id": "g2"}),
        dict(body=b"[[1, 2], {}, {}]", content_type="application/json", headers={}),
        dict(body=b"[[1, 2], {}, {}]", content_type="application/json",
             headers={"task": "nobody.has.this", "id": "g4"}),
        dict(body=b'{"args": [1, 2]}', content_type="application/json",
             headers={"task": "project.demo.jobs.add", "id": "g5"}),
        dict(body=json.dumps([["x" * 5_000_000], {}, {}]).encode(),  # > 4 MiB, the default
             content_type="application/json",
             headers={"task": "project.demo.jobs.add", "id": "g6"}),
    ]
    good = []
    options = Broker.for_url(broker_url).transport_options
    with Connection(broker_url, transport_options=options) as conn:
        producer = conn.Producer()
        for item in garbage:
            good.append(demo.add.delay(len(good), 1))
            producer.publish(item.pop("body"), exchange="", routing_key="default",
                             declare=[queue_for("default")],
                             content_encoding=item.pop("content_encoding", "utf-8"), **item)
    assert [h.get(timeout=30) for h in good] == [i + 1 for i in range(len(garbage))]
    letters = wait_for(lambda: (list(DeadLetter.objects.order_by("id"))
                                if DeadLetter.objects.count() == len(garbage) else None),
                       timeout=20, message="not every bad message was dead-lettered")
    reasons = " | ".join(letter.reason for letter in letters)
    assert "can't decode the body" in reasons
    assert "content type 'application/x-python-serialize' is not accepted" in reasons
    assert "not a job message" in reasons
    assert "unregistered job 'nobody.has.this'" in reasons
    assert "the body is not [args, kwargs, embed]" in reasons
    assert "more than TASK_MAX_MESSAGE_SIZE" in reasons


@pytest.mark.parametrize("broker_url", [pytest.param("redis", id="redis")], indirect=True)
def test_raw_garbage_pushed_on_a_redis_list_is_dead_lettered_too(broker_url, start_worker):
    import redis

    from tests.conftest import TEST_TRANSPORT_OPTIONS

    key = TEST_TRANSPORT_OPTIONS["global_keyprefix"] + "default"
    garbage = [b"hello, not json", b'{"no": "properties"}', b"[1, 2, 3]",
               b'{"properties": 5}', b'{"properties": {"delivery_tag": 7}}', b"\xff\xfe{"]
    client = redis.Redis.from_url(broker_url)
    good = []
    for item in garbage:  # queued before the worker starts: claimed together with jobs
        good.append(demo.add.delay(len(good), 1))
        client.lpush(key, item)
    start_worker(broker_url, "-c", "2")
    assert [h.get(timeout=30) for h in good] == [i + 1 for i in range(len(garbage))]
    letters = wait_for(lambda: (list(DeadLetter.objects.all())
                                if DeadLetter.objects.count() == len(garbage) else None),
                       timeout=20, message="not every raw item was dead-lettered")
    assert sorted(bytes(letter.body) for letter in letters) == sorted(garbage)
    assert {(letter.queue, letter.reason) for letter in letters} == {
        ("default", "not a job message: the 'task' and 'id' headers are missing")}
    unacked = TEST_TRANSPORT_OPTIONS["global_keyprefix"] + "jobs.unacked"
    wait_for(lambda: client.hlen(unacked) == 0, timeout=10,
             message="messages left in the unacked records")


@pytest.mark.parametrize("broker_url", [pytest.param("redis", id="redis")], indirect=True)
def test_an_idle_worker_whose_claim_script_was_flushed_loads_it_again(broker_url, start_worker):
    import redis

    start_worker(broker_url, "-c", "1")
    assert demo.add.delay(1, 1).get(timeout=30) == 2  # the worker is up and waiting now
    redis.Redis.from_url(broker_url).script_flush()  # as a Redis restart would
    handles = [demo.add.delay(i, 1) for i in range(5)]
    assert [h.get(timeout=30) for h in handles] == [1, 2, 3, 4, 5]
