"""Priorities mean one thing on every broker: the highest number runs first. A value the
broker can't honour is an error where it is given, never a silent clamp."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from django.core.checks import run_checks
from kombu import Connection, Exchange, Queue

from jobs import job
from jobs.broker import Broker, get_broker
from jobs.registry import registry
from jobs.testing import capture_jobs, running_worker
from project.demo import jobs as demo
from tests.conftest import broker_params, use_broker, wait_for

gate = threading.Event()
ran: list[str] = []


@job
def hold():
    gate.wait(30)


@job
def note(label):
    ran.append(label)
    return label


@pytest.fixture
def urgent(monkeypatch):
    """A job with priority 50, registered for this test only (the checks see every job)."""
    monkeypatch.setattr(registry, "_jobs", dict(registry._jobs))

    @job(priority=50, name="tests.priorities.urgent")
    def urgent():
        return "urgent"

    return urgent


@pytest.mark.parametrize("url, top, levels", [
    ("django://", None, range(256)),
    ("redis://127.0.0.1:6379/0", None, range(10)),
    ("amqp://127.0.0.1//", None, range(0)),
    ("amqp://127.0.0.1//", 10, range(11)),
], ids=["django", "redis", "amqp", "amqp-max-10"])
def test_each_broker_says_which_priorities_it_orders(settings, url, top, levels):
    settings.JOBS = {"BROKER_URL": url, "TASK_QUEUE_MAX_PRIORITY": top}
    assert Broker.for_url(url).priority_levels == levels


@pytest.mark.parametrize("url, extra, priority, message", [
    ("redis://127.0.0.1:1/0", {}, 10,
     "priority=10 must be 0..9 on redis://127.0.0.1:1/0 (the highest runs first)"),
    ("amqp://127.0.0.1:1//", {}, 1, "RabbitMQ queues are declared without priorities: set "
                                    "JOBS['TASK_QUEUE_MAX_PRIORITY']"),
    ("amqp://127.0.0.1:1//", {"TASK_QUEUE_MAX_PRIORITY": 5}, 6, "must be 0..5"),
    ("django://", {}, 256, "must be 0..255"),
    ("django://", {}, -1, "must be 0..255"),
    ("django://", {}, "9", "must be a whole number"),
], ids=["redis", "amqp-none", "amqp-over", "django-over", "django-negative", "django-text"])
def test_a_priority_the_broker_cannot_honour_fails_at_the_call(settings, url, extra, priority,
                                                               message):
    settings.JOBS = {"BROKER_URL": url, **extra}  # nothing listens on port 1: nothing is sent
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        demo.add.apply_async((1, 1), priority=priority)


def test_task_default_priority_is_the_priority_of_a_job_that_names_none(settings, urgent):
    settings.JOBS = {**settings.JOBS, "TASK_DEFAULT_PRIORITY": 4}
    with capture_jobs() as captured:
        demo.add.delay(1, 1)
        demo.add.apply_async((1, 1), priority=8)
        urgent.delay()
    assert [m.priority for m in captured.messages] == [4, 8, 50]


def test_a_priority_setting_or_job_out_of_the_brokers_range_fails_the_check(settings, urgent):
    settings.JOBS = {"BROKER_URL": "redis://127.0.0.1:6379/0", "TASK_DEFAULT_PRIORITY": 12}
    found = {(m.id, m.msg) for m in run_checks()}
    assert ("jobs.E015", "JOBS['TASK_DEFAULT_PRIORITY']: priority=12 must be 0..9 on "
            "redis://127.0.0.1:6379/0 (the highest runs first)") in found
    assert ("jobs.E015", "@job tests.priorities.urgent: priority=50 must be 0..9 on "
            "redis://127.0.0.1:6379/0 (the highest runs first)") in found

    settings.JOBS = {"BROKER_URL": "amqp://127.0.0.1//", "TASK_QUEUE_MAX_PRIORITY": 300}
    assert "JOBS['TASK_QUEUE_MAX_PRIORITY'] = 300 must be 1..255 or None." in {
        m.msg for m in run_checks() if m.id == "jobs.E015"}


@pytest.mark.parametrize("broker_url", broker_params(), indirect=True)
def test_a_high_priority_job_sent_last_runs_before_the_low_ones_waiting(broker_url, settings):
    settings.JOBS = {**settings.JOBS, "TASK_QUEUE_MAX_PRIORITY": 9}
    queue = f"prio-{uuid.uuid4().hex[:8]}"
    gate.clear()
    ran.clear()
    with running_worker(queues=[queue], concurrency=1, prefetch_multiplier=1):
        busy = hold.apply_async(queue=queue)
        wait_for(lambda: busy.state == "STARTED", message="the first job never started")
        low = [note.apply_async((f"low-{i}",), queue=queue, priority=0) for i in range(50)]
        high = note.apply_async(("high",), queue=queue, priority=9)
        if broker_url.startswith("amqp"):
            # RabbitMQ takes the publishes and the busy job's ack on two connections, in
            # either order: release it once all 51 wait in the queue.
            wait_for(lambda: (get_broker().ready_counts([queue])[0] or {}).get(queue) == 51,
                     message="the jobs never all reached the queue")
        gate.set()
        assert high.get(timeout=30) == "high"
        assert [h.get(timeout=30) for h in low][-1] == "low-49"
    assert ran.index("high") == 0, ran[:5]
    assert ran[1:] == [f"low-{i}" for i in range(50)]


@pytest.mark.parametrize("broker_url", ["amqp"], indirect=True)
def test_a_rabbitmq_queue_declared_without_priorities_is_used_as_it_is_and_says_how_to_move(
        broker_url, settings, caplog):
    queue = f"legacy-{uuid.uuid4().hex[:8]}"
    with Connection(broker_url) as connection:  # as a release without priorities left it
        Queue(queue, Exchange(queue, "direct"), routing_key=queue)(connection.channel()).declare()
    settings.JOBS = {**settings.JOBS, "TASK_QUEUE_MAX_PRIORITY": 10}

    with caplog.at_level(logging.ERROR, logger="jobs.broker"):
        handle = note.apply_async(("kept",), queue=queue, priority=5)
        with running_worker(queues=[queue]):
            assert handle.get(timeout=30) == "kept"

    moving = [r.getMessage() for r in caplog.records if queue in r.getMessage()]
    assert moving and f"rabbitmqctl delete_queue {queue}" in moving[0]
    assert "exists without x-max-priority=10" in moving[0]
    assert get_broker().queue_for(queue).no_declare


def _waits(send, rounds: int) -> float:
    """Seconds the jobs ``send()`` sends take to come back, one after the other, each sent
    the moment the one before came back: the worker has just begun its wait for the next
    message then, on the list of its first queue's messages without a priority."""
    started = time.monotonic()
    for _ in range(rounds):
        send().get(timeout=30)
    return time.monotonic() - started


@pytest.mark.parametrize("broker_url", ["redis", "rediss"], indirect=True)
@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_an_idle_redis_worker_takes_a_message_on_any_list_at_once(broker_url, pool):
    # Redis can wait on one list without taking from it, not on several: a message with a
    # priority, or on the worker's other queue, lies on a list the worker doesn't wait on.
    # Its watchers see it; before, it waited for the end of the wait (1 s; 0.25 s with two
    # queues, which the wait took in turn); over TLS it did until the watchers were watched.
    first, second = f"wake-{uuid.uuid4().hex[:8]}", f"wake-{uuid.uuid4().hex[:8]}"
    with running_worker(queues=[first], pool=pool, concurrency=1):
        note.apply_async(("warm",), queue=first).get(timeout=30)
        assert _waits(lambda: note.apply_async(("urgent",), queue=first, priority=9), 5) < 1.0
    with running_worker(queues=[first, second], pool=pool, concurrency=1):
        note.apply_async(("warm",), queue=first).get(timeout=30)
        # After a message of the first queue, the wait is on the second's list.
        assert _waits(lambda: note.apply_async(("first",), queue=first), 5) < 0.5


@pytest.mark.parametrize("broker_url", ["redis", "rediss"], indirect=True)
def test_a_prefork_worker_takes_a_message_with_a_priority_at_once(broker_url, start_worker):
    start_worker(broker_url, "-c", "1")
    demo.add.delay(1, 1).get(timeout=30)
    assert _waits(lambda: demo.add.apply_async((1, 2), priority=9), 5) < 1.0


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_a_worker_goes_on_through_a_pause_of_its_redis_and_leaves_the_server_up(
        own_redis, settings, transactional_db, pool):
    # A watcher sees a job on the worker's other queue while the worker is busy; writes are
    # paused (CLIENT PAUSE WRITE, as FAILOVER does) as its job ends. The job's
    # acknowledgement, the next wait and the watcher's wake all wait for the pause to end,
    # and then the job on the other queue runs. (The consumer's own test holds the wait
    # itself with a pause: test_transport_redis.)
    import redis

    use_broker(settings, own_redis.url)
    admin = redis.Redis.from_url(own_redis.url)
    first, second = f"pause-{uuid.uuid4().hex[:8]}", f"pause-{uuid.uuid4().hex[:8]}"
    gate.clear()
    with running_worker(queues=[first, second], pool=pool, concurrency=1):
        note.apply_async(("warm",), queue=first).get(timeout=30)
        busy = hold.apply_async(queue=first)
        wait_for(lambda: busy.state == "STARTED", message="the first job never started")
        other = note.apply_async(("other",), queue=second)
        admin.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
        gate.set()
        assert other.get(timeout=30) == "other"
        assert busy.get(timeout=30) is None
    assert admin.ping()


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_without_the_client_command_a_worker_still_takes_every_list_in_turn(
        broker_url, settings, caplog):
    import redis

    user = f"jobs-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(broker_url)
    admin.execute_command("ACL", "SETUSER", user, "on", ">secret", "~*", "&*", "+@all",
                          "-client")
    try:
        settings.JOBS = {**settings.JOBS,
                         "BROKER_URL": broker_url.replace("redis://", f"redis://{user}:secret@")}
        queue = f"noclient-{uuid.uuid4().hex[:8]}"
        with caplog.at_level(logging.WARNING, logger="jobs.worker"), \
                running_worker(queues=[queue], concurrency=1):
            note.apply_async(("warm",), queue=queue).get(timeout=30)
            assert note.apply_async(("urgent",), queue=queue, priority=9).get(timeout=30) \
                == "urgent"
        assert "refused a command that wakes a waiting worker" in caplog.text
    finally:
        admin.execute_command("ACL", "DELUSER", user)
