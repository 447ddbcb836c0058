"""A message as the worker receives it: the :class:`Delivery` made of a kombu message, and
the checks on its envelope that no worker can pass (it is dead-lettered with the reason)."""

from __future__ import annotations

from kombu.serialization import registry as serializers

from jobs.broker import get_broker
from jobs.conf import settings
from jobs.execution import Delivery
from jobs.registry import registry


def delivery_of(message, key, queues: list[str]) -> Delivery:
    """The Delivery of a kombu ``message``, tagged ``key``, from one of ``queues``."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    if headers.get("compression") and not message.errors:
        # kombu's Message has decompressed the body (capped: jobs.compression).
        headers = {k: v for k, v in headers.items() if k != "compression"}
    info = message.delivery_info or {}
    queue_name = info.get("routing_key")
    if queue_name not in queues:  # sent through an exchange: the queue its binding chose
        queue_name = get_broker().routing.queue_of(info.get("exchange"), queue_name, queues)
    return Delivery(
        tag=key, headers=headers, body=message.body, content_type=message.content_type,
        content_encoding=message.content_encoding, queue=queue_name,
        properties=dict(message.properties or {}),
        delivery_info=_plain(message.delivery_info),
    )


def refusal(delivery: Delivery, accept) -> str | None:
    """Why no worker should run this message (cheap checks on the envelope), or None."""
    headers = delivery.headers
    name = headers.get("task")
    if not isinstance(name, str) or not isinstance(headers.get("id"), str):
        return _why_not_a_job(delivery, accept)
    limit = settings.TASK_MAX_MESSAGE_SIZE
    if limit and len(delivery.body or b"") > limit:
        return (f"the message body takes {len(delivery.body):,} bytes, more than "
                f"TASK_MAX_MESSAGE_SIZE ({limit:,})")
    if delivery.content_type not in accept:
        return (f"content type {delivery.content_type!r} is not accepted "
                f"(ACCEPT_CONTENT = {sorted(settings.ACCEPT_CONTENT)})")
    if name not in registry:
        return f"unregistered job {name!r} — is the module imported by this worker?"
    return None


def _why_not_a_job(delivery: Delivery, accept) -> str:
    if isinstance(delivery.body, (bytes, str)) and delivery.content_type:
        try:
            body = serializers.loads(delivery.body, delivery.content_type,
                                     delivery.content_encoding, accept=accept)
        except Exception:
            body = None
        if isinstance(body, dict) and "task" in body:
            return "a Celery protocol 1 message; send with protocol 2 (Celery's default)"
    return "not a job message: the 'task' and 'id' headers are missing"


def _plain(info) -> dict:
    return {k: v for k, v in (info or {}).items() if isinstance(v, (str, int, float, bool))}
