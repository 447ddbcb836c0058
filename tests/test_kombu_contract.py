"""The contract with kombu: every private or undocumented kombu name jobs relies on (all of
them spelt in :mod:`jobs.compat.kombu`, py-amqp's in :mod:`jobs.compat.amqp`) exists in the
installed kombu and py-amqp, as we use it.

A kombu release that renames, removes or changes one fails here, and the test's id names it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import uuid
from collections import OrderedDict

import amqp.transport
import pytest
from kombu import Connection
from kombu.transport import redis as kombu_redis, virtual

from jobs.compat import amqp as amqp_compat, kombu as kombu_compat
from jobs.compat.kombu import redis as kombu_redis_compat
from tests.conftest import REDIS_URL, require

#: Hooks kombu calls and our transports implement: kombu must still call them with exactly
#: these parameters, which is what our implementations take.
HOOKS = {
    "kombu.transport.virtual.base.Channel._put": "(self, queue, message)",
    "kombu.transport.virtual.base.Channel._get": "(self, queue, timeout=None)",
    "kombu.transport.virtual.base.Channel._size": "(self, queue)",
    "kombu.transport.virtual.base.Channel._purge": "(self, queue)",
    "kombu.transport.virtual.base.Channel._delete": "(self, queue, *args, **kwargs)",
    "kombu.transport.virtual.base.Channel._new_queue": "(self, queue, **kwargs)",
    "kombu.transport.virtual.base.Channel._has_queue": "(self, queue, **kwargs)",
    "kombu.transport.virtual.base.QoS.restore_unacked": "(self)",
    "kombu.transport.virtual.base.QoS.restore_unacked_once": "(self, stderr=None)",
    "kombu.transport.redis.Channel._put": "(self, queue, message, **kwargs)",
    "kombu.transport.redis.Channel._get": "(self, queue)",
    "kombu.transport.redis.Channel._brpop_start": "(self, timeout=None)",
    "kombu.transport.redis.Channel._brpop_read": "(self, **options)",
    "kombu.transport.redis.Channel._disconnect_pools": "(self)",
    "kombu.transport.redis.Channel.conn_or_acquire": "(self, client=None)",
    "kombu.transport.redis.Channel._next_delivery_tag": "(self)",
    "kombu.transport.redis.Channel._inplace_augment_message":
        "(self, message, exchange, routing_key)",
    "amqp.transport.TCPTransport._read": "(self, n, initial=False, _errnos=(11, 4))",
}

#: Private functions we call: the parameters we pass them.
CALLED = {
    "kombu.transport.virtual.base.Channel._inplace_augment_message":
        "(self, message, exchange, routing_key)",
    "kombu.transport.virtual.base.Channel._get_message_priority": "(self, message, reverse=False)",
    "kombu.transport.virtual.base.QoS._flush": "(self)",
    "kombu.transport.virtual.base.QoS.append": "(self, message, delivery_tag)",
    "kombu.transport.virtual.base.QoS.ack": "(self, delivery_tag)",
    "kombu.transport.virtual.base.Transport._deliver": "(self, message, queue)",
    "kombu.transport.redis.Channel._create_client": "(self, asynchronous=False)",
    "kombu.transport.redis.Channel._q_for_pri": "(self, queue, pri)",
    "kombu.transport.redis.Channel._get_message_priority": "(self, message, reverse=False)",
    "kombu.transport.redis.Channel._flush_brpop_reauth": "(self)",
    "kombu.transport.redis.QoS.restore_visible": "(self, start=0, num=10, interval=10)",
    "kombu.transport.redis.QoS.restore_by_tag": "(self, tag, client=None, leftmost=False)",
    "kombu.transport.redis.MultiChannelPoller.on_poll_start": "(self)",
}

#: Class attributes we read or extend, and their types.
CLASS_ATTRIBUTES = {
    "kombu.transport.TRANSPORT_ALIASES": dict,
    "kombu.compression._aliases": dict,
    "kombu.transport.virtual.base.QoS.restore_at_shutdown": bool,
    "kombu.transport.virtual.base.Channel.do_restore": bool,
    "kombu.transport.virtual.base.Channel.from_transport_options": tuple,
    "kombu.transport.redis.Channel.unacked_key": str,
    "kombu.transport.redis.Channel.unacked_index_key": str,
    "kombu.transport.redis.Channel._in_poll": object,
    "kombu.transport.redis.Channel._brpop_sent_at": object,
    "amqp.transport._UNAVAIL": set,
    "kombu.transport.redis.MultiChannelPoller.fds": property,
}


def _resolve(dotted: str):
    """The object a dotted name (module path, then attributes) names."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            target = getattr(target, name)
        return target
    raise ImportError(dotted)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_kombu_still_calls_the_hook_with_the_parameters_we_take(name):
    hook = _resolve(name)
    assert callable(hook), f"{name} is no longer callable"
    assert str(inspect.signature(hook)) == HOOKS[name], f"{name} changed its parameters"


@pytest.mark.parametrize("name", sorted(CALLED))
def test_the_private_function_still_takes_what_we_pass(name):
    function = _resolve(name)
    assert callable(function), f"{name} is no longer callable"
    assert str(inspect.signature(function)) == CALLED[name], f"{name} changed its parameters"


@pytest.mark.parametrize("name", sorted(CLASS_ATTRIBUTES))
def test_the_attribute_is_still_there(name):
    assert isinstance(_resolve(name), CLASS_ATTRIBUTES[name]), f"{name} changed its type"


# Instance state: kombu sets these in __init__, so they are checked on real instances.


@pytest.fixture
def memory_channel():
    with Connection("memory://") as connection:
        yield connection.channel()


def test_a_virtual_channels_private_state(memory_channel):
    assert isinstance(memory_channel, virtual.Channel)
    assert isinstance(memory_channel._tag_to_queue, dict), "Channel._tag_to_queue"
    assert isinstance(memory_channel._active_queues, list), "Channel._active_queues"
    assert memory_channel._qos is None, "Channel._qos (None until qos is used)"
    memory_channel.qos  # noqa: B018 - makes it
    assert memory_channel._qos is memory_channel.qos, "Channel._qos"


def test_a_py_amqp_channels_private_state():
    from amqp import spec

    channel = amqp.Channel(amqp.Connection(), channel_id=1)
    assert channel._pending == {}, "AbstractChannel._pending (one-shot waits by method)"
    assert channel._callbacks[spec.Basic.Deliver] == channel._on_basic_deliver, \
        "AbstractChannel._callbacks (listeners by method)"
    assert amqp_compat.deliver_handler(channel) == channel._on_basic_deliver
    # Basic.Deliver's arguments, in the order jobs.transport.amqp.deliver reads them.
    assert amqp.Channel._METHODS[spec.Basic.Deliver].args == "sLbss"
    channel._pending[spec.Basic.Deliver] = print
    assert amqp_compat.deliver_handler(channel) is None


def test_a_virtual_qos_private_state(memory_channel):
    qos = memory_channel.qos
    assert isinstance(qos._delivered, OrderedDict), "QoS._delivered"
    assert qos._delivered.restored is False, "QoS._delivered.restored"
    assert isinstance(qos._dirty, set), "QoS._dirty"
    assert callable(qos._quick_ack), "QoS._quick_ack"
    assert callable(qos._on_collect.cancel), "QoS._on_collect.cancel"


def test_a_virtual_transports_cycle_delivers_through_a_callback(memory_channel):
    get = memory_channel.connection.cycle.get
    assert list(inspect.signature(get).parameters)[:1] == ["callback"], "Transport.cycle.get"


def test_settling_through_the_adapter_counts_as_kombus_ack(memory_channel):
    class QoS(kombu_compat.VirtualQoS):
        pass

    qos = QoS(memory_channel)
    qos.append("message", "tag-1")
    qos.settle("tag-1")
    assert qos.settled == {"tag-1"} and qos.can_consume()
    qos.forget_settled()
    assert "tag-1" not in qos.delivered
    qos.restored = True
    assert qos.restored and qos._delivered.restored


@pytest.fixture
def redis_channel():
    require("redis")
    with Connection(REDIS_URL, transport=kombu_redis.Transport) as connection:
        yield connection.channel()


def test_a_redis_channels_private_state(redis_channel):
    assert isinstance(redis_channel._expires, dict), "redis Channel._expires"
    assert callable(redis_channel._queue_cycle.consume), "redis Channel._queue_cycle.consume"
    assert callable(redis_channel._queue_cycle.rotate), "redis Channel._queue_cycle.rotate"
    assert isinstance(redis_channel.sep, str), "redis Channel.sep"


@pytest.mark.parametrize("body", ["[[1], {}, {}]", b"\x00\xffbinary"])
def test_our_redis_channel_stores_a_message_as_kombus_would(body, redis_channel):
    from jobs.transport.redis import Channel, _envelope_json

    def prepared(channel):
        message = channel.prepare_message(body, 3, "application/json", "utf-8", {"id": "1"},
                                          {"correlation_id": "1", "delivery_mode": 2})
        return message

    ours = Channel.__new__(Channel)  # only what the step reads
    ours.body_encoding = redis_channel.body_encoding
    theirs, mine = prepared(redis_channel), prepared(redis_channel)
    redis_channel._inplace_augment_message(theirs, "", "q")
    Channel.augment_message(ours, mine, "", "q")
    uuid.UUID(mine["properties"]["delivery_tag"])
    mine["properties"]["delivery_tag"] = theirs["properties"]["delivery_tag"]
    assert mine == theirs
    assert _envelope_json(mine) == json.dumps(theirs)


def test_kombus_event_loop_reads_the_wait_state_we_set():
    poller = inspect.getsource(kombu_redis.MultiChannelPoller)
    assert "channel._in_poll" in poller, "redis Channel._in_poll is no longer read"
    assert "channel._brpop_sent_at" in poller, "redis Channel._brpop_sent_at is no longer read"
    assert kombu_redis.monotonic() > 0, "kombu.transport.redis.monotonic"


def test_kombus_producer_batches_reach_put_through_one_keyword():
    source = inspect.getsource(kombu_redis.Channel._put)
    assert "'_publish_batch'" in source or '"_publish_batch"' in source, \
        "redis Channel._put(_publish_batch=)"


def test_kombus_prefixing_client_is_redis_with_its_own_execute_command():
    redis = pytest.importorskip("redis")
    assert issubclass(kombu_redis.PrefixedStrictRedis, redis.Redis)
    assert "execute_command" in kombu_redis.GlobalKeyPrefixMixin.__dict__, \
        "kombu.transport.redis.Channel.Client.execute_command"


def test_the_serializer_registry_keeps_its_tables():
    from kombu.serialization import registry

    assert "json" in registry._encoders, "SerializerRegistry._encoders"
    assert kombu_compat.json_is_kombus(), "kombu's own JSON serializer, as registered"
    assert "application/json" in registry._decoders, "SerializerRegistry._decoders"
    assert kombu_compat.json_decoder_is_kombus(), "kombu's own JSON decoder, as registered"


# The adapter itself.

COVERED = {
    *HOOKS, *CALLED, *CLASS_ATTRIBUTES,
    *(f"kombu.transport.virtual.base.Channel.{n}" for n in ("_tag_to_queue", "_active_queues",
                                                          "_qos")),
    *(f"kombu.transport.virtual.base.QoS.{n}" for n in ("_delivered", "_delivered.restored",
                                                      "_dirty", "_quick_ack", "_on_collect")),
    "kombu.transport.virtual.base.Transport.cycle",
    "kombu.transport.redis.MultiChannelPoller._chan_to_sock",
    "kombu.transport.redis.Channel._expires", "kombu.transport.redis.Channel._queue_cycle",
    "kombu.transport.redis.monotonic", "kombu.transport.redis.Channel._put(_publish_batch=)",
    "kombu.transport.redis.Channel.Client.execute_command",
    "kombu.serialization.SerializerRegistry._encoders",
    "kombu.serialization.SerializerRegistry._decoders",
    "amqp.abstract_channel.AbstractChannel._pending",
    "amqp.abstract_channel.AbstractChannel._callbacks",
}


def test_every_private_name_the_adapter_uses_is_checked_here():
    assert sorted(kombu_compat.USED - COVERED) == []


def test_every_name_checked_here_is_one_the_adapter_uses():
    assert sorted(COVERED - kombu_compat.USED) == []


ADAPTERS = [
    (kombu_compat.VirtualQoS, virtual.QoS),
    (kombu_compat.VirtualChannel, virtual.Channel),
    (kombu_compat.VirtualTransport, virtual.Transport),
    (kombu_redis_compat.RedisQoS, kombu_redis.QoS),
    (kombu_redis_compat.RedisChannel, kombu_redis.Channel),
    (amqp_compat.TCPTransport, amqp.transport.TCPTransport),
]


@pytest.mark.parametrize("adapter, base", ADAPTERS, ids=lambda c: c.__name__)
def test_our_public_spellings_shadow_nothing_of_kombus(adapter, base):
    ours = {name for name in vars(adapter) if not name.startswith("_")} - {"HOOKS"}
    ours |= set(getattr(adapter, "HOOKS", {}))
    aliases = {name for name in ours if vars(adapter).get(name) is getattr(base, name, None)}
    assert sorted(name for name in ours - aliases if hasattr(base, name)) == []


def test_our_transports_hooks_are_installed_under_kombus_names():
    from jobs.transport import amqp, django, redis

    for cls in (django.Channel, redis.Channel, amqp.BufferedTCPTransport):
        for public, private in cls.HOOKS.items():
            if public in vars(cls):
                assert getattr(cls, private) is vars(cls)[public], f"{cls.__module__}.{private}"


def test_a_missing_name_fails_when_used_and_says_which():
    class Old:
        pass

    stand_in = kombu_compat._private(Old, "_gone")
    kombu_compat.USED.discard(f"{Old.__module__}.{Old.__qualname__}._gone")
    with pytest.raises(kombu_compat.KombuContractError, match=r"Old\._gone"):
        stand_in()


def test_a_redis_py_connection_keeps_its_socket_where_the_adapter_reads_it():
    require("redis")
    import redis

    from jobs.compat.kombu.redis import socket_of

    pool = redis.ConnectionPool.from_url(REDIS_URL)
    connection = pool.get_connection()
    try:
        assert socket_of(connection).fileno() > 0, "redis-py Connection._sock"
        connection.disconnect()
        with pytest.raises(redis.ConnectionError):
            socket_of(connection)
    finally:
        pool.disconnect()


def test_kombus_redis_event_loop_keeps_the_sockets_it_polls_where_the_adapter_reads_them():
    require("redis")
    from kombu import Queue

    queue = f"contract-{uuid.uuid4().hex[:8]}"
    with Connection(REDIS_URL, transport=kombu_redis.Transport) as connection:
        channel = connection.default_channel
        Queue(queue)(channel).declare()
        channel.basic_consume(queue, False, lambda message: None, "contract")
        transport = connection.transport
        fds = kombu_redis_compat.wait_sockets(transport)  # the wait sent, its socket polled
        sockets = kombu_redis_compat.polled_sockets(transport)
        assert fds and sorted(fds) == sorted(s.fileno() for s in sockets), \
            "kombu.transport.redis.MultiChannelPoller._chan_to_sock"
        channel.queue_delete(queue)
