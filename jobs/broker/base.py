"""The Broker: how to reach the message broker, how to publish to it, what it can do."""

from __future__ import annotations

import concurrent.futures
import logging
import re
from typing import ClassVar
from urllib.parse import urlsplit

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from kombu import Connection, Queue
from kombu.transport import virtual

from jobs.broker.publisher import PUBLISHER_ERRORS, FreeList
from jobs.broker.routing import Routing
from jobs.compat import kombu as kombu_compat
from jobs.compat.django import in_atomic_block
from jobs.conf import settings
from jobs.exceptions import PublishError, TransportUnavailable
from jobs.messages import Envelope

logger = logging.getLogger("jobs.broker")

#: Seconds the broker may take to report its queue depths.
DEPTHS_TIMEOUT = 2.0


class Broker:
    """A message broker reached through kombu's own transport for its URL's scheme, with
    no ability beyond publishing and consuming (``memory://``, kombu's other transports).

    :class:`jobs.broker.kinds` holds the brokers jobs knows better: ``django://``, Redis and
    RabbitMQ. Build one with :meth:`for_url`, or take the project's with
    :func:`jobs.broker.get_broker`.
    """

    #: The message is written in the publisher's database transaction: it is seen with the
    #: commit and gone with a rollback, so publishing needn't wait for ``on_commit``.
    transactional_enqueue = False
    #: The broker holds a delayed message until its eta by itself; elsewhere a worker parks
    #: it in the database until due (:mod:`jobs.middleware.delay`).
    durable_delay = False
    #: The worker's heartbeat must call :meth:`renew_leases` for its in-flight messages.
    renews_leases = False
    #: The priorities the broker orders deliveries by; the highest runs first (empty: none).
    priority_levels = range(0)
    #: Why a priority can't be given here, when ``priority_levels`` is empty.
    no_priorities = "this broker orders no priorities"
    #: The kombu transport alias to use (None: kombu's own for the URL's scheme).
    transport: str | None = None
    #: A job sent to a queue bound to a fanout exchange (kombu's ``Broadcast``) runs once on
    #: every worker consuming it, each from a queue of its own
    #: (:mod:`jobs.middleware.broadcast` records each run apart).
    broadcasts = False
    #: A worker acknowledges its copy of a broadcast job, and the broker hands it back if
    #: the worker's connection breaks first. False: the broker forgets a copy once it hands
    #: it out (Redis's PUB/SUB), so there is nothing to acknowledge.
    acks_broadcasts = True
    #: The ``x-max-priority`` its queues are declared with (RabbitMQ's; None: none).
    queue_max_priority: int | None = None
    #: Transport options that make this broker safe for jobs; BROKER_TRANSPORT_OPTIONS wins.
    default_transport_options: ClassVar[dict] = {}
    #: Several messages go out in one pipeline or statement (``channel.publish_many``).
    pipelines_batches = False
    #: Commands to the workers travel on a fanout exchange (kombu's Mailbox); elsewhere
    #: through the database (:mod:`jobs.control.channels`).
    fanout_control = True
    #: The worker can wait on the connection's sockets itself (:meth:`sockets`).
    watches_sockets = False

    def __init__(self, url: str) -> None:
        from jobs.transport import register

        register()
        self.url = url
        self.scheme = self.scheme_of(url)
        #: The URL without passwords, to show and to log.
        self.display_url = without_passwords(url)
        self.transport_options = {**self.default_transport_options,
                                  **settings.BROKER_TRANSPORT_OPTIONS}
        self.connection_options: dict = {"connect_timeout": settings.BROKER_CONNECTION_TIMEOUT}
        self.publishers = FreeList(self, settings.BROKER_POOL_LIMIT or 0)
        self.routing = Routing(self.queue_max_priority)
        self._loadable = False  # its transport was seen to import, in this process

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.display_url}>"

    @staticmethod
    def scheme_of(url: str) -> str:
        """The scheme of a broker URL: "django", "redis", "amqp", ..."""
        return urlsplit(url).scheme

    @classmethod
    def for_url(cls, url: str) -> Broker:
        """The broker of ``url``, of the class that knows its scheme."""
        from jobs.broker.kinds import KINDS

        return KINDS.get(cls.scheme_of(url), Broker)(url)

    # Connecting ----------------------------------------------------------------------------

    def connection(self) -> Connection:
        """A new, unconnected kombu Connection to this broker; TransportUnavailable, in one
        line naming the missing package and its extra, if its transport can't be loaded."""
        if not self._loadable:
            from jobs.transport import unavailable

            problem = unavailable(self.url)
            if problem:
                raise TransportUnavailable(problem)
            self._loadable = True
        return Connection(self.url, transport=self.transport,
                          transport_options=dict(self.transport_options),
                          **self.connection_options)

    def close(self) -> None:
        """Close the idle publishers' connections."""
        self.publishers.close()

    # Routing -------------------------------------------------------------------------------

    def queue_for(self, name: str) -> Queue:
        """The kombu Queue for ``name``: the one declared in TASK_QUEUES, else a durable queue
        bound to a direct exchange of the same name, as Celery declares its queues, so the
        two can share them (:mod:`jobs.broker.routing`)."""
        return self.routing.queue(name)

    def priority_problem(self, priority) -> str | None:
        """Why ``priority`` can't be asked of this broker, or None (None asks for none)."""
        levels = self.priority_levels
        if priority is None or (priority.__class__ is int and priority in levels):
            return None
        if not isinstance(priority, int) or isinstance(priority, bool):
            return f"priority={priority!r} must be a whole number"
        if not levels:
            return f"priority={priority!r}: {self.no_priorities}"
        return (f"priority={priority!r} must be {levels.start}..{levels.stop - 1} on "
                f"{self.display_url} (the highest runs first)")

    def declare(self, connection, name: str) -> None:
        """Declare queue ``name`` (and its exchange) on ``connection``."""
        self.queue_for(name)(connection.default_channel).declare()

    def consuming(self, connection, names) -> list[Queue]:
        """The queues a worker consumes, ready for its Consumer to declare: for a broadcast
        queue, the worker's own, bound to the queue's fanout exchange."""
        return [self.routing.own_queue(name, no_ack=not self.acks_broadcasts)
                if self.broadcasts and self.routing.fanout(name) else self.queue_for(name)
                for name in names]

    def known_queues(self) -> set[str]:
        """The queues jobs are sent to by name: the default, the declared ones and routes'."""
        return self.routing.known_queues()

    # Publishing ----------------------------------------------------------------------------

    def publish(self, envelope: Envelope, *, on_commit: bool | None = None, compression=None,
                retry: bool | None = None, retry_policy: dict | None = None) -> None:
        """Send ``envelope`` to its queue.

        Inside ``transaction.atomic()`` the message waits for the commit, so no worker sees
        a job for rows that were rolled back, unless the broker writes it in the same
        transaction (:attr:`transactional_enqueue`). ``on_commit=False`` sends now.
        """
        self._now_or_on_commit(self._sender(envelope, compression, retry, retry_policy), on_commit)

    def publish_many(self, envelopes: list[Envelope], *, on_commit: bool | None = None,
                     compression=None) -> None:
        """Send many messages through one publisher, pipelined where the broker can batch
        (one round trip per batch on Redis)."""
        if envelopes:
            self._now_or_on_commit(self._sender(envelopes, compression, None, None), on_commit)

    def publish_raw(self, queue: str, body: bytes, *, headers: dict, content_type: str,
                    content_encoding: str, properties: dict | None = None) -> None:
        """Send an already-serialized message as it is (requeueing a dead letter)."""
        properties = properties or {}
        try:
            with self.publishers.publisher() as publisher:
                publisher.declare(queue)
                publisher.producer.publish(
                    body, exchange="", routing_key=queue,
                    headers=headers, content_type=content_type,
                    content_encoding=content_encoding,
                    correlation_id=properties.get("correlation_id"),
                    priority=properties.get("priority"), delivery_mode=2,
                    retry=settings.TASK_PUBLISH_RETRY,
                    retry_policy=settings.TASK_PUBLISH_RETRY_POLICY,
                )
        except PUBLISHER_ERRORS as exc:
            raise PublishError(f"could not send to {self.display_url!r}: {exc}") from exc

    def _now_or_on_commit(self, send, on_commit: bool | None) -> None:
        if on_commit is None:
            on_commit = settings.TASK_ENQUEUE_ON_COMMIT
        # The default database's connection, which on_commit() waits for (not through
        # django.db.connection, a proxy that costs more than the rest of this).
        if (on_commit and not self.transactional_enqueue
                and in_atomic_block(connections[DEFAULT_DB_ALIAS])):
            transaction.on_commit(send)
        else:
            send()

    def _sender(self, envelopes, compression, retry, retry_policy):
        if isinstance(envelopes, Envelope):
            envelopes = (envelopes,)
        compression = compression or settings.TASK_COMPRESSION
        retry = settings.TASK_PUBLISH_RETRY if retry is None else retry
        publishers = self.publishers

        def send() -> None:
            try:
                try:
                    publishers.send(envelopes, compression)
                except PUBLISHER_ERRORS:
                    if not retry:
                        raise
                    # The connection broke or can't be made: try again as the policy says.
                    policy = retry_policy or settings.TASK_PUBLISH_RETRY_POLICY
                    publishers.send(envelopes, compression, policy)
            except PUBLISHER_ERRORS as exc:
                message = envelopes[0].message
                more = f" (and {len(envelopes) - 1} more)" if len(envelopes) > 1 else ""
                raise PublishError(
                    f"could not send job {message.name}[{message.id}]{more} to "
                    f"{self.display_url!r}: {exc}"
                ) from exc

        return send

    # What the broker can do ----------------------------------------------------------------

    def problems(self) -> list[str]:
        """What is missing from the settings for this broker (the system checks say it)."""
        return []

    def set_prefetch(self, consumer, count: int) -> None:
        """Let the worker's ``consumer`` hold up to ``count`` unacknowledged messages."""
        consumer.qos(prefetch_count=count)

    def renew_leases(self, channel, delivery_tags: list[str]) -> None:
        """Keep the broker from handing these in-flight messages of ``channel`` to another
        consumer (the worker's heartbeat calls this when :attr:`renews_leases`)."""

    def keep(self, channel, delivery_tags: list) -> None:
        """``channel``'s connection is lost while the jobs of these messages still run:
        keep the broker from handing them out again when the channel closes, where it can
        (:meth:`ack_lost` acknowledges them when the runs end). Elsewhere they come back."""

    def ack_lost(self, channel, delivery_tag) -> bool:
        """Acknowledge, on ``channel``, a message delivered on a connection lost since,
        where the broker knows a message by its tag alone; False where it can't (the
        message is delivered again: on RabbitMQ a tag belongs to its channel)."""
        return False

    def give_back_lost(self, channel, delivery_tag) -> bool:
        """Hand back, on ``channel``, a message delivered on a connection lost since and kept
        for its run (:meth:`keep`), whose run ended without an outcome: its job is to run
        again, now rather than once the broker's hold on it runs out. False where the
        broker can't (the message comes back on its own)."""
        return False

    def explain(self, exc: Exception) -> str | None:
        """What a user should know of ``exc``, the reason the worker's connection was lost,
        beyond its own message (and what to do about it); None: nothing more."""
        return None

    def sockets(self, connection) -> list[int] | None:
        """What the worker may wait on itself, beside its pool, before taking messages with
        ``connection.drain_events(timeout=0)``: the sockets that become readable when the
        broker has sent something (a wait for messages that needs asking is sent first). An
        empty list: something was read already, take it now. None where the transport can't
        tell (``django://``, kombu's other transports): the worker waits in ``drain_events``,
        and a pool that has outcomes to collect collects them in a thread of its own."""
        waitable = getattr(connection.transport, "waitable", None)
        return None if waitable is None else waitable(connection.connection)

    def batch_acks(self, channel):
        """Have ``channel`` send acknowledgements in batches where it can: returns the
        function that sends those noted so far, or None (each goes at once). The worker calls
        it with ``idle=True`` when it has nothing in flight: a broker may keep them a
        little longer for its next round trip (the database broker's next claim); otherwise
        (busy, stopping, standing down, acknowledging before a job runs) they go now."""
        return None

    def queue_depths(self, names) -> dict:
        """Messages per queue, as the dashboard shows them: *ready* to be taken, *reserved*
        by a worker, *delayed* until due; None where the broker doesn't say.

        Here the broker is asked for the ready count (time-bound: one that is down shows as
        unavailable, and never holds up the caller); the reserved count is its own business.
        Delayed jobs are rows in the database, parked there by workers until due.
        """
        from jobs.transport.table import queue_depths as parked_depths

        parked = parked_depths()
        counts, error = self.ready_counts(sorted(names))
        rows = [{"name": name, "ready": counts.get(name) if counts is not None else None,
                 "reserved": None, "delayed": sum(parked.get(name, {}).values())}
                for name in sorted(set(names) | set(parked))]
        return {"available": counts is not None, "error": error, "rows": rows}

    def ready_counts(self, names: list[str], timeout: float = DEPTHS_TIMEOUT,
                     ) -> tuple[dict | None, str]:
        """Ready messages per queue, or ``(None, why)`` if the broker can't say in time."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(self._ask_ready_counts, names)
        pool.shutdown(wait=False)  # a broker that hangs keeps the thread, not the caller
        try:
            return future.result(timeout=timeout), ""
        except concurrent.futures.TimeoutError:
            return None, f"the broker did not answer within {timeout:g} s"
        except Exception as exc:
            logger.warning("Could not read queue depths: %s", exc)
            return None, f"{type(exc).__name__}: {exc}"

    def _ask_ready_counts(self, names: list[str]) -> dict[str, int]:
        counts = {}
        with self.connection() as connection:
            connection.connect()
            channel = connection.channel()
            for name in names:
                try:
                    counts[name] = _ready(channel, name)
                except connection.channel_errors:
                    counts[name] = 0  # never declared: nothing was sent to it yet
                    channel = _fresh(channel, connection)
            channel.close()
        return counts

    def purge(self, names) -> int:
        """Delete the messages of these queues that are ready to be taken (not those held by
        a worker, nor delayed ones); returns how many."""
        purged = 0
        with self.connection() as connection:
            channel = connection.channel()
            for name in names:
                try:
                    purged += self.queue_for(name)(channel).purge() or 0
                except connection.channel_errors:  # never declared: nothing to purge
                    channel = _fresh(channel, connection)
            channel.close()
        return purged


def without_passwords(url: str) -> str:
    """``url`` with its passwords masked (a failover list of URLs has several)."""
    return re.sub(r"(://[^:/@;]*:)[^@;/]*@", r"\1**@", url)


def _ready(channel, name: str) -> int:
    if isinstance(channel, virtual.Channel):
        return kombu_compat.queue_size(channel, name)
    return channel.queue_declare(name, passive=True).message_count


def _fresh(channel, connection):
    """A usable channel after a channel error (AMQP closes the channel on one)."""
    try:
        channel.close()
    except Exception:
        pass
    return connection.channel()

