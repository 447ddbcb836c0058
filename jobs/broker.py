"""Publishing: one pooled kombu connection per process, queues, routes, publish after commit."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections import deque
from contextlib import contextmanager, nullcontext
from functools import lru_cache

from django.db import connection as db_connection, transaction
from kombu import Connection, Exchange, Producer, Queue
from kombu.compression import compress
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.utils.url import maybe_sanitize_url

from jobs.compression import for_payload
from jobs.conf import on_reset, settings
from jobs.exceptions import PublishError, TransportUnavailable
from jobs.messages import Envelope

logger = logging.getLogger("jobs.broker")

_idle_publishers: deque = deque()  # of _Publisher, free for any thread to take
_inherited: list = []  # a forked child's copies of its parent's publishers, never used


def broker_url() -> str:
    return settings.BROKER_URL


def is_database_broker(url: str | None = None) -> bool:
    return (url or broker_url()).startswith("django:")


def transport_options(url: str | None = None) -> dict:
    """kombu transport options, with defaults that make each broker safe for jobs."""
    options: dict = {}
    url = url or broker_url()
    if url.startswith(("redis", "rediss", "sentinel")):
        # kombu's default (one hour) would hold a dead worker's jobs that long; the worker
        # renews the visibility of its in-flight messages, so a short timeout is safe.
        options["visibility_timeout"] = 60
        # A worker killed while restoring others' messages holds this lock until it expires
        # (kombu's default is five minutes, which stalls every restore that long).
        options["unacked_mutex_expire"] = 10
    options.update(settings.BROKER_TRANSPORT_OPTIONS)
    return options


def new_connection(url: str | None = None) -> Connection:
    """A new, unconnected kombu Connection for ``url`` (default: BROKER_URL)."""
    from jobs.transport import register, unavailable

    register()
    url = url or broker_url()
    try:
        transport = _transport_class(url)
    except ImportError as exc:  # say which package is missing, and which extra installs it
        raise TransportUnavailable(unavailable(url) or str(exc)) from None
    return Connection(
        url,
        transport=transport,
        transport_options=transport_options(url),
        connect_timeout=settings.BROKER_CONNECTION_TIMEOUT,
    )


def _transport_class(url: str):
    if url.startswith(("redis:", "rediss:")):
        # kombu's, with a message moved from the queue to the unacked records atomically.
        from jobs.transport.redis import Transport

        return Transport
    return None


@on_reset
def reset() -> None:
    """Close the idle publishers' connections (the settings changed)."""
    queue_for.cache_clear()
    while _idle_publishers:
        _idle_publishers.pop().close()


def _reset_after_fork() -> None:
    # A forked child must not write to its parent's sockets, nor close them (closing an AMQP
    # connection would end the parent's too): keep them out of use and out of the collector.
    _inherited.extend(_idle_publishers)
    _idle_publishers.clear()
    queue_for.cache_clear()


os.register_at_fork(after_in_child=_reset_after_fork)


@lru_cache(maxsize=1024)
def queue_for(name: str) -> Queue:
    """The kombu Queue for ``name``: a durable queue bound to a direct exchange of the same
    name, as Celery declares its queues, so the two can share them."""
    return Queue(name, Exchange(name, "direct"), routing_key=name)


def route(job_name: str, job_queue: str | None = None) -> str:
    """The queue for a job: its own ``queue=``, else TASK_ROUTES, else the default queue."""
    if job_queue:
        return job_queue
    routes = settings.TASK_ROUTES
    if routes:
        queue = _route_from_table(job_name, tuple(routes.items()))
        if queue:
            return queue
    return settings.TASK_DEFAULT_QUEUE


def _route_from_table(job_name: str, routes: tuple) -> str | None:
    for pattern, target in routes:
        if pattern == job_name or fnmatch.fnmatchcase(job_name, pattern):
            return target["queue"] if isinstance(target, dict) else target
    return None


def publish(envelope: Envelope, *, on_commit: bool | None = None, compression=None,
            retry: bool | None = None, retry_policy: dict | None = None) -> None:
    """Send ``envelope`` to its queue.

    Inside ``transaction.atomic()`` the message waits for the commit, so no worker sees a job
    for rows that were rolled back. The database broker needs no wait: its row is written in
    the same transaction and becomes visible with the commit. ``on_commit=False`` sends now.
    """
    _now_or_on_commit(_sender(envelope, compression, retry, retry_policy), on_commit)


def publish_many(envelopes: list[Envelope], *, on_commit: bool | None = None,
                 compression=None) -> None:
    """Send many messages through one producer, pipelined where the transport can batch
    (one round trip per batch on Redis)."""
    if envelopes:
        _now_or_on_commit(_sender(envelopes, compression, None, None), on_commit)


def _now_or_on_commit(send, on_commit: bool | None) -> None:
    if on_commit is None:
        on_commit = settings.TASK_ENQUEUE_ON_COMMIT
    if on_commit and db_connection.in_atomic_block and not is_database_broker():
        transaction.on_commit(send)
    else:
        send()


def _sender(envelopes, compression, retry, retry_policy):
    if isinstance(envelopes, Envelope):
        envelopes = (envelopes,)
    compression = compression or settings.TASK_COMPRESSION
    retry = settings.TASK_PUBLISH_RETRY if retry is None else retry

    def send() -> None:
        try:
            try:
                with _publisher() as publisher:
                    publisher.send(envelopes, compression)
            except _PUBLISHER_ERRORS:
                if not retry:
                    raise
                # The connection broke or can't be made: try again as the retry policy says.
                policy = retry_policy or settings.TASK_PUBLISH_RETRY_POLICY
                with _publisher(policy) as publisher:
                    publisher.send(envelopes, compression, policy)
        except _PUBLISHER_ERRORS as exc:
            message = envelopes[0].message
            more = f" (and {len(envelopes) - 1} more)" if len(envelopes) > 1 else ""
            raise PublishError(
                f"could not send job {message.name}[{message.id}]{more} to "
                f"{maybe_sanitize_url(broker_url())!r}: {exc}"
            ) from exc

    return send


_PUBLISHER_ERRORS = (KombuOperationalError, ConnectionError, OSError)
_CONNECT_RETRY = ("max_retries", "interval_start", "interval_step", "interval_max")


class _Publisher:
    """A broker connection and its channel, used by one thread at a time.

    The common case is one message on a healthy connection: it goes straight to the channel
    (``prepare_message`` + ``basic_publish``), and each queue is declared once per connection
    rather than at every publish. kombu's Producer, with its retry policy, takes over for
    batches and for trying again after a connection error.
    """

    def __init__(self, retry_policy: dict | None = None) -> None:
        self.connection = new_connection()
        # Connect now: once (a first try fails fast), or as often as the retry policy says.
        policy = retry_policy or {"max_retries": 0}
        self.connection.ensure_connection(**{k: v for k, v in policy.items() if k in _CONNECT_RETRY})
        self.channel = self.connection.default_channel
        self.producer = Producer(self.channel)
        self.declared: set[str] = set()
        errors = self.connection.connection_errors + self.connection.channel_errors
        self.errors = tuple(e for e in errors if not issubclass(e, _PUBLISHER_ERRORS))

    def declare(self, queue: str) -> None:
        if queue not in self.declared:
            queue_for(queue)(self.channel).declare()
            self.declared.add(queue)

    def send(self, envelopes, compression, retry_policy: dict | None = None) -> None:
        try:
            if retry_policy is None and len(envelopes) == 1:
                self._send_one(envelopes[0], compression)
                return
            if retry_policy is None and hasattr(self.channel, "publish_many"):
                self._send_many(envelopes, compression)
                return
            batch = self.producer.batch() if len(envelopes) > 1 else nullcontext()
            with batch:
                for envelope in envelopes:
                    self._send_with_producer(envelope, compression, retry_policy)
        except self.errors as exc:  # a transport's own error, e.g. redis-py's
            raise KombuOperationalError(str(exc)) from exc

    def _send_one(self, envelope: Envelope, compression) -> None:
        self.declare(envelope.message.queue)
        self.channel.basic_publish(self._prepare(envelope, compression), exchange="",
                                   routing_key=envelope.message.queue)

    def _send_many(self, envelopes, compression) -> None:
        """All messages in one pipeline, a single LPUSH per queue (our Redis channel)."""
        by_queue: dict[str, list] = {}
        for envelope in envelopes:
            by_queue.setdefault(envelope.message.queue, []).append(
                self._prepare(envelope, compression))
        for queue in by_queue:
            self.declare(queue)
        self.channel.publish_many(by_queue)

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
        if retry_policy is None:
            self.declare(message.queue)
        self.producer.publish(
            envelope.payload,
            exchange="",
            routing_key=message.queue,
            declare=[] if retry_policy is None else [queue_for(message.queue)],
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


@contextmanager
def _publisher(retry_policy: dict | None = None):
    """A publisher from the free list (a new one if none is free, connected as
    ``retry_policy`` says), returned to it after a successful send, dropped after a failure."""
    try:
        publisher = _idle_publishers.pop()
    except IndexError:
        publisher = _Publisher(retry_policy)
    try:
        yield publisher
    except BaseException:
        publisher.close()
        raise
    _idle_publishers.append(publisher)


def publish_raw(queue: str, body: bytes, *, headers: dict, content_type: str,
                content_encoding: str, properties: dict | None = None) -> None:
    """Send an already-serialized message as it is (requeueing a dead letter)."""
    properties = properties or {}
    try:
        with _publisher() as publisher:
            publisher.producer.publish(
                body, exchange="", routing_key=queue, declare=[queue_for(queue)],
                headers=headers, content_type=content_type, content_encoding=content_encoding,
                correlation_id=properties.get("correlation_id"),
                priority=properties.get("priority"), delivery_mode=2,
                retry=settings.TASK_PUBLISH_RETRY,
                retry_policy=settings.TASK_PUBLISH_RETRY_POLICY,
            )
    except (KombuOperationalError, ConnectionError, OSError) as exc:
        raise PublishError(f"could not send to {maybe_sanitize_url(broker_url())!r}: {exc}") \
            from exc
