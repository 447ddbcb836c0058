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

The names of kombu's Redis transport are in :mod:`jobs.compat.kombu.redis`, imported only by
our Redis transport: kombu's Redis module needs the ``redis`` extra's packages, which a
project on the database broker doesn't install.
"""

from __future__ import annotations

from operator import attrgetter

from kombu import compression as kombu_compression
from kombu.serialization import registry as serializer_registry
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.utils import json as kombu_json

from jobs.exceptions import ConfigurationError

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


def json_is_kombus() -> bool:
    """Whether the "json" serializer is kombu's own (not replaced in its registry), whose
    text for JSON's own types is the standard library's."""
    return serializer_registry._encoders.get("json") == _KOMBU_JSON


_KOMBU_JSON = ("application/json", "utf-8", kombu_json.dumps)


def json_decoder_is_kombus() -> bool:
    """Whether "application/json" is decoded by kombu's own ``loads`` (not replaced in its
    registry): the standard library's decoder, with a hook restoring kombu's own types
    (objects with a ``__type__`` key)."""
    return serializer_registry._decoders.get("application/json") is kombu_json.loads


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
    #: (message, exchange, routing_key): kombu's own step before a message is stored, as
    #: basic_publish takes it (its body encoded, its delivery tag and info set).
    augment_message = _private(virtual.Channel, "_inplace_augment_message")
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
