"""The message broker of ``JOBS["BROKER_URL"]``; nothing else reads that setting.

:func:`get_broker` is the project's :class:`Broker`, built from the settings on first use
and again after JOBS changes. It connects (kombu connections, a free list of publishers),
publishes (after the commit), routes jobs to queues, and says what the broker can do, so
that the worker, the scheduler and the admin ask it rather than look at the URL:

* ``transactional_enqueue``: ``django://`` (a message is a row of the caller's transaction);
* ``durable_delay``: ``django://`` (with the others, workers park delayed jobs in the database);
* ``renews_leases``: ``django://`` and Redis (the worker's heartbeat keeps its messages);
* ``priority_levels``: 0..255 on ``django://``, 0..9 on Redis, 0..``TASK_QUEUE_MAX_PRIORITY``
  on RabbitMQ (none unless set); the highest runs first on each;
* ``fanout_control``: all but ``django://`` (whose commands to workers go through a table);
* ``broadcasts``: RabbitMQ and Redis (a job sent to a fanout-bound queue runs on every worker
  consuming it; on Redis through PUB/SUB, so ``acks_broadcasts`` is False there).

The functions below act on the project's broker: they are what ``Job.apply_async`` calls,
and what tests replace (:func:`jobs.testing.capture_jobs`).
"""

from __future__ import annotations

import os
import threading

from kombu import Connection, Queue

from jobs.broker.base import DEPTHS_TIMEOUT, Broker
from jobs.broker.kinds import AmqpBroker, DatabaseBroker, RedisBroker, SentinelBroker
from jobs.conf import on_reset, settings
from jobs.messages import Envelope

_broker: Broker | None = None
_lock = threading.Lock()


def get_broker() -> Broker:
    """The project's broker, built from the settings on first use."""
    broker = _broker
    if broker is None:
        broker = _build()
    return broker


def _build() -> Broker:
    global _broker
    with _lock:
        if _broker is None:
            _broker = Broker.for_url(settings.BROKER_URL)
        return _broker


@on_reset
def reset() -> None:
    """Forget the broker (the settings changed), closing its idle connections."""
    global _broker
    with _lock:
        broker, _broker = _broker, None
    if broker is not None:
        broker.close()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it
    if _broker is not None:
        _broker.publishers.forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def publish(envelope: Envelope, *, on_commit: bool | None = None, compression=None,
            retry: bool | None = None, retry_policy: dict | None = None) -> None:
    """Send ``envelope`` to its queue (:meth:`Broker.publish`)."""
    (_broker or get_broker()).publish(envelope, on_commit=on_commit, compression=compression, retry=retry,
                         retry_policy=retry_policy)


def publish_many(envelopes: list[Envelope], *, on_commit: bool | None = None,
                 compression=None) -> None:
    """Send many messages in one go (:meth:`Broker.publish_many`)."""
    get_broker().publish_many(envelopes, on_commit=on_commit, compression=compression)


def publish_raw(queue: str, body: bytes, *, headers: dict, content_type: str,
                content_encoding: str, properties: dict | None = None) -> None:
    """Send an already-serialized message as it is (:meth:`Broker.publish_raw`)."""
    get_broker().publish_raw(queue, body, headers=headers, content_type=content_type,
                             content_encoding=content_encoding, properties=properties)


def priority_problem(priority) -> str | None:
    """Why ``priority`` can't be asked of the broker, or None (:meth:`Broker.priority_problem`)."""
    return (_broker or get_broker()).priority_problem(priority)


def resolve(job_name: str, job_queue: str | None = None, args=(), kwargs=None, options=None):
    """Where a job goes: queue, exchange, routing key, priority (:meth:`Routing.resolve`)."""
    return (_broker or get_broker()).routing.resolve(job_name, job_queue, args, kwargs, options)


def queue_for(name: str) -> Queue:
    """The kombu Queue for ``name`` (:meth:`Broker.queue_for`)."""
    return get_broker().queue_for(name)


def new_connection(url: str | None = None) -> Connection:
    """A new, unconnected kombu Connection to the broker of ``url`` (default: the project's)."""
    broker = get_broker() if url is None else Broker.for_url(url)
    return broker.connection()


__all__ = [
    "DEPTHS_TIMEOUT", "AmqpBroker", "Broker", "DatabaseBroker", "RedisBroker", "SentinelBroker",
    "get_broker", "new_connection", "priority_problem", "publish", "publish_many", "publish_raw",
    "queue_for", "resolve",
]
