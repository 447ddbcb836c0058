"""The ``django://`` kombu transport: messages as rows of ``jobs.models.Message``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone
from kombu import Connection, Consumer, Producer, Queue

from jobs.models import Message
from jobs.transport.django import queue_depths

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pg]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker():
    """Open ``django://`` connections (each one like a separate worker); close them after."""
    opened = []

    def connect(**transport_options) -> Connection:
        conn = Connection("django://", transport_options=transport_options)
        conn.connect()
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.release()


def publish(conn, queue, body, **kwargs):
    with Producer(conn) as producer:
        producer.publish(body, exchange="", routing_key=queue, declare=[Queue(queue)], **kwargs)


def receive(conn, queue, *, prefetch_count=None, timeout=2.0):
    """Start consuming ``queue`` and return the first message, left unacked."""
    received = []
    consumer = Consumer(conn.channel(), [Queue(queue)], prefetch_count=prefetch_count,
                        on_message=received.append)
    consumer.consume()
    deadline = time.monotonic() + timeout
    while not received and time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=0.05)
        except TimeoutError:
            pass
    assert received, f"nothing received from {queue!r} within {timeout}s"
    return received[0]


def publish_from_another_thread(conn, queue, body):
    try:
        publish(conn, queue, body)
    finally:
        connections.close_all()  # this thread's own database connection


def get_now(conn, queue):
    """A message of ``queue`` by direct access, or None."""
    return conn.default_channel.basic_get(queue)


def test_a_published_message_is_consumed_with_its_body_and_headers(broker):
    conn = broker()
    publish(conn, "roundtrip", {"n": 1}, headers={"task": "demo.add"})

    with conn.SimpleQueue("roundtrip") as queue:
        message = queue.get(timeout=2)

    assert message.payload == {"n": 1}
    assert message.headers["task"] == "demo.add"
    assert message.delivery_info["routing_key"] == "roundtrip"
    assert message.delivery_info["redelivered"] is False
    assert message.delivery_info["delivery_count"] == 1


def test_a_published_message_is_a_row_in_the_database(broker):
    publish(broker(), "rows", {"n": 1})

    row = Message.objects.get(queue="rows")
    assert row.lease_owner == "" and row.lease_until is None
    assert json.loads(row.payload)["properties"]["delivery_tag"] == row.delivery_tag


def test_ack_deletes_the_row(broker):
    conn = broker()
    publish(conn, "ack", {"n": 1})
    message = receive(conn, "ack")
    assert Message.objects.filter(queue="ack").count() == 1

    message.ack()

    assert not Message.objects.filter(queue="ack").exists()


def test_an_idle_workers_acks_wait_for_its_next_claim(broker, monkeypatch):
    """An idle worker's acknowledgements (batched: ``Broker.batch_acks``) go with its next
    claim, in the claim's transaction, or after ACKS_WAIT; a busy one's, or those that must
    go (stopping, acknowledging before a job runs), go at once."""
    from jobs.broker import get_broker
    from jobs.transport import django as transport

    conn = broker()
    for n in range(3):
        publish(conn, "acks", {"n": n})
    channel = conn.channel()
    flush = get_broker().batch_acks(channel)
    received = []
    Consumer(channel, [Queue("acks")], prefetch_count=1, on_message=received.append).consume()

    def next_message():
        deadline = time.monotonic() + 2
        while not received and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.05)
            except TimeoutError:
                pass
        return received.pop()

    first = next_message()
    first.ack()
    flush(idle=True)  # idle, just now: kept for the next claim
    assert Message.objects.filter(queue="acks").count() == 3

    second = next_message()  # claimed: the first message's ack went with the claim
    assert second.payload == {"n": 1}
    assert Message.objects.filter(queue="acks").count() == 2

    second.ack()
    monkeypatch.setattr(transport, "ACKS_WAIT", 0.0)  # waited long enough: deleted
    flush(idle=True)
    assert Message.objects.filter(queue="acks").count() == 1

    monkeypatch.setattr(transport, "ACKS_WAIT", 3600.0)
    third = next_message()
    third.ack()
    flush()  # busy, or must: at once
    assert not Message.objects.filter(queue="acks").exists()


def test_a_received_message_is_leased_until_the_visibility_timeout(broker):
    conn = broker(visibility_timeout=30)
    publish(conn, "lease", {"n": 1})
    before = timezone.now()

    receive(conn, "lease")

    row = Message.objects.get(queue="lease")
    assert row.lease_owner
    assert before + timedelta(seconds=29) < row.lease_until < timezone.now() + timedelta(seconds=31)
    assert row.delivery_count == 1


def test_reject_with_requeue_delivers_again_marked_redelivered(broker):
    conn = broker()
    publish(conn, "requeue", {"n": 1})
    receive(conn, "requeue").reject(requeue=True)

    again = get_now(broker(), "requeue")

    assert again.payload == {"n": 1}
    assert again.delivery_info["redelivered"] is True
    assert again.delivery_info["delivery_count"] == 2
    assert Message.objects.filter(queue="requeue").count() == 1


def test_reject_without_requeue_deletes_the_row(broker):
    conn = broker()
    publish(conn, "drop", {"n": 1})

    receive(conn, "drop").reject(requeue=False)

    assert not Message.objects.filter(queue="drop").exists()


def test_a_message_with_a_future_eta_is_held_until_due(broker):
    conn = broker()
    eta = datetime.now(UTC) + timedelta(seconds=1.5)
    publish(conn, "eta", {"n": 1}, headers={"eta": eta.isoformat()})

    with conn.SimpleQueue("eta") as queue:
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.5)
        message = queue.get(timeout=5)

    assert datetime.now(UTC) >= eta
    assert message.payload == {"n": 1}


def test_a_naive_eta_means_utc(broker):
    eta = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)

    publish(broker(), "naive-eta", {"n": 1}, headers={"eta": eta.isoformat()})

    row = Message.objects.get(queue="naive-eta")
    assert abs(row.visible_at - eta.replace(tzinfo=UTC)) < timedelta(seconds=1)


def test_a_past_eta_is_delivered_at_once(broker):
    conn = broker()
    eta = datetime.now(UTC) - timedelta(minutes=5)
    publish(conn, "past-eta", {"n": 1}, headers={"eta": eta.isoformat()})

    assert get_now(conn, "past-eta").payload == {"n": 1}


def test_the_highest_priority_is_delivered_first_then_the_oldest(broker):
    conn = broker()
    for n, priority in [(1, 9), (2, 0), (3, 200), (4, 0), (5, None)]:
        publish(conn, "priority", {"n": n}, priority=priority)

    order = [get_now(conn, "priority").payload["n"] for _ in range(5)]

    assert order == [3, 1, 2, 4, 5]  # 200 is kept as it is (not clamped to 9)


def test_a_consumer_claims_up_to_its_prefetch_count_in_one_batch(broker):
    conn = broker()
    for n in range(5):
        publish(conn, "batch", {"n": n})

    message = receive(conn, "batch", prefetch_count=3)

    owners = Message.objects.filter(queue="batch").exclude(lease_owner="")
    assert message.payload == {"n": 0}
    assert owners.count() == 3
    assert Message.objects.filter(queue="batch", lease_owner="").count() == 2


def test_a_consumer_is_not_handed_more_than_its_prefetch_count(broker):
    conn = broker()
    for n in range(5):
        publish(conn, "prefetch", {"n": n})
    received = []
    consumer = Consumer(conn.channel(), [Queue("prefetch")], prefetch_count=2,
                        on_message=received.append)
    consumer.consume()

    for _ in range(10):
        try:
            conn.drain_events(timeout=0.05)
        except TimeoutError:
            pass
    assert [m.payload["n"] for m in received] == [0, 1]

    received[0].ack()
    conn.drain_events(timeout=1)
    assert [m.payload["n"] for m in received] == [0, 1, 2]


def test_an_expired_lease_makes_the_message_deliverable_to_another_consumer(broker):
    dead = broker(visibility_timeout=0.5)
    publish(dead, "expire", {"n": 1})
    first = receive(dead, "expire")
    assert get_now(broker(), "expire") is None  # leased

    time.sleep(0.7)  # the first consumer stops draining, as if killed
    again = get_now(broker(), "expire")

    assert again.payload == first.payload
    assert again.delivery_info["redelivered"] is True
    assert again.delivery_info["delivery_count"] == 2


def test_a_draining_consumer_keeps_its_lease_across_a_long_job(broker):
    worker = broker(visibility_timeout=0.6)
    other = broker(visibility_timeout=0.6)
    publish(worker, "long-job", {"n": 1})
    message = receive(worker, "long-job", prefetch_count=1)

    deadline = time.monotonic() + 2.0  # more than three visibility timeouts
    while time.monotonic() < deadline:
        with pytest.raises(TimeoutError):
            worker.drain_events(timeout=0.05)
        assert get_now(other, "long-job") is None
    message.ack()

    assert not Message.objects.filter(queue="long-job").exists()


def test_extend_leases_pushes_back_the_lease_of_held_messages(broker):
    conn = broker(visibility_timeout=60)
    publish(conn, "extend", {"n": 1})
    channel = receive(conn, "extend").channel
    Message.objects.filter(queue="extend").update(lease_until=timezone.now())

    renewed = channel.extend_leases()

    assert renewed == 1
    assert Message.objects.get(queue="extend").lease_until > timezone.now() + timedelta(seconds=55)


def test_closing_a_channel_makes_its_unacked_messages_visible_without_copies(broker):
    conn = broker()
    for n in range(4):
        publish(conn, "close", {"n": n})
    channel = conn.channel()
    consumer = Consumer(channel, [Queue("close")], prefetch_count=4, on_message=lambda m: None)
    consumer.consume()
    conn.drain_events(timeout=1)  # one delivered, three buffered
    assert Message.objects.filter(queue="close").exclude(lease_owner="").count() == 4

    channel.close()

    rows = Message.objects.filter(queue="close")
    assert rows.count() == 4
    assert not rows.exclude(lease_owner="").exists()
    assert [get_now(broker(), "close").payload["n"] for _ in range(4)] == [0, 1, 2, 3]


def test_publishing_in_a_rolled_back_transaction_leaves_no_message(broker):
    conn = broker()

    with pytest.raises(RuntimeError), transaction.atomic():
        publish(conn, "rollback", {"n": 1})
        assert Message.objects.filter(queue="rollback").exists()
        raise RuntimeError("business failure")

    assert not Message.objects.filter(queue="rollback").exists()
    assert get_now(conn, "rollback") is None


def test_a_message_published_in_a_transaction_is_delivered_after_commit(broker):
    conn = broker()

    with transaction.atomic():
        publish(conn, "commit", {"n": 1})

    assert get_now(broker(), "commit").payload == {"n": 1}


def test_a_no_ack_consumer_removes_the_message_on_delivery(broker):
    conn = broker()
    publish(conn, "no-ack", {"n": 1})

    message = conn.default_channel.basic_get("no-ack", no_ack=True)

    assert message.payload == {"n": 1}
    assert not Message.objects.filter(queue="no-ack").exists()


def test_size_counts_and_purge_deletes_only_ready_messages(broker):
    conn = broker()
    for n in range(3):
        publish(conn, "purge", {"n": n})
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    publish(conn, "purge", {"n": "later"}, headers={"eta": later})
    leased = get_now(conn, "purge")

    assert conn.default_channel.queue_declare("purge", passive=True).message_count == 2
    assert conn.default_channel.queue_purge("purge") == 2

    left = {json.loads(row.payload)["headers"].get("eta") for row in Message.objects.all()}
    assert left == {None, later}
    leased.ack()


def test_queue_depths_counts_ready_leased_and_delayed_messages(broker):
    conn = broker()
    for n in range(3):
        publish(conn, "depth-a", {"n": n})
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    publish(conn, "depth-b", {"n": 1}, headers={"eta": later})
    get_now(conn, "depth-a")

    assert queue_depths() == {
        "depth-a": {"ready": 2, "leased": 1, "delayed": 0},
        "depth-b": {"ready": 0, "leased": 0, "delayed": 1},
    }


CONSUMER_SCRIPT = """
import json, sys, time, django
django.setup()
from kombu import Connection, Consumer, Queue

seen = []
def on_message(message):
    seen.append(message.payload["n"])
    time.sleep(0.005)  # a short job
    message.ack()

with Connection("django://", transport_options={"polling_interval": 0.02}) as conn:
    with Consumer(conn, [Queue(sys.argv[1])], prefetch_count=5, on_message=on_message):
        sys.stdin.readline()  # start together
        last = time.monotonic()
        while time.monotonic() - last < 1.0:  # until the queue stays empty for a second
            try:
                conn.drain_events(timeout=0.1)
                last = time.monotonic()
            except TimeoutError:
                pass
print(json.dumps(seen))
"""


def database_url() -> str:
    """The URL of the test database, for processes started by a test."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "") + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_script(script: str, *args: str) -> subprocess.Popen:
    """Run ``script`` in a new Python process on the test database."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings",
           "DATABASE_URL": database_url(), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_consuming_one_queue_never_get_the_same_message(broker):
    conn = broker()
    for n in range(150):
        publish(conn, "shared", {"n": n})

    workers = [start_script(CONSUMER_SCRIPT, "shared") for _ in range(2)]
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    first, second = results
    assert first and second, "both processes should have taken part"
    assert not set(first) & set(second)
    assert sorted(first + second) == list(range(150))
    assert not Message.objects.filter(queue="shared").exists()


HOLDER_SCRIPT = """
import sys, time, django
django.setup()
from kombu import Connection

with Connection("django://", transport_options={"visibility_timeout": 1}) as conn:
    message = conn.default_channel.basic_get(sys.argv[1])
    print(message.payload["n"], flush=True)
    while True:
        time.sleep(0.1)  # a long job
"""


def test_the_messages_of_a_killed_consumer_come_back_when_the_lease_expires(broker):
    conn = broker()
    publish(conn, "killed", {"n": 7})
    holder = start_script(HOLDER_SCRIPT, "killed")
    assert holder.stdout.readline().strip() == "7"

    holder.kill()  # SIGKILL: no chance to release anything
    holder.communicate(timeout=10)
    assert get_now(conn, "killed") is None

    time.sleep(1.2)
    again = get_now(conn, "killed")
    assert again.payload == {"n": 7}
    assert again.delivery_info["delivery_count"] == 2


def test_a_waiting_consumer_wakes_on_a_publish_before_its_polling_interval(broker):
    # PostgreSQL: the publisher's NOTIFY; SQLite: the consumer sees another connection commit.
    waiting = broker(polling_interval=10)
    received = []
    Consumer(waiting.channel(), [Queue("notify")], on_message=received.append).consume()
    with pytest.raises(TimeoutError):
        waiting.drain_events(timeout=0.3)  # also sets up LISTEN
    threading.Timer(0.3, publish_from_another_thread, [broker(), "notify", {"n": 1}]).start()

    started = time.monotonic()
    waiting.drain_events(timeout=8)

    assert [m.payload for m in received] == [{"n": 1}]
    assert time.monotonic() - started < 3


def test_an_idle_consumer_on_sqlite_checks_at_the_idle_pace_while_the_project_writes(
        broker, monkeypatch):
    """On SQLite a consumer checks for other connections' commits: every 0.25 ms while it
    is receiving messages (so that the next one of a burst is claimed at once), every 5 ms
    otherwise. The project's own writes (sessions, models: any commit to the file) are not
    messages: they must not keep an idle worker checking four thousand times a second."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only: a PostgreSQL consumer LISTENs for its queue's NOTIFY")
    from jobs.changes import Changes

    checks = []
    check = Changes.changed
    monkeypatch.setattr(Changes, "changed", lambda self: checks.append(1) or check(self))
    consumer = broker(polling_interval=10)
    received = []
    Consumer(consumer.channel(), [Queue("paced")], on_message=received.append).consume()
    writer, stop = broker(), threading.Event()

    def write() -> None:  # another connection commits every 10 ms, to another queue
        try:
            while not stop.wait(0.01):
                publish(writer, "elsewhere", {"n": 1})
        finally:
            connections.close_all()

    def checks_while_waiting(seconds: float) -> int:
        checks.clear()
        with pytest.raises(TimeoutError):
            consumer.drain_events(timeout=seconds)
        return len(checks)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        checks_while_waiting(1.2)  # past any pace left from setting up
        idle = checks_while_waiting(1.0)
        publish(broker(), "paced", {"n": 1})
        consumer.drain_events(timeout=2)
        busy = checks_while_waiting(0.5) * 2
    finally:
        stop.set()
        thread.join()

    assert [m.payload for m in received] == [{"n": 1}]
    assert idle < 600, f"{idle} checks in a second while idle (the pace: 200, and a few per commit)"
    assert busy > 3 * idle, f"{busy} checks a second after a message, against {idle} idle"
