"""The ``amqp://`` transport (jobs.transport.amqp): frames cut from a buffer filled in large
reads, and acknowledgements deferred and sent in batches without covering a message that is
still unsettled."""

from __future__ import annotations

import json
import random
import socket
import struct
import types
from datetime import datetime, timedelta
from decimal import Decimal

import amqp
import pytest
from amqp.exceptions import UnexpectedFrame
from amqp.serialization import decode_properties_basic, dumps
from kombu import Consumer, Producer, Queue

from jobs.broker import get_broker, new_connection
from jobs.transport.amqp import BufferedTCPTransport, Channel, Content as Message, frame_handler
from jobs.transport.amqp_content import basic_properties

amqp_broker = pytest.mark.parametrize("broker_url", ["amqp"], indirect=True)


def frame(payload: bytes, kind: int = 1, channel: int = 1, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes([end])


@pytest.fixture
def wire():
    """A transport reading from one end of a socket pair; the test writes to the other."""
    ours, theirs = socket.socketpair()
    transport = BufferedTCPTransport("127.0.0.1:5672")
    transport.sock = ours
    transport.connected = True
    yield transport, theirs
    ours.close()
    theirs.close()


def test_frames_read_together_are_returned_one_by_one(wire):
    transport, peer = wire
    peer.sendall(frame(b"one") + frame(b"two", kind=2) + frame(b"", kind=8, channel=0))
    assert transport.read_frame() == (1, 1, b"one")
    assert transport.frame_ready()  # the rest came with the first read
    assert transport.read_frame() == (2, 1, b"two")
    assert transport.read_frame() == (8, 0, b"")
    assert not transport.frame_ready()


def test_a_frame_cut_by_a_timeout_is_returned_whole_once_the_rest_comes(wire):
    transport, peer = wire
    whole = frame(b"x" * 100_000)  # longer than one read of the socket, too
    peer.sendall(whole[:50])
    transport.sock.settimeout(0.05)
    with pytest.raises(socket.timeout):
        transport.read_frame()
    peer.sendall(whole[50:])
    transport.sock.settimeout(5)
    assert transport.read_frame() == (1, 1, b"x" * 100_000)


def test_a_frame_without_its_end_octet_is_refused(wire):
    transport, peer = wire
    peer.sendall(frame(b"bad", end=0))
    with pytest.raises(UnexpectedFrame):
        transport.read_frame()


def test_a_closed_connection_is_reported_and_marked(wire):
    transport, peer = wire
    peer.sendall(frame(b"half")[:5])
    peer.close()
    with pytest.raises(OSError, match="closed"):
        transport.read_frame()
    assert transport.connected is False


# On RabbitMQ --------------------------------------------------------------------------------


def test_an_amqp_url_connects_through_our_transport():
    from jobs.broker import Broker
    from jobs.transport.amqp import SSLTransport, Transport

    connection = Broker.for_url("amqp://127.0.0.1//").connection()
    assert connection.transport_cls == "jobs-amqp"
    assert type(connection.transport) is Transport
    secure = Broker.for_url("amqps://127.0.0.1//").connection()
    assert type(secure.transport) is SSLTransport
    assert secure.transport.client.ssl


@pytest.fixture
def consuming(broker_url):
    """(channel, receive(n), queue name): a worker-like consumer of a fresh queue, with its
    acknowledgements deferred as the worker defers them."""
    name = "acks-test"
    queue = Queue(name, durable=False)
    with new_connection() as connection:
        channel = connection.channel()
        assert isinstance(channel, Channel)
        received = []
        consumer = Consumer(channel, queues=[queue], on_message=received.append)
        consumer.declare()
        channel.queue_purge(name)
        flush = get_broker().batch_acks(channel)
        assert flush == channel.flush_acks

        def receive(n: int):
            while len(received) < n:
                connection.drain_events(timeout=5)
            return received

        yield connection, consumer, flush, receive, name


def publish(connection, name: str, count: int) -> None:
    producer = Producer(connection.channel())
    for i in range(count):
        producer.publish({"n": i}, routing_key=name, serializer="json")


def ready(name: str) -> list[int]:
    """The bodies of the messages ready in queue ``name`` (taken off it)."""
    with new_connection() as connection:
        channel = connection.channel()
        bodies = []
        while (message := channel.basic_get(name, no_ack=True)) is not None:
            bodies.append(message.body)
        return [json.loads(body)["n"] for body in bodies]


@pytest.fixture
def spied_acks(monkeypatch):
    """The (delivery tag, multiple) of each basic.ack sent to the broker."""
    sent = []
    real_ack = amqp.Channel.basic_ack

    def basic_ack(self, delivery_tag, multiple=False, **kwargs):
        sent.append((delivery_tag, multiple))
        return real_ack(self, delivery_tag, multiple, **kwargs)

    monkeypatch.setattr(amqp.Channel, "basic_ack", basic_ack)
    return sent


@amqp_broker
def test_acks_wait_for_the_flush_and_never_cover_an_unsettled_message(consuming, spied_acks):
    connection, consumer, flush, receive, name = consuming
    sent = spied_acks
    consumer.consume()
    publish(connection, name, 5)
    first, second, third, fourth, fifth = receive(5)
    for message in (first, second, fourth):
        message.ack()
    third.reject(requeue=False)
    assert sent == []  # noted only
    flush()
    fifth_tag = fifth.delivery_tag
    # 1-4 are settled (4 acked, 3 rejected): one ack covers them; the fifth is still running.
    assert sent == [(fourth.delivery_tag, True)]
    connection.close()  # the broker takes back what is unacknowledged
    assert ready(name) == [4]
    assert fifth_tag == fourth.delivery_tag + 1


@amqp_broker
def test_an_ack_above_a_running_message_goes_on_its_own(consuming):
    connection, consumer, flush, receive, name = consuming
    consumer.consume()
    publish(connection, name, 3)
    first, second, third = receive(3)
    second.ack()
    third.ack()
    flush()
    connection.close()
    assert ready(name) == [0]  # the first, never acknowledged, and only it


@amqp_broker
def test_deferred_acks_go_out_before_the_connection_waits_for_the_broker(consuming):
    connection, consumer, flush, receive, name = consuming
    consumer.qos(prefetch_count=4)
    consumer.consume()
    publish(connection, name, 5)
    first = receive(4)[0]
    first.ack()
    # The window is full (three running, one finished): waiting sends the finished one's
    # ack, and the broker sends the next message.
    assert len(receive(5)) == 5
    connection.close()
    assert ready(name) == [1, 2, 3, 4]


@amqp_broker
def test_acks_are_sent_once_half_the_prefetch_window_is_finished(consuming, spied_acks):
    connection, consumer, flush, receive, name = consuming
    consumer.qos(prefetch_count=4)
    consumer.consume()
    publish(connection, name, 4)
    first, second, third, fourth = receive(4)
    first.ack()
    assert spied_acks == []
    second.ack()
    assert spied_acks == [(second.delivery_tag, True)]


# Content headers -----------------------------------------------------------------------------


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["str", "int", "big", "neg", "float", "bool", "none", "bytes", "decimal", "time"]
    if depth < 3:
        kinds += ["table", "list"]
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice("abcé✓\"\x00 ") for _ in range(rng.randrange(0, 12)))
    if kind == "int":
        return rng.randrange(-2**31, 2**31)
    if kind == "big":
        return rng.randrange(2**31, 2**62)
    if kind == "neg":
        return -rng.randrange(2**31, 2**62)
    if kind == "float":
        return rng.uniform(-1e6, 1e6)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 8)))
    if kind == "decimal":
        return Decimal(rng.randrange(-10**6, 10**6)) / Decimal(10 ** rng.randrange(0, 4))
    if kind == "time":
        return datetime(2026, 1, 1) + timedelta(seconds=rng.randrange(10**8))
    if kind == "table":
        return {f"k{i}": random_value(rng, depth + 1) for i in range(rng.randrange(0, 5))}
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]


def test_content_headers_decode_as_py_amqp_decodes_them():
    rng = random.Random(7)
    for _ in range(300):
        properties = {"application_headers": {f"h{i}": random_value(rng)
                                              for i in range(rng.randrange(25))}}
        for name in ("content_type", "content_encoding", "correlation_id", "reply_to",
                     "expiration", "message_id", "type", "user_id", "app_id", "cluster_id"):
            if rng.random() < 0.5:
                properties[name] = f"{name}-é"
        for name in ("delivery_mode", "priority"):
            if rng.random() < 0.5:
                properties[name] = rng.randrange(256)
        if rng.random() < 0.5:
            properties["timestamp"] = rng.randrange(2**40)
        raw = amqp.Message(b"", **properties)._serialize_properties()
        assert basic_properties(raw, 0) == decode_properties_basic(raw, 0)


#: A value of each type octet py-amqp reads, as another client (or RabbitMQ) may send it.
EACH_TYPE = {
    "S": struct.pack(">I", 3) + b"abc", "x": struct.pack(">I", 2) + b"\xff\x00",
    "s": struct.pack(">h", -2), "b": struct.pack(">b", -3), "B": struct.pack(">B", 250),
    "U": struct.pack(">h", -4), "u": struct.pack(">H", 65000), "I": struct.pack(">i", -5),
    "i": struct.pack(">I", 4_000_000_000), "L": struct.pack(">q", -6),
    "l": struct.pack(">q", -7), "f": struct.pack(">f", 1.5), "d": struct.pack(">d", -2.25),
    "D": struct.pack(">Bi", 2, -12345), "t": b"\x02", "T": struct.pack(">Q", 1_700_000_000),
    "V": b"", "A": struct.pack(">I", 6) + b"t\x01s\xff\xfe" + b"V",
    "F": struct.pack(">I", 3) + b"\x01kV",
}


@pytest.mark.parametrize("octet", sorted(EACH_TYPE))
def test_each_type_of_header_value_decodes_as_py_amqp_decodes_it(octet):
    entry = b"\x03key" + octet.encode() + EACH_TYPE[octet]
    table = struct.pack(">I", len(entry) + 5) + entry + b"\x01zS" + struct.pack(">I", 0)
    raw = struct.pack(">H", 0x2000) + table
    assert basic_properties(raw, 0) == decode_properties_basic(raw, 0)


def test_text_that_is_not_utf8_decodes_as_py_amqp_decodes_it_every_time():
    entries = [b"\x03keyS" + struct.pack(">I", 2) + b"\xff\xfe",  # a value: its bytes
               b"\x02\xff\xfeS" + struct.pack(">I", 1) + b"a",  # a key: its bytes
               b"\x03keTS" + struct.pack(">I", 2) + b"\xed\xa0"]  # cut short
    for entry in entries:
        table = struct.pack(">I", len(entry)) + entry
        raw = struct.pack(">H", 0x2000) + table
        for _ in range(2):  # keys once read are looked up, not decoded
            assert basic_properties(raw, 0) == decode_properties_basic(raw, 0)
        assert basic_properties(bytearray(raw), 0) == decode_properties_basic(raw, 0)


def test_a_message_received_has_its_headers_and_properties(wire):
    transport, peer = wire
    sent = amqp.Message(b'{"n": 1}', content_type="application/json", priority=3,
                        application_headers={"task": "a.b", "retries": 2, "eta": None,
                                             "timelimit": [None, 30], "stamps": {}})
    header = struct.pack(">HHQ", 60, 0, len(sent.body)) + sent._serialize_properties()
    deliver = struct.pack(">HH", 60, 60) + b"\x03ctg" + struct.pack(">Q", 7)
    received = []
    handler = frame_handler(types.SimpleNamespace(bytes_recv=0, channels={}),
                            lambda *method: received.append(method))
    assert handler((1, 1, deliver)) is False
    assert handler((2, 1, header)) is False
    assert handler((3, 1, sent.body)) is True
    (channel, method, args, message), = received
    assert (channel, method, args) == (1, (60, 60), deliver)
    assert message.body == b'{"n": 1}'
    assert message.properties == {
        "content_type": "application/json", "priority": 3,
        "application_headers": {"task": "a.b", "retries": 2, "eta": None,
                                "timelimit": [None, 30], "stamps": {}}}


@pytest.mark.parametrize(("tags", "redelivered", "body", "encoding"), [
    (("ctag", 7, "", "jobs"), False, b'{"n": 1}', "utf-8"),
    (("c\u00e9", 2**63 + 5, "ex.change", "r" * 255), True, b"\xff\xfe", "utf-8"),
    (("", 1, "x", "y"), True, b"\x00\x01", None),
])
def test_a_delivery_reaches_its_consumer_as_py_amqps_dispatch_hands_it(tags, redelivered,
                                                                      body, encoding):
    consumer_tag, delivery_tag, exchange, routing_key = tags
    args = dumps("sLbss", [consumer_tag, delivery_tag, redelivered, exchange, routing_key])
    method = struct.pack(">HH", 60, 60) + args
    properties = {"content_encoding": encoding} if encoding else {}
    sent = amqp.Message(body, application_headers={"task": "a.b"}, **properties)
    header = struct.pack(">HHQ", 60, 0, len(body)) + sent._serialize_properties()

    connection = amqp.Connection()
    got = {}
    for path, channel_id in (("ours", 1), ("py-amqp's", 2)):
        channel = amqp.Channel(connection, channel_id=channel_id)
        channel.callbacks[consumer_tag] = lambda message, path=path: got.setdefault(path, (
            message.delivery_info, message.body, message.properties))
    generic = []
    handler = frame_handler(connection, lambda *method: generic.append(method))
    for kind, payload in ((1, method), (2, header), (3, body)):
        handler((kind, 1, payload))
    assert generic == []  # taken by ours
    message = Message(frame_method=(60, 60), frame_args=method)
    message.inbound_header(header, 0)
    message.inbound_body(body)
    connection.channels[2].dispatch_method((60, 60), method, message)

    assert got["ours"] == got["py-amqp's"]
    assert got["ours"][0]["redelivered"] is redelivered


def test_a_delivery_while_its_channel_closes_goes_to_py_amqps_dispatch():
    connection = amqp.Connection()
    channel = amqp.Channel(connection, channel_id=1)
    channel.is_closing = True
    method = struct.pack(">HH", 60, 60) + dumps("sLbss", ["c", 1, 0, "", "q"])
    generic = []
    handler = frame_handler(connection, lambda *method: generic.append(method))
    handler((1, 1, method))
    handler((2, 1, struct.pack(">HHQ", 60, 0, 0) + struct.pack(">H", 0)))
    assert [m[1] for m in generic] == [(60, 60)]


def test_a_frame_out_of_order_is_refused():
    handler = frame_handler(types.SimpleNamespace(bytes_recv=0), lambda *method: None)
    with pytest.raises(UnexpectedFrame):
        handler((3, 1, b"body without its method"))
