"""Publishers: a broker connection and its channel each, kept on a free list for reuse.

A hand-written free list rather than kombu's pools: taking a publisher is one ``deque.pop``,
and the common case, one message on a healthy connection, goes straight to the channel
(measured faster than kombu's Producer on the enqueue path). At most ``BROKER_POOL_LIMIT``
idle publishers are kept (0 or None: a connection per send, closed after it); threads sending
at once each take their own, and those beyond the limit are closed when they are done.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager, nullcontext

from kombu import Producer
from kombu.compression import compress
from kombu.exceptions import OperationalError as KombuOperationalError

from jobs.batch import Batch
from jobs.compression import for_payload
from jobs.messages import Envelope

#: Errors after which a send may be tried again on a new connection.
PUBLISHER_ERRORS = (KombuOperationalError, ConnectionError, OSError)
_CONNECT_RETRY = ("max_retries", "interval_start", "interval_step", "interval_max")

_inherited: list = []  # a forked child's copies of its parent's publishers, never used


class Publisher:
    """A broker connection and its channel, used by one thread at a time.

    The common case is one message on a healthy connection: it goes straight to the channel
    (``prepare_message`` + ``basic_publish``), and each queue is declared once per connection
    rather than at every publish. kombu's Producer, with its retry policy, takes over for
    batches and for trying again after a connection error.
    """

    def __init__(self, broker, retry_policy: dict | None = None) -> None:
        self.broker = broker
        self.connection = broker.connection()
        # Connect now: once (a first try fails fast), or as often as the retry policy says.
        policy = retry_policy or {"max_retries": 0}
        self.connection.ensure_connection(**{k: v for k, v in policy.items() if k in _CONNECT_RETRY})
        self.channel = self.connection.default_channel
        self.producer = Producer(self.channel)
        self.declared: set = set()  # queue names, and ("exchange", name) of exchanges
        # Prototype envelope's id -> (it, the channel's stencil of it): the text a batch of
        # its calls is filled from, made once per prototype (a job's delay() reuses one).
        self.stencils: dict = {}
        errors = self.connection.connection_errors + self.connection.channel_errors
        self.errors = tuple(e for e in errors if not issubclass(e, PUBLISHER_ERRORS))

    def declare(self, queue: str) -> None:
        if queue not in self.declared:
            self.broker.declare(self.connection, queue)
            self.declared.add(queue)

    def destination(self, message) -> tuple[str, str]:
        """``(exchange, routing_key)`` of a message: straight to its queue, or through the
        exchange its route names, declared on this connection first with the queues bound
        to it (a broker that keeps bindings per process needs them to route)."""
        exchange = message.exchange
        if not exchange:
            self.declare(message.queue)
            return "", message.queue
        if ("exchange", exchange) not in self.declared:
            for queue in self.broker.routing.bound_to(exchange):
                if queue.exchange.type == "fanout":  # the workers' own queues
                    queue.exchange(self.channel).declare()
                else:
                    self.declare(queue.alias or queue.name)
            self.declared.add(("exchange", exchange))
        return exchange, message.routing_key or ""

    def send(self, envelopes, compression, retry_policy: dict | None = None) -> None:
        try:
            if retry_policy is None and len(envelopes) == 1 and envelopes.__class__ is not Batch:
                self._send_one(envelopes[0], compression)
                return
            if (retry_policy is None and self.broker.pipelines_batches
                    and not (self.broker.routing.by_exchange and _to_exchanges(envelopes))):
                self._send_many(envelopes, compression)
                return
            batch = self.producer.batch() if len(envelopes) > 1 else nullcontext()
            with batch:
                for envelope in envelopes:
                    self._send_with_producer(envelope, compression, retry_policy)
        except self.errors as exc:  # a transport's own error, e.g. redis-py's
            raise KombuOperationalError(str(exc)) from exc

    def _send_one(self, envelope: Envelope, compression) -> None:
        exchange, routing_key = self.destination(envelope.message)
        self.channel.basic_publish(self._prepare(envelope, compression), exchange=exchange,
                                   routing_key=routing_key)

    def _send_many(self, envelopes, compression) -> None:
        """All messages in one pipeline, a single LPUSH per queue (our Redis channel), or one
        multi-row INSERT per batch (``django://``)."""
        if envelopes.__class__ is Batch and self._send_alike(envelopes, compression):
            return
        by_queue: dict[str, list] = {}
        for envelope in envelopes:
            by_queue.setdefault(envelope.message.queue, []).append(
                self._prepare(envelope, compression))
        for queue in by_queue:
            self.declare(queue)
        self.channel.publish_many(by_queue)

    def _send_alike(self, batch: Batch, compression) -> bool:
        """A batch's messages written from one prepared message, filled for each call, where
        the channel can (``stencil``, ``publish_alike``) and nothing is compressed; False:
        not sent. The channel's stencil of a prototype is kept while the prototype lives."""
        stencil = getattr(self.channel, "stencil", None)
        if stencil is None or compression:
            return False
        prototype = batch.prototype
        cached = self.stencils.get(id(prototype))
        if cached is None or cached[0] is not prototype:
            queue = prototype.message.queue
            self.declare(queue)
            if len(self.stencils) >= 64:
                self.stencils.clear()
            cached = self.stencils[id(prototype)] = (
                prototype, stencil(self._prepare(prototype, None), queue))
        if cached[1] is None:
            return False
        self.channel.publish_alike(cached[1], batch.calls)
        return True

    def _prepare(self, envelope: Envelope, compression):
        message = envelope.message
        body, headers, content_type = envelope.payload, envelope.headers, envelope.content_type
        compression = for_payload(compression, body)
        if compression:
            body, content_type_of_compression = compress(body, compression)
            headers = {**headers, "compression": content_type_of_compression}
        return self.channel.prepare_message(
            body, message.priority, content_type, envelope.content_encoding, headers,
            {"correlation_id": message.id, "delivery_mode": 2},
        )

    def _send_with_producer(self, envelope: Envelope, compression, retry_policy) -> None:
        message = envelope.message
        exchange, routing_key = self.destination(message)
        self.producer.publish(
            envelope.payload,
            exchange=exchange,
            routing_key=routing_key,
            declare=[] if retry_policy is None else [self.broker.queue_for(message.queue)],
            content_type=envelope.content_type,
            content_encoding=envelope.content_encoding,
            headers=envelope.headers,
            correlation_id=message.id,
            priority=message.priority,
            compression=for_payload(compression, envelope.payload),
            retry=retry_policy is not None,
            retry_policy=retry_policy,
            delivery_mode=2,
        )

    def close(self) -> None:
        try:
            self.connection.release()
        except Exception:  # a broken connection can't be closed cleanly; drop it
            pass


def _to_exchanges(envelopes) -> bool:
    """Whether any of ``envelopes`` goes through an exchange (a batch's all do, or none)."""
    if envelopes.__class__ is Batch:
        return bool(envelopes.prototype.message.exchange)
    return any(e.message.exchange for e in envelopes)


class FreeList:
    """The idle publishers of one broker, free for any thread to take."""

    def __init__(self, broker, limit: int) -> None:
        self.broker = broker
        self.limit = limit
        self.idle: deque[Publisher] = deque()

    def send(self, envelopes, compression, retry_policy: dict | None = None) -> None:
        """Send through a free publisher (the hot path: no context manager)."""
        publisher = self.take(retry_policy)
        try:
            publisher.send(envelopes, compression, retry_policy)
        except BaseException:
            publisher.close()
            raise
        self.give_back(publisher)

    @contextmanager
    def publisher(self, retry_policy: dict | None = None):
        """A publisher for the block, given back after it (closed if the block fails)."""
        publisher = self.take(retry_policy)
        try:
            yield publisher
        except BaseException:
            publisher.close()
            raise
        self.give_back(publisher)

    def take(self, retry_policy: dict | None = None) -> Publisher:
        """A publisher from the free list, or a new one (connected as ``retry_policy``
        says) if none is free."""
        try:
            return self.idle.pop()
        except IndexError:
            return Publisher(self.broker, retry_policy)

    def give_back(self, publisher: Publisher) -> None:
        """Keep a publisher that sent without error for the next send (close it if the list
        is full)."""
        if len(self.idle) < self.limit:
            self.idle.append(publisher)
        else:
            publisher.close()

    def close(self) -> None:
        """Close the idle publishers' connections."""
        while self.idle:
            self.idle.pop().close()

    def forget_after_fork(self) -> None:
        """In a forked child: never write to the parent's sockets, nor close them (closing
        an AMQP connection would end the parent's too); keep them out of the collector."""
        _inherited.extend(self.idle)
        self.idle.clear()

