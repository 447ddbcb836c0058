"""``delay_many``: many calls of one job, enqueued in one go.

Every message of one call has the same name, options, route, headers and properties; only
the id, the arguments and what derives from them differ. Where the publishing middleware
leaves such messages as they are (:meth:`jobs.middleware.Middleware.passes_through`) and a
router doesn't look at the arguments, the call's messages are a :class:`jobs.batch.Batch`:
one message is built and encoded, and the broker writes each call's text from it (one
pipeline on Redis; on ``django://`` one COPY on PostgreSQL, a multi-row INSERT per batch
elsewhere). Otherwise each message is built, encoded and shown to the middleware on its own,
as ``apply_async`` does, and sent in the same one pipeline or statement.

``delay()`` with no options, outside a running job, is a bulk call of one (:func:`delay_one`):
its job's message with holes is made on the first call and kept, and the transport keeps its
text (:meth:`jobs.broker.publisher.Publisher._send_alike`), so each call only fills it.
"""

from __future__ import annotations

from jobs import broker, context
from jobs.batch import HOLES, Alike, Batch
from jobs.compat.kombu import json_is_kombus
from jobs.conf import on_reset, settings
from jobs.messages import Envelope, encode
from jobs.middleware import stack


def delay_many(job, pairs: list[tuple[tuple, dict]], options: dict) -> list:
    """Enqueue ``job`` once per ``(args, kwargs)`` of ``pairs`` (checked already); returns
    the JobResult handles in order."""
    from jobs.job import _result_class

    JobResult = _result_class()
    serializer = options.get("serializer") or job.serializer or settings.TASK_SERIALIZER
    limit = settings.TASK_MAX_MESSAGE_SIZE
    project_broker = broker.get_broker()
    route = None  # the same for every call, unless a router looks at the arguments
    if not options.get("queue") and not project_broker.routing.routers:
        route = broker.resolve(job.name, job.queue)
    middleware = stack()
    envelopes = None
    if _fillable(project_broker, serializer) and (route is not None or options.get("queue")):
        envelopes = _alike(job, pairs, options, route, middleware, limit)
    if envelopes is not None:
        handles = [JobResult(call[0], name=job.name) for call in envelopes.calls]
    else:
        envelopes, handles = _one_by_one(job, pairs, options, route, middleware, serializer,
                                         limit, JobResult)
    try:
        broker.publish_many(envelopes, on_commit=options.get("on_commit"),
                            compression=options.get("compression") or job.compression)
    except BaseException as exc:
        for envelope in envelopes:
            middleware.publish_failed(job, envelope, exc)
        raise
    messages = envelopes.messages() if envelopes.__class__ is Batch else (
        envelope.message for envelope in envelopes)
    for message in messages:
        middleware.notify("after_publish", job, message)
    return handles


def _fillable(project_broker, serializer: str) -> bool:
    """Whether the broker stores messages as text a call can be filled into (Redis,
    ``django://``), in the JSON that one message with placeholders can be written in."""
    return project_broker.pipelines_batches and serializer == "json" and json_is_kombus()


def _alike(job, pairs, options, route, middleware, limit) -> Batch | None:
    """The calls as one :class:`Batch`, or None if the middleware must see each message,
    or a call can't be written so (the general path then says what is wrong with it)."""
    prototype = job.build_message((), {}, {**options, "task_id": HOLES["id"]}, route)
    if not middleware.passes_through(job, prototype, options):
        return None
    return Alike(prototype).batch(pairs, limit)


def _one_by_one(job, pairs, options, route, middleware, serializer, limit, JobResult):
    """Each call built, encoded and passed through the publishing middleware on its own:
    ``(envelopes to send, handles)``; a middleware may answer for a call (the handle of a
    job already queued), which then sends nothing."""
    handles, envelopes = [], []
    for args, kwargs in pairs:
        envelope = encode(job.build_message(args, kwargs, options, route), serializer,
                          job.func, limit)
        envelope = middleware.before_publish(job, envelope, options)
        if isinstance(envelope, Envelope):
            envelopes.append(envelope)
            envelope = JobResult(envelope.message.id, name=job.name)
        handles.append(envelope)
    return envelopes, handles


#: Job -> the :class:`Alike` its ``delay()`` fills, or None where each call is built on its own
#: (``apply_async``'s path); worked out on the job's first ``delay()``, again when JOBS changes.
_ALIKE: dict = {}


@on_reset
def _forget() -> None:
    _ALIKE.clear()


def delay_one(job, args: tuple, kwargs: dict) -> str | None:
    """``job.delay(*args, **kwargs)`` (checked already) as a bulk call of one, filled into
    the message made once for the job: the job's id, or None where it must take the path
    of ``apply_async`` (inside a running job, whose id its messages carry; a job or project
    whose messages can't be made so; a value only kombu's encoder knows; a message too
    large, which that path refuses with its reason)."""
    if context.current.get().id is not None:
        return None
    try:
        alike = _ALIKE[job]
    except KeyError:
        alike = _ALIKE[job] = _alike_for(job)
    if alike is None:
        return None
    one = alike.batch(((args, kwargs),), settings.TASK_MAX_MESSAGE_SIZE)
    if one is None:
        return None
    middleware = stack()
    try:
        broker.publish_many(one)
    except BaseException as exc:
        middleware.publish_failed(job, one[0], exc)
        raise
    if middleware.hooks["after_publish"]:
        middleware.notify("after_publish", job, one.message(0))
    return one.calls[0][0]


def _alike_for(job) -> Alike | None:
    """The message every ``delay()`` of ``job`` shares, or None where its calls differ in
    more than their ids and arguments, or must each be seen by the publishing middleware."""
    project_broker = broker.get_broker()
    if (job.options.expires is not None  # counted from each call's time
            or not _fillable(project_broker, job.serializer or settings.TASK_SERIALIZER)
            or job.compression or settings.TASK_COMPRESSION
            or project_broker.routing.routers):
        return None
    prototype = job.build_message((), {}, {"task_id": HOLES["id"]},
                                  broker.resolve(job.name, job.queue))
    if not stack().passes_through(job, prototype, {}):
        return None
    return Alike(prototype)
