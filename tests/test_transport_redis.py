"""The ``redis://`` transport (jobs.transport.redis): what the consumer asks Redis for."""

from __future__ import annotations

import re
import select

import pytest
from kombu import Consumer, Producer, Queue
from redis.connection import AbstractConnection

from jobs.broker import new_connection

redis_broker = pytest.mark.parametrize("broker_url", ["redis"], indirect=True)


@pytest.fixture
def requests_sent(monkeypatch):
    """The commands each request to Redis began with, in order (a pipelined request: its
    commands' names joined by '+')."""
    sent: list[str] = []
    packed = AbstractConnection.send_packed_command

    def send_packed_command(self, command, check_health=True):
        parts = [command] if isinstance(command, (bytes, str)) else command
        text = b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)
        names = re.findall(rb"\*\d+\r\n\$\d+\r\n([A-Z]+)\r\n", text)
        sent.append("+".join(name.decode() for name in names))
        return packed(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    return sent


def turn(connection) -> None:
    """One turn of a consumer's loop, as the worker's: wait on the broker's sockets (those of
    the wait and of its watchers) for up to 0.1 s, then read what came."""
    sockets = connection.transport.waitable(connection.connection)
    if sockets:
        select.select(sockets, [], [], 0.1)
    try:
        connection.drain_events(timeout=0)
    except TimeoutError:
        pass


@redis_broker
def test_a_claim_that_empties_the_queue_is_followed_by_a_wait_not_by_another_claim(
        broker_url, requests_sent):
    # The claim script takes every message it is allowed to: one that comes back with fewer
    # found the lists empty, and the next request waits for a message (BLMOVE, the claim
    # right behind it) instead of asking again for what isn't there.
    received = []
    with new_connection() as connection:
        queue = Queue("default", routing_key="default")
        with connection.channel() as publishing:
            Producer(publishing).publish({"n": 1}, routing_key="default", declare=[queue])
        channel = connection.channel()
        consumer = Consumer(channel, queues=[queue], accept=["json"],
                            callbacks=[lambda body, message: received.append(message)])
        channel.basic_qos(0, 8, False)
        with consumer:
            connection.drain_events(timeout=5)
            assert [m.payload for m in received] == [{"n": 1}]
            del requests_sent[:]
            with pytest.raises(TimeoutError):
                connection.drain_events(timeout=0.2)
            received[0].ack()
    claims = [r for r in requests_sent if "EVALSHA" in r]
    assert claims and claims[0] == "BLMOVE+EVALSHA", requests_sent


@redis_broker
def test_deferred_acks_leave_no_record_even_when_the_connection_they_go_on_was_cut(
        broker_url, requests_sent):
    # A worker acknowledges in batches (QoS.defer_acks): the batch leaves kombu's unacked
    # hash and index in one request, on a connection the channel keeps for it. A kept
    # connection that Redis closed meanwhile (a restart, a timeout, CLIENT KILL) is replaced,
    # and the batch sent again, rather than left to come back after the visibility timeout.
    import redis

    with new_connection() as connection:
        queue = Queue("default", routing_key="default")
        with connection.channel() as publishing:
            producer = Producer(publishing)
            for n in range(4):
                producer.publish({"n": n}, routing_key="default", declare=[queue])
        channel = connection.channel()
        channel.qos.defer_acks = True
        received = []
        consumer = Consumer(channel, queues=[queue], accept=["json"],
                            callbacks=[lambda body, message: received.append(message)])
        channel.basic_qos(0, 8, False)
        prefix = channel.global_keyprefix or ""
        client = redis.Redis.from_url(broker_url)
        records, index = prefix + channel.unacked_key, prefix + channel.unacked_index_key
        with consumer:
            while len(received) < 4:
                connection.drain_events(timeout=5)
            assert client.hlen(records) == client.zcard(index) == 4
            received[0].ack()
            received[1].ack()
            channel.qos.flush_acks()
            assert client.hlen(records) == client.zcard(index) == 2
            kept = channel._ack_connection
            kept.send_command("CLIENT", "ID")
            assert client.client_kill_filter(_id=kept.read_response()) == 1
            received[2].ack()
            received[3].ack()
            channel.qos.flush_acks()
            assert client.hlen(records) == client.zcard(index) == 0
    assert sum(1 for r in requests_sent if r == "MULTI+ZREM+HDEL+EXEC") >= 2


def test_a_wait_held_by_a_pause_of_redis_is_not_woken_and_the_server_stays_up(
        own_redis, settings):
    # An idle consumer waits on one list, its watchers on the others. Here a watcher sees a
    # message while the consumer is busy (its reply unread), writes are paused (CLIENT PAUSE
    # WRITE, as FAILOVER does), and the consumer waits again: the pause holds that wait.
    # Redis before its fix of July 2025 (redis/redis#14164) crashed when CLIENT UNBLOCK, the
    # watcher's way to wake the wait, named a client a pause held. The message is taken
    # when the pause ends, not when the wait's second is up.
    import time

    import redis

    from tests.conftest import use_broker

    use_broker(settings, own_redis.url)
    admin = redis.Redis.from_url(own_redis.url)
    received = []
    with new_connection() as connection:
        first, second = Queue("first", routing_key="first"), Queue("second", routing_key="second")
        channel = connection.channel()
        consumer = Consumer(channel, queues=[first, second], accept=["json"],
                            callbacks=[lambda body, message: received.append(body)])
        channel.basic_qos(0, 8, False)

        def send(body: dict, queue: Queue, priority: int = 0) -> None:
            with connection.channel() as publishing:
                Producer(publishing).publish(body, routing_key=queue.name, declare=[queue],
                                             priority=priority)

        with consumer:
            deadline = time.monotonic() + 10
            while admin.info("clients")["blocked_clients"] < 2:  # waiting on both lists
                assert time.monotonic() < deadline, "the consumer never waited"
                turn(connection)
            send({"n": 1}, first)
            while not received:
                assert time.monotonic() < deadline, "the first message never came"
                turn(connection)
            send({"n": 2}, second, priority=9)
            admin.execute_command("CLIENT", "PAUSE", 500, "WRITE")
            paused = time.monotonic()
            while len(received) < 2 and time.monotonic() - paused < 5:
                turn(connection)
    assert admin.ping()
    assert received == [{"n": 1}, {"n": 2}]
    took = time.monotonic() - paused
    assert took < 1.2, f"{took:.2f} s: the second message waited for the end of a wait"


@redis_broker
def test_a_watchers_unblock_that_found_no_wait_is_sent_again(broker_url, monkeypatch):
    # An idle consumer waits on one list, its watchers on the others. A watcher that saw a
    # message wakes the wait with CLIENT UNBLOCK, on another connection, sent right after
    # the wait; Redis reads its connections in no set order and may take the UNBLOCK first,
    # answer 0 (nothing blocked) and then block the wait for its whole second, the message
    # beside it. Here the first UNBLOCK names no client, which Redis answers the same way.
    import time

    unblocks = []
    pack_commands = AbstractConnection.pack_commands

    def first_unblock_finds_nothing(self, commands):
        commands = list(commands)
        for i, args in enumerate(commands):
            if args[:2] == ("CLIENT", "UNBLOCK"):
                unblocks.append(args[2])
                if len(unblocks) == 1:
                    commands[i] = ("CLIENT", "UNBLOCK", 2**62)
        return pack_commands(self, commands)

    received = []
    with new_connection() as connection:
        queue = Queue("default", routing_key="default")
        channel = connection.channel()
        consumer = Consumer(channel, queues=[queue], accept=["json"],
                            callbacks=[lambda body, message: received.append(body)])
        channel.basic_qos(0, 8, False)

        with consumer:
            deadline = time.monotonic() + 10
            while not (channel._in_wait and channel._armed):  # waiting, its watchers armed
                assert time.monotonic() < deadline, "the consumer never waited"
                turn(connection)
            monkeypatch.setattr(AbstractConnection, "pack_commands", first_unblock_finds_nothing)
            with connection.channel() as publishing:  # on a watched list: priority 9
                Producer(publishing).publish({"n": 1}, routing_key="default", priority=9)
            started = time.monotonic()
            while not received and time.monotonic() - started < 5:
                turn(connection)
            took = time.monotonic() - started
    assert received == [{"n": 1}]
    assert took < 0.5, f"{took:.2f} s: the wait blocked on for its second"
    assert len(unblocks) == 2


@redis_broker
def test_the_packed_wait_and_claim_are_what_redis_py_would_send(broker_url, monkeypatch):
    # The wait and the claim are packed once per list of queues, only the time and the
    # number to take written in at each wait (ClaimRequests): byte for byte redis-py's
    # packing of the same arguments, a queue named outside ASCII included.
    from redis.connection import Connection

    from jobs.transport import redis as transport

    monkeypatch.setattr(transport, "time", lambda: 1796676504.5124013)
    with new_connection() as connection:
        channel = connection.channel()
        queues = ["default", "tâches-é"]
        requests = transport.ClaimRequests(channel, queues)
        keys = [channel.queue_key(q, pri) for pri in channel.claim_order for q in queues]
        assert requests.key == (channel.global_keyprefix or "") + "default"
        for want, wait in ((5, 0.25), (1, 1.0)):
            claim = channel._claim_args(keys, want)
            assert requests.wait_then_claim(wait, want) == b"".join(Connection().pack_commands(
                [("BLMOVE", requests.key, requests.key, "RIGHT", "RIGHT", wait), claim]))
            assert requests.claim(want) == b"".join(Connection().pack_commands([claim]))
