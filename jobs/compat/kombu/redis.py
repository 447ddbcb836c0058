"""kombu's Redis transport's private names (see :mod:`jobs.compat.kombu`); imported only by
:mod:`jobs.transport.redis`, since kombu's Redis module needs the ``redis`` extra."""

from __future__ import annotations

from kombu.transport import redis as kombu_redis, virtual
from redis import Redis

from jobs.compat.kombu import _Hooks, _hooks, _note, _private, _private_attribute


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
        delivery_tag="_next_delivery_tag",  # (): a new message's delivery tag
        # (message, exchange, routing_key): encode the body, set the delivery tag and info
        augment_message="_inplace_augment_message",
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
    #: (message, exchange, routing_key): kombu's own step before a message is stored, as
    #: basic_publish takes it (its body encoded, its delivery tag and info set).
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
    "kombu.transport.redis.QoS.restore_by_tag",
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


def restore_unacked(channel, delivery_tag) -> None:
    """Put the message of ``delivery_tag`` back on its queue from kombu's unacked records,
    where the next claim takes it first; nothing if it isn't there."""
    channel.qos.restore_by_tag(delivery_tag)


def restore_visible(channel, num: int, interval: int) -> None:
    """Put unacked messages whose visibility timeout passed (those of dead workers) back on
    their queues: at most ``num``, on one call in ``interval``."""
    channel.qos.restore_visible(num=num, interval=interval)


def socket_of(connection):
    """The socket of a redis-py ``connection``, read where kombu's own event loop reads it
    (``connection._sock``); ConnectionError if it has none (closed)."""
    sock = connection._sock
    if sock is None:
        from redis.exceptions import ConnectionError

        raise ConnectionError("the connection is closed")
    return sock


def polled_sockets(transport) -> list:
    """The socket objects kombu's Redis event loop polls (each channel's waiting connection,
    and its subscriber connection for broadcast queues)."""
    return list(transport.cycle._chan_to_sock.values())


def wait_sockets(transport) -> list[int]:
    """The sockets kombu's Redis event loop polls, once each channel's wait (our claim) is
    sent, as that loop sends it before every poll."""
    cycle = transport.cycle
    cycle.on_poll_start()
    return list(cycle.fds)


_note("kombu.transport.redis.MultiChannelPoller.on_poll_start",
      "kombu.transport.redis.MultiChannelPoller.fds",
      "kombu.transport.redis.MultiChannelPoller._chan_to_sock")
