"""The brokers jobs knows well: the project's database, Redis, RabbitMQ."""

from __future__ import annotations

import logging
import ssl
import time
from typing import ClassVar

from amqp.exceptions import PreconditionFailed
from django.db import DEFAULT_DB_ALIAS

from jobs.broker.base import Broker
from jobs.conf import settings

logger = logging.getLogger("jobs.broker")


class DatabaseBroker(Broker):
    """``django://``: messages are rows in the project's database (:mod:`jobs.transport.django`).

    A message published inside ``transaction.atomic()`` is a row of that transaction, a
    delayed one a row that stays invisible until its eta, and a consumer's lease on a row is
    renewed while it runs the job.
    """

    durable_delay = True
    renews_leases = True
    priority_levels = range(256)
    fanout_control = False
    #: ``delay_many``'s messages are inserted together: one COPY on PostgreSQL, a multi-row
    #: INSERT per batch elsewhere (:meth:`jobs.transport.table.MessageTable.insert_many`).
    pipelines_batches = True

    def __init__(self, url: str) -> None:
        super().__init__(url)
        #: The database alias of the message rows (transport option ``database``).
        self.database = self.transport_options.get("database", DEFAULT_DB_ALIAS)
        # The caller's transaction is the default database's: rows written elsewhere must
        # wait for its commit like any other broker's messages.
        self.transactional_enqueue = self.database == DEFAULT_DB_ALIAS

    def renew_leases(self, channel, delivery_tags: list[str]) -> None:
        if delivery_tags:
            channel.extend_leases()
            channel.renew_kept(delivery_tags)

    def batch_acks(self, channel):
        qos = channel.qos
        qos.defer_acks = True
        return qos.flush_acks

    def keep(self, channel, delivery_tags: list) -> None:
        # Closing the channel would release the leases of every message it holds, running
        # jobs' too, for any worker to take: those stay leased, renewed by the heartbeat
        # from the next channel while they run, and deleted by tag when they end.
        channel.keep(delivery_tags)

    def ack_lost(self, channel, delivery_tag) -> bool:
        return channel.delete_kept(delivery_tag)

    def give_back_lost(self, channel, delivery_tag) -> bool:
        return channel.release_kept(delivery_tag)

    def queue_depths(self, names) -> dict:
        """Messages per queue, all counted in the database (one query)."""
        from jobs.transport.table import queue_depths

        counts = queue_depths(self.database)
        rows = [{"name": name, "ready": counts.get(name, {}).get("ready", 0),
                 "reserved": counts.get(name, {}).get("leased", 0),
                 "delayed": counts.get(name, {}).get("delayed", 0)}
                for name in sorted(set(names) | set(counts))]
        return {"available": True, "error": "", "rows": rows}


class RedisBroker(Broker):
    """``redis://``, ``rediss://``: kombu's Redis layout (Celery shares the queues), consumed
    through :mod:`jobs.transport.redis`, which takes a message from its queue and records it
    as unacknowledged in one step.

    A killed worker's messages come back after a short visibility timeout, which a live
    worker's heartbeat keeps renewing for the messages it holds.
    """

    renews_leases = True
    #: kombu's Redis transport sends a fanout exchange's messages with PUB/SUB: only the
    #: workers subscribed at that moment get one, and none is kept or handed back.
    broadcasts = True
    acks_broadcasts = False
    #: kombu's Redis transport serves priorities 0..9, grouped by its ``priority_steps``.
    priority_levels = range(10)
    transport = "jobs-redis"
    pipelines_batches = True
    watches_sockets = True  # over TLS too (jobs.transport.redis.Transport.waitable)
    default_transport_options: ClassVar[dict] = {
        # kombu's default (one hour) would hold a dead worker's jobs that long; the worker
        # renews the visibility of its in-flight messages, so a short timeout is safe.
        "visibility_timeout": 60,
        # A worker killed while restoring others' messages holds this lock until it expires
        # (kombu's default is five minutes, which stalls every restore that long).
        "unacked_mutex_expire": 10,
        # Our own records of delivered, unacknowledged messages. kombu's defaults are the
        # names Celery's workers use: sharing them, each side would restore the other's
        # in-flight messages by its own visibility timeout (a long Celery task started
        # again by a jobs worker). The queues themselves stay Celery's.
        "unacked_key": "jobs.unacked",
        "unacked_index_key": "jobs.unacked_index",
        "unacked_mutex_key": "jobs.unacked_mutex",
    }

    def __init__(self, url: str) -> None:
        super().__init__(url)
        if self.scheme == "rediss":
            # kombu turns TLS on for rediss:// only when it picks the transport from the
            # URL's scheme; naming ours, say it here as kombu would (ssl_* options in the
            # URL's query take precedence).
            self.connection_options["ssl"] = {"ssl_cert_reqs": ssl.CERT_NONE}
            if "ssl_cert_reqs" not in url:
                logger.warning("%s: rediss:// without ssl_cert_reqs does not check the "
                               "server's certificate (add ?ssl_cert_reqs=required)",
                               self.display_url)

    def renew_leases(self, channel, delivery_tags: list[str]) -> None:
        from jobs.compat.kombu import redis as kombu_redis_compat  # needs the redis extra

        if delivery_tags:
            kombu_redis_compat.touch_unacked(channel, delivery_tags, time.time())
        # And bring back the messages of workers that died.
        kombu_redis_compat.restore_visible(channel, num=100, interval=1)

    def batch_acks(self, channel):
        qos = channel.qos
        qos.defer_acks = True
        return qos.flush_acks

    def keep(self, channel, delivery_tags: list) -> None:
        # Closing the channel would put every message it delivered back on its queue at
        # once, running jobs' too, for any worker to take: they stay in the unacknowledged
        # records instead, renewed by the heartbeat while they run. The acknowledgements
        # noted before the loss go now, if Redis answers.
        qos = channel.qos
        for tag in delivery_tags:
            qos.ack_locally(tag)
        qos.flush_acks()

    def ack_lost(self, channel, delivery_tag) -> bool:
        channel.forget([delivery_tag])  # jobs.transport.redis.Channel
        return True

    def give_back_lost(self, channel, delivery_tag) -> bool:
        from jobs.compat.kombu import redis as kombu_redis_compat  # needs the redis extra

        kombu_redis_compat.restore_unacked(channel, delivery_tag)
        return True


class SentinelBroker(RedisBroker):
    """``sentinel://host:26379;sentinel://host2:26379`` with ``master_name`` in
    ``BROKER_TRANSPORT_OPTIONS``, as Celery has it: Redis behind Sentinel, with everything
    :class:`RedisBroker` does (the atomic claim, renewed visibility, batched acks). The
    connections ask the sentinels for the master, and again after a failover."""

    transport = "jobs-sentinel"

    def problems(self) -> list[str]:
        if not self.transport_options.get("master_name"):
            return ["a sentinel:// broker needs the name of the Redis master the sentinels "
                    "watch: JOBS['BROKER_TRANSPORT_OPTIONS'] = {'master_name': 'mymaster'}"]
        return []


class AmqpBroker(Broker):
    """``amqp://`` (RabbitMQ), through kombu's py-amqp transport with buffered reads and
    batched acknowledgements (:mod:`jobs.transport.amqp`). RabbitMQ hands a dead consumer's
    messages to another as soon as its connection closes.

    Its queues order priorities when they are declared with ``x-max-priority``
    (``TASK_QUEUE_MAX_PRIORITY``); without it, as Celery declares them by default, a priority
    is refused at the call rather than ignored. A queue's arguments can't change once it
    exists: one declared before without them is used as it is, and the worker and the
    publisher say, once, how to move it.
    """

    no_priorities = ("RabbitMQ queues are declared without priorities: set "
                     "JOBS['TASK_QUEUE_MAX_PRIORITY'] (10 is usual) to use them")
    broadcasts = True

    def __init__(self, url: str) -> None:
        self.queue_max_priority = settings.TASK_QUEUE_MAX_PRIORITY or None
        super().__init__(url)
        # kombu's transport with buffered reads and batched acks (jobs.transport.amqp).
        self.transport = "jobs-amqps" if self.scheme == "amqps" else "jobs-amqp"
        # Over TLS the socket may not show what its layer holds already.
        self.watches_sockets = self.scheme != "amqps"
        self.priority_levels = range(self.queue_max_priority + 1 if self.queue_max_priority else 0)

    def declare(self, connection, name: str) -> None:
        queue = self.queue_for(name)
        if queue.max_priority is None or queue.no_declare:
            return super().declare(connection, name)
        # On a channel of its own: RabbitMQ closes the channel that a declaration offends.
        channel = connection.channel()
        try:
            queue(channel).declare()
        except PreconditionFailed as exc:
            self._use_as_it_is(name, exc)
        finally:
            if channel.is_open:
                channel.close()

    def consuming(self, connection, names) -> list:
        for name in names:
            if not self.routing.fanout(name):  # a worker's own broadcast queue is new
                self.declare(connection, name)
        return super().consuming(connection, names)

    def set_prefetch(self, consumer, count: int) -> None:
        # For the whole channel: RabbitMQ applies a per-consumer count only to consumers
        # started after it, and a worker holds ``count`` messages whatever its number of
        # queues. Quorum queues take only a per-consumer count.
        quorum = any((q.queue_arguments or {}).get("x-queue-type") == "quorum"
                     for q in consumer.queues)
        consumer.qos(prefetch_count=count, apply_global=not quorum)

    def explain(self, exc: Exception) -> str | None:
        if isinstance(exc, PreconditionFailed) and "delivery acknowledgement" in str(exc):
            return ("RabbitMQ closed the channel because a message stayed unacknowledged past "
                    "its consumer timeout (30 minutes unless configured), which a job running "
                    "longer than that always meets: the messages held here go back to the "
                    "queue. Raise consumer_timeout in rabbitmq.conf above your longest job's "
                    "run (or, from RabbitMQ 3.12, the queue's x-consumer-timeout argument in "
                    "TASK_QUEUES). See docs/brokers.md#long-jobs-on-rabbitmq")
        return None

    def batch_acks(self, channel):
        # Acknowledgements of messages finished together go in one basic.ack (multiple)
        # where no message below them is still unsettled (jobs.transport.amqp).
        if not hasattr(channel, "flush_acks"):
            return None
        channel.defer_acks = True
        return channel.flush_acks

    def _use_as_it_is(self, name: str, exc: Exception) -> None:
        logger.error(
            "RabbitMQ queue %r exists without x-max-priority=%d, so its jobs run in the order "
            "sent, whatever their priority (%s). A queue's arguments can't change: when it is "
            "empty, stop its workers, delete it (rabbitmqctl delete_queue %s) and start them "
            "again; or send its jobs to a new queue. See docs/routing.md.",
            name, self.queue_max_priority, exc, name)
        self.routing.use_as_it_is(name)


#: URL scheme -> the class of its broker (others: :class:`Broker`).
KINDS: dict[str, type[Broker]] = {
    "django": DatabaseBroker,
    "redis": RedisBroker,
    "rediss": RedisBroker,
    "sentinel": SentinelBroker,
    "amqp": AmqpBroker,
    "amqps": AmqpBroker,
    "pyamqp": AmqpBroker,
}
