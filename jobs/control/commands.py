"""What a worker does for each command of ``jobs_inspect`` and ``jobs_control``.

Each runs in the worker's main thread, between two turns of its loop, and returns a value
that can be sent as JSON: the inspect commands what they found, the control commands
``{"ok": ...}`` or ``{"error": ...}``, as Celery's workers answer.
"""

from __future__ import annotations

import logging
import os
import time

from django.utils import timezone

from jobs import rates
from jobs.broker import get_broker
from jobs.registry import registry

logger = logging.getLogger("jobs.control")

INSPECT: dict = {}
CONTROL: dict = {}


def _inspect(func):
    INSPECT[func.__name__] = func
    return func


def _control(func):
    CONTROL[func.__name__] = func
    return func


def dispatch(worker, command: str, arguments: dict):
    """Run ``command`` in ``worker``; its answer (an error is an answer too)."""
    handler = INSPECT.get(command) or CONTROL.get(command)
    if handler is None:
        return {"error": f"unknown command {command!r}"}
    try:
        return handler(worker, **arguments)
    except Exception as exc:
        logger.exception("Control command %s failed", command)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _middleware(worker, cls):
    """The worker's instance of middleware ``cls``; an error naming it if it isn't listed."""
    for middleware in worker.middleware:
        if isinstance(middleware, cls):
            return middleware
    raise LookupError(f"{cls.__module__}.{cls.__qualname__} is not in JOBS['MIDDLEWARE']")


# Inspect ----------------------------------------------------------------------------------


@_inspect
def ping(worker):
    return "pong"


def _describe(delivery) -> dict:
    headers = delivery.headers
    return {"id": headers.get("id"), "name": headers.get("task"),
            "args": headers.get("argsrepr"), "kwargs": headers.get("kwargsrepr"),
            "queue": delivery.queue, "eta": headers.get("eta")}


def _held(worker):
    """(running, waiting, scheduled): the deliveries the worker holds, by what they wait for."""
    running_ids = set(worker.pool.running_ids())
    now = timezone.now().isoformat()
    running, waiting, scheduled = [], [], []
    for delivery in worker.deliveries():
        if delivery.headers.get("id") in running_ids:
            running.append(delivery)
        elif (delivery.headers.get("eta") or "") > now:
            scheduled.append(delivery)
        else:
            waiting.append(delivery)
    return running, waiting, scheduled


@_inspect
def active(worker):
    """The jobs running now."""
    return [_describe(d) for d in _held(worker)[0]]


@_inspect
def reserved(worker):
    """The jobs received and due, waiting for a free slot (or for their rate limit)."""
    return [_describe(d) for d in _held(worker)[1]]


@_inspect
def scheduled(worker):
    """The jobs received with an eta not come yet, held by the worker until then (one due
    later is parked in the database instead: jobs.middleware.delay)."""
    return [_describe(d) for d in _held(worker)[2]]


@_inspect
def registered(worker):
    return sorted(registry.names())


@_inspect
def stats(worker):
    pool = worker.pool
    return {
        "hostname": worker.hostname, "pid": os.getpid(),
        "uptime": round(time.monotonic() - worker.started_at, 3),
        "broker": get_broker().display_url, "queues": list(worker.queues),
        "processed": worker.processed, "prefetch_count": worker.window,
        "pool": {"implementation": pool.name, "max-concurrency": pool.concurrency,
                 "running": pool.running(), "waiting": pool.waiting()},
    }


@_inspect
def active_queues(worker):
    broker = get_broker()
    queues = []
    for name in worker.queues:
        queue = broker.queue_for(name)
        queues.append({"name": queue.name, "exchange": queue.exchange.name,
                       "exchange_type": queue.exchange.type, "routing_key": queue.routing_key})
    return queues


@_inspect
def revoked(worker):
    from jobs.middleware.revocation import Revocation

    return sorted(_middleware(worker, Revocation).revocations)


# Control ----------------------------------------------------------------------------------


@_control
def revoke(worker, job_ids: list[str], terminate: bool = False):
    """Recorded in the database already by the sender (jobs.control.revoke): the worker
    marks its deliveries of them now, and with ``terminate`` stops those running."""
    from jobs.middleware.revocation import Revocation

    _middleware(worker, Revocation).revocations.add(job_ids)
    stopped = [i for i in job_ids if terminate and worker.pool.terminate_job(i)]
    if stopped:
        return {"ok": f"terminated {', '.join(stopped)}"}
    return {"ok": f"revoked {', '.join(job_ids)}"}


@_control
def shutdown(worker):
    logger.warning("Shutdown requested by a control command: warm shutdown")
    worker.stop()
    return {"ok": "shutting down"}


def _paused(worker) -> set[str]:
    from jobs.middleware.control import Control

    return _middleware(worker, Control).paused


@_control
def add_consumer(worker, queue: str, only_if_paused: bool = False):
    """Consume from ``queue`` too; with ``only_if_paused`` (the dashboard's Resume), only
    where a ``cancel_consumer`` stopped it."""
    paused = _paused(worker)
    if only_if_paused and queue not in paused:
        return {"ok": f"{queue} is not paused here"}
    paused.discard(queue)
    if not worker.add_queue(queue):
        return {"ok": f"already consuming from {queue}"}
    logger.info("Consuming from %s too (control command)", queue)
    _record_queues(worker)
    return {"ok": f"consuming from {queue}"}


@_control
def cancel_consumer(worker, queue: str):
    if not worker.cancel_queue(queue):
        return {"ok": f"not consuming from {queue}"}
    _paused(worker).add(queue)
    logger.info("No longer consuming from %s (control command)", queue)
    _record_queues(worker)
    return {"ok": f"no longer consuming from {queue}"}


def _record_queues(worker) -> None:
    """The worker's row shows the queues it consumes from (the admin reads it)."""
    from jobs.models import Worker as WorkerRow

    row = worker.heart.row
    if row is not None:
        WorkerRow.objects.filter(pk=row.pk).update(queues=list(worker.queues))


@_control
def rate_limit(worker, job_name: str, rate=None, is_global: bool = False, reload: bool = False):
    """Starts per second/minute/hour of ``job_name`` in this worker (or, ``is_global``, in
    all workers together) from now on; a rate of 0 lifts the limit, None gives the job its
    own again. With ``reload``, the limits saved for the job (the admin's, or none: the
    job's own) instead."""
    from jobs import ratelimits
    from jobs.middleware.rate_limits import GlobalRateLimits, RateLimits

    registry.get(job_name)  # an unknown job is an error
    if reload:
        row = ratelimits.saved(job_name)
        for middleware in worker.middleware:
            if isinstance(middleware, (RateLimits, GlobalRateLimits)):
                middleware.set_rate(job_name, row and ratelimits.override(
                    getattr(row, middleware.field)))
        return {"ok": f"rate limits of {job_name}: " + (
            "as saved" if row else "its own")}
    _middleware(worker, GlobalRateLimits if is_global else RateLimits).set_rate(job_name, rate)
    scope = "global rate limit" if is_global else "rate limit"
    return {"ok": f"new {scope} for {job_name}: {rate if rates.per_second(rate) else 'none'}"}


@_control
def time_limit(worker, job_name: str, soft=None, hard=None):
    """Soft and hard time limits of ``job_name`` in this worker from now on (until it
    restarts), for the jobs it receives from now."""
    from jobs.middleware.time_limits import TimeLimits

    registry.get(job_name)
    _middleware(worker, TimeLimits).set_limits(job_name, soft, hard)
    return {"ok": f"time limits for {job_name}: soft {soft or 'none'}, hard {hard or 'none'}"}


@_control
def pool_grow(worker, n: int = 1):
    worker.pool.resize(worker.pool.concurrency + int(n))
    return {"ok": f"pool now runs up to {worker.pool.concurrency} jobs at once"}


@_control
def pool_shrink(worker, n: int = 1):
    worker.pool.resize(max(1, worker.pool.concurrency - int(n)))
    return {"ok": f"pool now runs up to {worker.pool.concurrency} jobs at once"}
