"""The ``redis://`` transport (jobs.transport.redis): what the consumer asks Redis for."""

from __future__ import annotations

import re

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
