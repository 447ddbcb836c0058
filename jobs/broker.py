"""Publishing: one pooled kombu connection per process, queues, routes, publish after commit."""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from contextlib import nullcontext
from functools import lru_cache

from django.db import connection as db_connection, transaction
from kombu import Connection, Exchange, Queue, pools
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.utils.url import maybe_sanitize_url

from jobs.compression import for_payload
from jobs.conf import on_reset, settings
from jobs.exceptions import PublishError
from jobs.messages import Envelope

logger = logging.getLogger("jobs.broker")

_lock = threading.Lock()
_connection: Connection | None = None


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
    from jobs.transport import register

    register()
    url = url or broker_url()
    return Connection(
        url,
        transport=_transport_class(url),
        transport_options=transport_options(url),
        connect_timeout=settings.BROKER_CONNECTION_TIMEOUT,
    )


def _transport_class(url: str):
    if url.startswith(("redis:", "rediss:")):
        # kombu's, with a message moved from the queue to the unacked records atomically.
        from jobs.transport.redis import Transport

        return Transport
    return None


def get_connection() -> Connection:
    """The process-wide connection whose pool publishing draws producers from."""
    global _connection
    if _connection is None:
        with _lock:
            if _connection is None:
                _connection = new_connection()
    return _connection


@on_reset
def reset() -> None:
    """Forget the connection (settings changed, or we are a freshly forked child)."""
    global _connection
    with _lock:
        old, _connection = _connection, None
    queue_for.cache_clear()
    if old is not None:
        try:
            old.release()
        except Exception:  # a broken connection can't be closed cleanly; drop it
            pass


def _reset_after_fork() -> None:
    # Sockets inherited from the parent must not be shared; start afresh.
    global _connection
    _connection = None
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
    retry_policy = retry_policy or settings.TASK_PUBLISH_RETRY_POLICY

    def send() -> None:
        try:
            with pools.producers[get_connection()].acquire(block=True) as producer:
                batch = producer.batch() if len(envelopes) > 1 and hasattr(producer, "batch") \
                    else nullcontext()
                with batch:
                    for envelope in envelopes:
                        _publish(producer, envelope, compression, retry, retry_policy)
        except (KombuOperationalError, ConnectionError, OSError) as exc:
            message = envelopes[0].message
            more = f" (and {len(envelopes) - 1} more)" if len(envelopes) > 1 else ""
            raise PublishError(
                f"could not send job {message.name}[{message.id}]{more} to "
                f"{maybe_sanitize_url(broker_url())!r}: {exc}"
            ) from exc

    return send


def _publish(producer, envelope: Envelope, compression, retry, retry_policy) -> None:
    message = envelope.message
    producer.publish(
        envelope.payload,
        exchange="",
        routing_key=message.queue,
        declare=[queue_for(message.queue)],
        content_type=envelope.content_type,
        content_encoding=envelope.content_encoding,
        headers=envelope.headers,
        correlation_id=message.id,
        priority=message.priority,
        compression=for_payload(compression, envelope.payload),
        retry=retry,
        retry_policy=retry_policy,
        delivery_mode=2,
    )



def publish_raw(queue: str, body: bytes, *, headers: dict, content_type: str,
                content_encoding: str, properties: dict | None = None) -> None:
    """Send an already-serialized message as it is (requeueing a dead letter)."""
    properties = properties or {}
    try:
        with pools.producers[get_connection()].acquire(block=True) as producer:
            producer.publish(
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
