"""kombu's private names, spelt in this module only.

jobs' transports extend kombu's: ``django://`` is a kombu virtual transport, and our Redis
transport is kombu's with an atomic claim. That means overriding hooks kombu names with a
leading underscore (``_put``, ``_get``, ``_size`` ...), calling some of its private helpers,
reading private state, and relying on internals kombu doesn't document: the Redis channel's
unacked records and its client for one command, the tables of its serializer and compression
registries, its table of transport aliases.

Each such name is written here once, under a public spelling the rest of jobs uses:

* base classes (:class:`VirtualChannel`, :class:`RedisChannel`, ...) are kombu's own with
  aliases: ``queue_key`` *is* kombu's ``_q_for_pri`` (the same function object, so calling it
  costs what it did), and a subclass that defines ``put_message`` has it installed as kombu's
  ``_put`` hook when the class is made (see ``HOOKS``);
* functions for what depends on kombu's internal layout (the Redis unacked records, the
  serializer and compression tables).

:data:`USED` lists every private name looked up here; ``tests/test_kombu_contract.py`` checks
each against the installed kombu (present, callable, taking the arguments we pass), so that a
kombu release that changes one fails that test, naming the name, rather than a worker at run
time. A name the installed kombu lacks does not fail the import (a change in kombu's Redis
transport must not stop ``django://``): using it raises :class:`KombuContractError`.
"""

from __future__ import annotations

from operator import attrgetter

from kombu import compression as kombu_compression
from kombu.serialization import registry as serializer_registry
from kombu.transport import TRANSPORT_ALIASES, redis as kombu_redis, virtual

from jobs.exceptions import ConfigurationError

try:
    from redis import Redis
except ImportError:  # the redis extra isn't installed: no Redis transport
    Redis = None

#: ``"module.Class.name"`` of every private or undocumented kombu name used here.
USED: set[str] = set()


class KombuContractError(ConfigurationError):
    """The installed kombu lacks a private name jobs relies on."""


def _note(*names: str) -> None:
    USED.update(names)


def _private(owner, name: str):
    """kombu's ``owner.name``, noted in :data:`USED`; if it's gone, a stand-in that says so."""
    _note(f"{owner.__module__}.{owner.__qualname__}.{name}")
    try:
        return getattr(owner, name)
    except AttributeError:
        return _missing(owner, name)


def _private_attribute(owner, name: str) -> property:
    """A read-only property for the instance attribute ``name`` that kombu's ``owner`` sets."""
    _note(f"{owner.__module__}.{owner.__qualname__}.{name}")
    return property(attrgetter(name))


def _missing(owner, name: str):
    def missing(*args, **kwargs):
        import kombu

        raise KombuContractError(
            f"kombu {kombu.__version__} has no {owner.__qualname__}.{name}, which jobs relies on "
            "(see tests/test_kombu_contract.py); install a kombu release jobs supports")

    return missing


def _hooks(owner, **hooks: str) -> dict[str, str]:
    """Our public spelling -> kombu's private hook on ``owner``, each checked and noted."""
    for private in hooks.values():
        _private(owner, private)
    return hooks


class _Hooks:
    """Installs a subclass's public hook methods under the private names kombu calls."""

    HOOKS: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for public, private in cls.HOOKS.items():
            if public in cls.__dict__:
                setattr(cls, private, cls.__dict__[public])


# Transport aliases -------------------------------------------------------------------------


def register_transport(alias: str, path: str) -> None:
    """Make ``alias`` (a URL scheme, or ``Connection(transport=alias)``) resolve to the
    transport class at ``path`` ("module:Class")."""
    TRANSPORT_ALIASES.setdefault(alias, path)


_note("kombu.transport.TRANSPORT_ALIASES")


# Serializers and compression ---------------------------------------------------------------


def serializer_encodes(name: str) -> bool:
    """Whether kombu has an encoder registered under ``name`` ("json", "msgpack", ...)."""
    return name in serializer_registry._encoders


def serializer_decodes(content_type: str) -> bool:
    """Whether kombu has a decoder registered for ``content_type`` (or a name of one)."""
    return content_type in serializer_registry._decoders


def compression_aliases() -> dict[str, str]:
    """kombu's short names of compressions ("zlib", "bzip2", ...) -> their content types."""
    return dict(kombu_compression._aliases)


def compression_content_type(name: str) -> str:
    """The content type of compression ``name`` (an alias, or a content type already)."""
    return kombu_compression._aliases.get(name, name)


_note("kombu.serialization.SerializerRegistry._encoders",
      "kombu.serialization.SerializerRegistry._decoders", "kombu.compression._aliases")


# Virtual transports (django://) ------------------------------------------------------------


class VirtualQoS(virtual.QoS):
    """kombu's prefetch bookkeeping of a virtual channel, its private state spelt publicly."""

    #: Delivery tag -> message, for the messages delivered and not forgotten yet.
    delivered = _private_attribute(virtual.QoS, "_delivered")
    #: Tags acknowledged or rejected since :meth:`forget_settled` last ran.
    settled = _private_attribute(virtual.QoS, "_dirty")
    #: (): drop the settled messages from :attr:`delivered`.
    forget_settled = _private(virtual.QoS, "_flush")

    def settle(self, delivery_tag) -> None:
        """Count the message as acknowledged or rejected, without telling the broker."""
        self._quick_ack(delivery_tag)

    def cancel_restore_at_collect(self) -> None:
        """Stop kombu from restoring the unacked messages when this QoS is collected."""
        self._on_collect.cancel()

    @property
    def restored(self) -> bool:
        """Whether the unacked messages were restored already (kombu does it once)."""
        return getattr(self._delivered, "restored", False)

    @restored.setter
    def restored(self, value: bool) -> None:
        self._delivered.restored = value


_note("kombu.transport.virtual.base.QoS._quick_ack", "kombu.transport.virtual.base.QoS._on_collect",
      "kombu.transport.virtual.base.QoS._delivered.restored",
      # Undocumented steps of kombu's QoS that the django:// QoS overrides or reads.
      "kombu.transport.virtual.base.QoS.restore_unacked",
      "kombu.transport.virtual.base.QoS.restore_unacked_once",
      "kombu.transport.virtual.base.QoS.restore_at_shutdown",
      "kombu.transport.virtual.base.Channel.do_restore",
      "kombu.transport.virtual.base.Channel.from_transport_options")


class VirtualChannel(_Hooks, virtual.Channel):
    """kombu's virtual channel; subclasses implement its hooks under public names."""

    HOOKS = _hooks(
        virtual.Channel,
        put_message="_put",  # (queue, message, **kwargs): store a message
        get_message="_get",  # (queue, timeout=None): the next message, or raise Empty
        queue_size="_size",  # (queue): the number of messages ready
        purge_queue="_purge",  # (queue): delete the ready messages, return how many
        delete_queue="_delete",  # (queue, *args, **kwargs)
        new_queue="_new_queue",  # (queue, **kwargs)
        has_queue="_has_queue",  # (queue, **kwargs)
    )
    #: (message, reverse=False): the message's priority, clamped to kombu's range.
    message_priority = _private(virtual.Channel, "_get_message_priority")
    #: Consumer tag -> queue name.
    consumer_queues = _private_attribute(virtual.Channel, "_tag_to_queue")
    #: The queues consumed from.
    consumed_queues = _private_attribute(virtual.Channel, "_active_queues")
    #: The channel's QoS if it was made already, else None (``qos`` makes one).
    qos_if_made = _private_attribute(virtual.Channel, "_qos")


class VirtualTransport(virtual.Transport):
    """kombu's virtual transport, its private delivery step spelt publicly."""

    #: (message, queue): hand a message to its queue's consumer.
    deliver = _private(virtual.Transport, "_deliver")


# The transport's rotation over its channels: ``cycle.get(deliver, timeout=...)`` delivers one
# message from the next channel that has one, or raises Empty.
_note("kombu.transport.virtual.base.Transport.cycle")


def queue_size(channel, queue: str) -> int:
    """The messages ready in ``queue``, by a virtual transport's own count (on Redis a
    passive declare says nothing, and would ignore ``global_keyprefix``)."""
    return channel._size(queue)


# Redis -------------------------------------------------------------------------------------


class RedisQoS(kombu_redis.QoS):
    """kombu's Redis QoS, with the steps of its parent it builds on spelt publicly."""

    #: (message, delivery_tag): note a delivery in this process only; kombu's Redis QoS
    #: records it in the unacked hash and index on the server as well.
    append_locally = _private(virtual.QoS, "append")
    #: (delivery_tag): count a message acknowledged in this process only.
    ack_locally = _private(virtual.QoS, "ack")


class RedisChannel(_Hooks, kombu_redis.Channel):
    """kombu's Redis channel; subclasses implement its hooks under public names."""

    HOOKS = _hooks(
        kombu_redis.Channel,
        put_message="_put",  # (queue, message, **kwargs): LPUSH a message
        get_message="_get",  # (queue): take one message, or raise Empty
        start_wait="_brpop_start",  # (timeout=None): send the blocking wait
        read_wait="_brpop_read",  # (**options): read its reply and deliver, or raise Empty
        disconnect_pools="_disconnect_pools",  # (): drop the connection pools
        command_client="conn_or_acquire",  # (client=None): a context giving a client
    )
    put_message = _private(kombu_redis.Channel, "_put")
    disconnect_pools = _private(kombu_redis.Channel, "_disconnect_pools")
    command_client = _private(kombu_redis.Channel, "conn_or_acquire")
    #: (): a new redis client on the channel's connection pool.
    new_client = _private(kombu_redis.Channel, "_create_client")
    #: (queue, priority): the list key of ``queue`` for a priority.
    queue_key = _private(kombu_redis.Channel, "_q_for_pri")
    #: (message, reverse=False): the message's priority, clamped to kombu's range.
    message_priority = _private(kombu_redis.Channel, "_get_message_priority")
    #: (message, exchange, routing_key): fill in the delivery info as basic_publish does.
    augment_message = _private(kombu_redis.Channel, "_inplace_augment_message")
    #: (): send a pending re-authentication on the waiting connection, if it is idle.
    flush_reauth = _private(kombu_redis.Channel, "_flush_brpop_reauth")
    #: Queue name -> milliseconds, for the queues declared with an expiry.
    expiring_queues = _private_attribute(kombu_redis.Channel, "_expires")
    #: The channel's rotation of its queues (``consume(n)``, ``rotate(queue)``).
    queue_cycle = _private_attribute(kombu_redis.Channel, "_queue_cycle")
    #: The keyword argument through which kombu's producer batches reach ``_put``.
    PUBLISH_BATCH = "_publish_batch"

    def unacked_keys(self) -> tuple[str, str]:
        """kombu's unacked hash and index keys (without the global key prefix)."""
        return self.unacked_key, self.unacked_index_key

    def wait_sent(self, connection) -> None:
        """Tell kombu a wait was sent on ``connection``: its event loop and its watchdog
        of silent connections read these two."""
        self._in_poll = connection
        self._brpop_sent_at = kombu_redis.monotonic()

    def wait_read(self) -> None:
        """Tell kombu the wait's reply was read."""
        self._in_poll = None

    def transport_deliver(self):
        """The transport's delivery step, ``deliver(payload, queue)``."""
        return self.connection._deliver


_note(*(f"kombu.transport.redis.Channel.{name}" for name in (
    "_in_poll", "_brpop_sent_at", "unacked_key", "unacked_index_key", "_put(_publish_batch=)")),
    "kombu.transport.redis.monotonic", "kombu.transport.redis.QoS.restore_visible",
    "kombu.transport.redis.Channel.Client.execute_command")


def execute_prefixed(client, *args):
    """Run a command whose key arguments carry ``global_keyprefix`` already: redis-py's own
    ``execute_command``, not the one of kombu's client class, which would prefix them again."""
    return Redis.execute_command(client, *args)


def touch_unacked(channel, delivery_tags, now: float) -> None:
    """Set the time of these messages in kombu's unacked index to ``now`` (those still in
    it), so that restoring leaves them alone for another visibility timeout."""
    # Not channel.client: its connection may be waiting for a claim's reply.
    with channel.conn_or_acquire() as client:
        client.zadd(channel.unacked_index_key, dict.fromkeys(delivery_tags, now), xx=True)


def forget_unacked(channel, delivery_tags) -> None:
    """Remove these messages from kombu's unacked records, in one transaction: what kombu's
    ack does for one message."""
    with channel.conn_or_acquire() as client:
        pipe = client.pipeline()
        pipe.zrem(channel.unacked_index_key, *delivery_tags)
        pipe.hdel(channel.unacked_key, *delivery_tags)
        pipe.execute()


def restore_visible(channel, num: int, interval: int) -> None:
    """Put unacked messages whose visibility timeout passed (those of dead workers) back on
    their queues: at most ``num``, on one call in ``interval``."""
    channel.qos.restore_visible(num=num, interval=interval)
