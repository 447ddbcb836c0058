"""The ``django://`` kombu transport: messages are rows in the project's own database.

``kombu.Connection("django://")`` stores each message as a :class:`jobs.models.Message` row,
through Django's connection of the calling thread (SQLite or PostgreSQL). Publishing inside
``transaction.atomic()`` commits the message with the business data, or not at all.

Delivery is at least once, with leases. A consumer claims a batch of ready rows in one
statement, setting a lease (``visibility_timeout``, default 30 s) that the channel renews
while its consumer keeps calling ``drain_events``; ack deletes the row, reject with requeue
clears the lease, closing the channel releases what it still holds. A consumer that dies
keeps its leases only until they expire; then its messages are delivered again.

Transport options:

* ``visibility_timeout`` -- seconds a claimed message stays leased without renewal (30).
* ``polling_interval`` -- longest wait between polls: 0.1 s, or 1 s on PostgreSQL, where a
  NOTIFY from the publisher wakes consumers at once. On SQLite a consumer polls as soon as
  another connection commits (:mod:`jobs.transport.listener`), so the next job of a burst,
  or of a caller waiting for each result, is not left waiting a whole interval.
* ``database`` -- the Django database alias ("default").
"""

from __future__ import annotations

import os
import socket
import threading
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from queue import Empty
from time import monotonic
from uuid import uuid4

from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.utils import timezone
from kombu.log import get_logger
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from jobs.batch import Stencil
from jobs.compat.kombu import VirtualChannel, VirtualQoS, VirtualTransport
from jobs.messages import envelope_json
from jobs.transport.listener import BUSY_FOR, Listener
from jobs.transport.table import ClaimedRow, MessageTable, NewRow, queue_depths
from jobs.transport.tolerant import tolerant

__all__ = ["Channel", "QoS", "Transport", "queue_depths"]

logger = get_logger("jobs.transport")

#: Most rows one claim takes, whatever the prefetch count.
MAX_BATCH = 100
#: Seconds acknowledgements may wait for the next claim to delete them in its transaction,
#: when the worker has nothing in flight (the worker flushes them after that, or at once when
#: it must: stopping, or acknowledging before a job runs).
ACKS_WAIT = 0.1

#: Delivery tag -> the lease owner of the closed channel that kept its message (keep()):
#: a worker's next channel renews and deletes those rows by this owner.
_kept_owners: dict[str, str] = {}


def _by_owner(delivery_tags) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for tag in delivery_tags:
        owner = _kept_owners.get(tag)
        if owner is not None:
            owners.setdefault(owner, []).append(tag)
    return owners


class QoS(VirtualQoS):
    """kombu's prefetch bookkeeping, with ack, reject and restore done on the rows.

    Restoring unacked messages releases this channel's leases instead of publishing the
    messages again, which would duplicate their rows.
    """

    #: Set by a consumer that acknowledges in batches: ``ack`` then only notes the tag, and
    #: :meth:`flush_acks` deletes the noted rows in one statement. Until then they stay
    #: leased, so a crash in between delivers them again once their lease runs out.
    defer_acks = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending_acks: list[str] = []
        self._pending_since = 0.0
        self._for_claim = False  # an idle worker's flush left them for the next claim

    def ack(self, delivery_tag):
        if self.defer_acks:
            if not self._pending_acks:
                self._pending_since = monotonic()
            self._pending_acks.append(delivery_tag)
        else:
            self.channel.table.delete(self.channel.lease_owner, delivery_tag)
        super().ack(delivery_tag)

    def flush_acks(self, idle: bool = False) -> None:
        """Delete the rows of the messages acknowledged since the last flush, in one
        statement and one commit. For an ``idle`` worker they wait for its next claim
        (:meth:`take_acks`), until the oldest has waited :data:`ACKS_WAIT`: a busy worker
        deletes a batch every few milliseconds, an idle one would delete each job's row as
        the next job's STARTED write comes."""
        if idle and monotonic() - self._pending_since < ACKS_WAIT:
            self._for_claim = bool(self._pending_acks)
            return
        self._for_claim = False
        tags, self._pending_acks = self._pending_acks, []
        if tags:
            self.channel.table.delete_many(self.channel.lease_owner, tags)

    def take_acks(self) -> list[str]:
        """The acknowledgements an idle worker's flush left for the channel's next claim to
        send in its own transaction (:meth:`give_back_acks` if it fails); none otherwise."""
        if not self._for_claim:
            return []
        self._for_claim = False
        tags, self._pending_acks = self._pending_acks, []
        return tags

    def give_back_acks(self, tags: list[str]) -> None:
        self._pending_acks[:0] = tags
        self._for_claim = True

    def reject(self, delivery_tag, requeue=False):
        table, owner = self.channel.table, self.channel.lease_owner
        if requeue:
            table.release(owner, [delivery_tag])
        else:
            table.delete(owner, delivery_tag)
        self.settle(delivery_tag)

    def unacked_tags(self) -> list[str]:
        """Delivery tags of the messages delivered and neither acked nor rejected yet."""
        settled = self.settled
        # A copy first: the consuming thread may add deliveries while a heartbeat reads.
        return [tag for tag in tuple(self.delivered) if tag not in settled]

    def restore_unacked(self):
        try:
            self.flush_acks()  # before releasing the leases, which would free these rows too
        except Exception:
            pass  # their leases run out: delivered again, and found done already
        self.channel.release_leases()
        self.forget_settled()
        self.delivered.clear()
        return []

    def restore_unacked_once(self, stderr=None):
        """Release the channel's leases once: at close, or when the channel is collected.

        Unlike kombu's, this runs when only undelivered (buffered) rows are held, too.
        """
        self.cancel_restore_at_collect()
        if self.restored:
            return
        self.restored = True
        if self.restore_at_shutdown and self.channel.do_restore:
            self.restore_unacked()


class Channel(VirtualChannel):
    """A consumer or producer of ``django://``: claims, buffers and renews its messages."""

    QoS = QoS
    Message = tolerant(virtual.Message)
    #: Priorities 0..255 (kombu's channels clamp to 0..9), the highest delivered first.
    max_priority = 255
    from_transport_options = (*virtual.Channel.from_transport_options,
                              "visibility_timeout", "database")

    #: Seconds a claimed message stays leased without renewal.
    visibility_timeout = 30.0
    #: Django database alias.
    database = "default"

    def __init__(self, connection, **kwargs):
        super().__init__(connection, **kwargs)
        self.visibility_timeout = float(self.visibility_timeout)
        self.table = MessageTable(self.database)
        #: Unique id written in the rows this channel leases.
        self.lease_owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid4().hex}"
        self._buffer: dict[str, deque[ClaimedRow]] = defaultdict(deque)
        self._no_ack_queues: set[str] = set()
        self._lock = threading.RLock()  # extend_leases() may run in a heartbeat thread
        self._renewed_at = monotonic()

    def put_message(self, queue, message, **kwargs):
        """Insert ``message`` as a row of ``queue``.

        The highest priority is delivered first (as on RabbitMQ); a message without one has
        0, the lowest. A ``headers["eta"]`` in the future keeps the row invisible until then.
        """
        now = timezone.now()
        visible_at = max(_eta(message) or now, now)
        self.table.insert(
            queue,
            priority=self.message_priority(message, reverse=False),
            payload=dumps(message),
            visible_at=visible_at,
            delivery_tag=message["properties"]["delivery_tag"],
            notify=visible_at <= now,
        )

    def publish_many(self, by_queue: dict[str, list]) -> None:
        """Insert prepared messages (queue name -> messages, in order) as rows, the way
        ``put_message`` inserts one, in one statement or a few (``table.insert_many``) and
        one transaction (the caller's, inside ``atomic()``), with one NOTIFY per queue that
        has a message ready now."""
        now = timezone.now()
        rows, ready = [], set()
        for queue, messages in by_queue.items():
            for message in messages:
                self.augment_message(message, "", queue)
                visible_at = max(_eta(message) or now, now)
                if visible_at <= now:
                    ready.add(queue)
                rows.append(NewRow(queue, self.message_priority(message, reverse=False),
                                   envelope_json(message), visible_at,
                                   message["properties"]["delivery_tag"]))
        self.table.insert_many(rows, notify=ready)

    def stencil(self, prepared: dict, queue: str) -> tuple | None:
        """What :meth:`publish_alike` needs to insert the calls of a batch whose prototype
        is ``prepared`` (its :data:`~jobs.batch.HOLES` unfilled); None for a body encoding
        other than base64."""
        if self.body_encoding != "base64":
            return None
        eta = _eta(prepared)
        priority = self.message_priority(prepared, reverse=False)
        self.augment_message(prepared, "", queue)
        return queue, priority, eta, Stencil(prepared)

    def publish_alike(self, stencil: tuple, calls: list) -> None:
        """Insert ``calls`` (a :class:`~jobs.batch.Batch`'s) as rows, as :meth:`publish_many`
        would, each call's text filled in from their :meth:`stencil`."""
        queue, priority, eta, stencil = stencil
        now = timezone.now()
        visible_at = max(eta or now, now)
        rows = [NewRow(queue, priority, text, visible_at, tag)
                for tag, text in stencil.texts(calls)]
        self.table.insert_many(rows, notify={queue} if visible_at <= now else set())

    def get_message(self, queue, timeout=None):
        """The next message of ``queue``: buffered, else from a new claim."""
        with self._lock:
            self._renew_if_due()
            rows = self._buffer[queue]
            if not rows:
                rows.extend(self._claim(queue))
            if not rows:
                raise Empty()
            row = rows.popleft()
        if queue in self._no_ack_queues:
            self.table.delete(self.lease_owner, row.delivery_tag)
        return _payload(row)

    def _claim(self, queue) -> list[ClaimedRow]:
        limit = self._claim_limit()
        if limit < 1:
            return []
        # The messages acknowledged since the last claim are deleted in its transaction: a
        # commit fewer, and on SQLite no write of their own to meet a job's STARTED or
        # outcome write at the database's one write lock (whose busy handler then sleeps a
        # whole millisecond).
        acked = self.qos.take_acks()
        rows = []
        try:
            rows = self.table.claim(queue, self.lease_owner, limit, self._lease_until(),
                                    acked=acked)
        finally:
            if acked and not rows:  # not sent (nothing to claim, or it failed): later
                self.qos.give_back_acks(acked)
        return rows

    def _claim_limit(self) -> int:
        # Claim no more than the prefetch count leaves room for, counting rows already
        # buffered; without a prefetch count, one at a time, so a plain basic_get or
        # SimpleQueue.get never holds messages it doesn't hand out.
        room = self.qos.can_consume_max_estimate()
        if room is None:
            return 1
        buffered = sum(len(rows) for rows in self._buffer.values())
        return min(room - buffered, MAX_BATCH)

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag):
        queue = self.consumer_queues.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self.consumed_queues:
            self._no_ack_queues.discard(queue)
            self._release_buffered(queue)

    def basic_get(self, queue, no_ack=False, **kwargs):
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self.table.delete(self.lease_owner, message.delivery_tag)
        return message

    def drain_events(self, timeout=None, callback=None):
        # The worker drains even while its prefetch is full: the moment to renew leases.
        self._renew_if_due()
        return super().drain_events(timeout=timeout, callback=callback)

    def extend_leases(self) -> int:
        """Renew the lease of every message this channel holds, delivered or buffered.

        Called automatically from ``drain_events`` and ``get_message`` every third of the
        visibility timeout; call it yourself when the consumer can't drain for that long.
        Returns how many leases were renewed. Buffered rows whose lease ran out and went
        to another consumer are dropped from the buffer.
        """
        with self._lock:
            tags = [row.delivery_tag for rows in self._buffer.values() for row in rows]
            if self.qos_if_made is not None:
                tags += self.qos_if_made.unacked_tags()
            held = self.table.renew(self.lease_owner, tags, self._lease_until())
            self._renewed_at = monotonic()
            for queue, rows in self._buffer.items():
                self._buffer[queue] = deque(row for row in rows if row.delivery_tag in held)
            return len(held)

    def release_leases(self) -> int:
        """Give back every message this channel holds, so others can take them now, but
        those it was asked to :meth:`keep`."""
        with self._lock:
            self._buffer.clear()
            return self._release()

    def keep(self, delivery_tags) -> None:
        """Don't give back these messages when the channel closes: their jobs still run,
        and their leases are renewed and their rows deleted by tag from the next channel
        (:meth:`renew_kept`, :meth:`delete_kept`)."""
        _kept_owners.update((tag, self.lease_owner) for tag in delivery_tags)

    def renew_kept(self, delivery_tags) -> int:
        """Renew the leases of these messages, kept by channels closed since."""
        renewed = 0
        for owner, tags in _by_owner(delivery_tags).items():
            renewed += len(self.table.renew(owner, tags, self._lease_until()))
        return renewed

    def delete_kept(self, delivery_tag) -> bool:
        """Acknowledge a message a channel closed since kept for its running job."""
        owner = _kept_owners.pop(delivery_tag, None)
        if owner is None:
            return False
        self.table.delete(owner, delivery_tag)
        return True

    def release_kept(self, delivery_tag) -> bool:
        """Make visible again a message a channel closed since kept for a run that ended
        without an outcome: its job is to run again."""
        owner = _kept_owners.pop(delivery_tag, None)
        if owner is None:
            return False
        self.table.release(owner, [delivery_tag])
        return True

    def _release_buffered(self, queue) -> None:
        with self._lock:
            rows = self._buffer.pop(queue, ())
            if rows:
                self._release([row.delivery_tag for row in rows])

    def _release(self, delivery_tags=None) -> int:
        # Best effort, on the way out: a lease that isn't released still expires.
        try:
            kept = [tag for tag, owner in _kept_owners.items() if owner == self.lease_owner]
            return self.table.release(self.lease_owner, delivery_tags, keep=kept)
        except DatabaseError as exc:
            logger.warning("django:// could not release leases, they will expire: %s", exc)
            return 0

    def _renew_if_due(self) -> None:
        if monotonic() - self._renewed_at >= self.visibility_timeout / 3:
            self.extend_leases()

    def _lease_until(self) -> datetime:
        return timezone.now() + timedelta(seconds=self.visibility_timeout)

    def queue_size(self, queue):
        return self.table.size(queue)

    def purge_queue(self, queue):
        return self.table.purge(queue)

    def delete_queue(self, queue, *args, **kwargs):
        self.table.drop(queue)

    def new_queue(self, queue, **kwargs):
        """Nothing to create: a queue is the rows that name it."""

    def has_queue(self, queue, **kwargs):
        return True


class Transport(VirtualTransport):
    """kombu transport for ``django://`` URLs (registered by :mod:`jobs.transport`)."""

    Channel = Channel

    driver_type = "sql"
    driver_name = "django"
    default_connection_params: dict = {}  # the database has no host of its own
    connection_errors = (*virtual.Transport.connection_errors, OperationalError, InterfaceError)
    channel_errors = virtual.Transport.channel_errors

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        self.database = client.transport_options.get("database", "default")
        is_postgres = connections[self.database].vendor == "postgresql"
        if client.transport_options.get("polling_interval") is None:
            self.polling_interval = 1.0 if is_postgres else 0.1
        self.listener = Listener(self.database)
        self._delivered_at = 0.0  # when drain_events last delivered a message

    def establish_connection(self):
        connections[self.database].ensure_connection()
        return super().establish_connection()

    def close_connection(self, connection):
        try:
            super().close_connection(connection)
        finally:
            self.listener.close()

    def drain_events(self, connection, timeout=None):
        """Deliver one message; between empty polls, wait for a NOTIFY (or, on SQLite,
        another connection's commit) or the interval."""
        started = monotonic()
        while True:
            try:
                delivered = self.cycle.get(self.deliver, timeout=timeout)
                self._delivered_at = monotonic()
                return delivered
            except Empty:
                pass
            wait = self.polling_interval
            if timeout is not None:
                remaining = timeout - (monotonic() - started)
                if remaining <= 0:
                    raise TimeoutError  # socket.timeout, as kombu's transports raise
                wait = min(wait, remaining)
            self.listener.wait(wait, busy=monotonic() - self._delivered_at < BUSY_FOR)

    def driver_version(self):
        import django

        return django.get_version()


def _eta(message) -> datetime | None:
    """The aware datetime in ``headers["eta"]`` (ISO 8601, naive meaning UTC), if any."""
    eta = (message.get("headers") or {}).get("eta")
    if not eta:
        return None
    try:
        value = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
    except ValueError:
        logger.warning("django:// ignoring a malformed eta %r", eta)
        return None
    if not isinstance(value, datetime):
        return None
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def _payload(row: ClaimedRow) -> dict:
    """The kombu message of a claimed row, telling how many times it was delivered."""
    payload = loads(row.payload)
    info = payload["properties"].setdefault("delivery_info", {})
    info.update(redelivered=row.delivery_count > 1, delivery_count=row.delivery_count)
    return payload
