"""Storing messages that no worker can run, with the reason, so that nothing is lost."""

from __future__ import annotations

import logging

from jobs import signals
from jobs.models import DeadLetter
from jobs.storable import storable

logger = logging.getLogger("jobs.worker")

_HEADER_LIMIT = 64 * 1024


def store(delivery, reason: str, hostname: str = "") -> DeadLetter:
    """Keep ``delivery`` (a :class:`jobs.execution.Delivery`) whole with ``reason``."""
    headers = delivery.headers if isinstance(delivery.headers, dict) else {}
    name, job_id = _text(headers.get("task"), 255), _text(headers.get("id"), 255)
    body = delivery.body if isinstance(delivery.body, bytes) else \
        str(delivery.body).encode("utf-8", "surrogatepass")
    reason = _text(reason, None)
    letter = DeadLetter.objects.create(
        queue=delivery.queue or "",
        job_id=job_id,
        job_name=name,
        reason=reason,
        content_type=_text(delivery.content_type, 100),
        content_encoding=_text(delivery.content_encoding, 50),
        headers=_jsonable(headers),
        properties=_jsonable(delivery.properties),
        body=body,
        worker=hostname,
    )
    logger.warning("Dead-lettered message %s (%s) from queue %r: %s", job_id or "?",
                   name or "no job name", delivery.queue, reason, extra={"job_id": job_id})
    signals.send(signals.job_dead_lettered, name or None, job_id=job_id, name=name, reason=reason,
                                   queue=delivery.queue)
    return letter


def _text(value, limit: int | None) -> str:
    """A string column's value from whatever a producer sent (PostgreSQL refuses NUL)."""
    return storable(value)[:limit] if isinstance(value, str) else ""


def _jsonable(value):
    """Headers as a JSON column can hold them: anything exotic becomes its repr."""
    import json

    try:
        text = json.dumps(storable(value), default=repr, allow_nan=False)
    except (TypeError, ValueError):
        return {"repr": repr(value)[:_HEADER_LIMIT]}
    if len(text) > _HEADER_LIMIT:
        return {"truncated": text[:_HEADER_LIMIT]}
    return json.loads(text)
