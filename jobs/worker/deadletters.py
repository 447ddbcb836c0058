"""Storing messages that no worker can run, with the reason, so that nothing is lost."""

from __future__ import annotations

import logging

from jobs import signals
from jobs.models import DeadLetter

logger = logging.getLogger("jobs.worker")

_HEADER_LIMIT = 64 * 1024


def store(delivery, reason: str, hostname: str = "") -> DeadLetter:
    """Keep ``delivery`` (a :class:`jobs.worker.execute.Delivery`) whole with ``reason``."""
    headers = delivery.headers if isinstance(delivery.headers, dict) else {}
    name = headers.get("task") if isinstance(headers.get("task"), str) else ""
    job_id = headers.get("id") if isinstance(headers.get("id"), str) else ""
    body = delivery.body if isinstance(delivery.body, bytes) else str(delivery.body).encode()
    letter = DeadLetter.objects.create(
        queue=delivery.queue or "",
        job_id=job_id[:255],
        job_name=name[:255],
        reason=reason,
        content_type=(delivery.content_type or "")[:100],
        content_encoding=(delivery.content_encoding or "")[:50],
        headers=_jsonable(headers),
        properties=_jsonable(delivery.properties),
        body=body,
        worker=hostname,
    )
    logger.warning("Dead-lettered message %s (%s) from queue %r: %s", job_id or "?",
                   name or "no job name", delivery.queue, reason, extra={"job_id": job_id})
    signals.job_dead_lettered.send(name or None, job_id=job_id, name=name, reason=reason,
                                   queue=delivery.queue)
    return letter


def _jsonable(value):
    """Headers as JSON can hold them: anything exotic becomes its repr."""
    import json

    try:
        text = json.dumps(value, default=repr)
    except (TypeError, ValueError):
        return {"repr": repr(value)[:_HEADER_LIMIT]}
    if len(text) > _HEADER_LIMIT:
        return {"truncated": text[:_HEADER_LIMIT]}
    return json.loads(text)
