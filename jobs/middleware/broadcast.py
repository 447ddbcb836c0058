"""Broadcast jobs: one message, run once by every worker consuming a broadcast queue.

A job sent to a queue bound to a fanout exchange (kombu's ``Broadcast``) reaches each worker
through a queue of the worker's own (:meth:`jobs.broker.Broker.consuming`). Each worker's copy
is a run of its own, recorded under ``<id>@<worker hostname>`` with the job's id as its
parent: the copies never take one another for done, and the poison-job cap counts each
worker's deliveries of its own copy, not the other workers'. ``AsyncResult(id)`` names the
broadcast, which has no single outcome: it stays PENDING, and its ``children`` are the runs,
one per worker.

Revoking the job's id stops every copy that hasn't started: the worker's revocations mark
the copies it receives after, and a copy received before reads the revocation where it
starts; with ``terminate=True`` the running copies are revoked and killed as well
(:func:`jobs.lifecycle.revoke_request`).

A copy stays with its worker: a broadcast job is not delayed (``eta``, ``countdown``) nor
retried, either of which would send it to every worker again; both are refused where they
are asked for.
"""

from __future__ import annotations

import dataclasses

from jobs.broker import get_broker
from jobs.exceptions import TimeLimitExceeded
from jobs.middleware import Middleware
from jobs.middleware.results import revoke
from jobs.models import JobRecord, States
from jobs.outcome import Kind

#: The header a worker's copy carries: the id of the broadcast job it is a run of.
HEADER = "broadcast_id"


def run_id(job_id: str, hostname: str) -> str:
    """The id under which the worker ``hostname`` records its run of broadcast ``job_id``."""
    return f"{job_id}@{hostname}"


def own_run(worker, delivery):
    """``delivery`` as the worker's own run: a copy of a broadcast job gets its run id (the
    job's id becomes its parent, and its root unless it has one); any other is left as it is.
    Hooks that record a job from the delivery the broker made (a killed process) use it."""
    headers = delivery.headers
    if HEADER in headers or not get_broker().routing.fanout(delivery.queue):
        return delivery
    job_id = headers["id"]
    headers = {**headers, "id": run_id(job_id, worker.hostname), "parent_id": job_id,
               "root_id": headers.get("root_id") or job_id, HEADER: job_id}
    return dataclasses.replace(delivery, headers=headers)


class Broadcast(Middleware):
    """Makes each worker's copy of a broadcast job a run of its own; refuses what can't be
    broadcast where it is asked for."""

    def applies_to(self, job) -> bool:
        # Where jobs run, only a project with broadcast queues has anything to check.
        return bool(get_broker().routing.broadcast)

    def before_publish(self, job, envelope, options):
        message = envelope.message
        broker = get_broker()
        if message.queue not in broker.routing.broadcast:
            return envelope
        where = (f"{message.name}: queue {message.queue!r} is a broadcast queue (bound to a "
                 "fanout exchange)")
        if not broker.broadcasts:
            raise ValueError(f"{where}, and {broker.display_url} can't broadcast: use Redis "
                             "or RabbitMQ, or bind the queue to a direct exchange")
        if message.retries:
            raise ValueError(f"{where}: a broadcast job is not retried (the retry would run "
                             "on every worker again)")
        if message.eta is not None:
            raise ValueError(f"{where}: a broadcast job can't be delayed (eta, countdown); "
                             "each worker runs it when it arrives")
        if message.exchange is None:
            # Sent with queue=: to the queue's exchange all the same, as Celery sends it
            # (nothing consumes a broadcast queue by its name).
            route = broker.routing.resolve(message.name, message.queue)
            message = dataclasses.replace(message, exchange=route.exchange,
                                          routing_key=route.routing_key)
            envelope = dataclasses.replace(envelope, message=message)
        return envelope

    def passes_through(self, job, message, options) -> bool:
        return message.queue not in get_broker().routing.broadcast

    def receive(self, worker, delivery):
        return own_run(worker, delivery)

    def execute(self, execution, call_next):
        job_id = execution.message.headers.get(HEADER)
        if job_id is not None and JobRecord.objects.filter(
                job_id=job_id, state=States.REVOKED).exists():
            # Revoked after this worker received its copy (the worker marks those after).
            return revoke(execution, "revoked before it started")
        return call_next(execution)

    def completed(self, worker, delivery, outcome):
        if outcome.kind is not Kind.TIME_LIMIT or delivery is None:
            return outcome
        run = own_run(worker, delivery)
        if run is delivery:
            return outcome
        # Recorded here, against the run: the hooks after this one see the message as the
        # broker delivered it, under the broadcast's id.
        return worker.record_failure(run, outcome, TimeLimitExceeded(
            f"{outcome.name}[{outcome.job_id}] passed its hard time limit and was killed"))
