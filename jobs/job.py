"""``@job``: a function that can run now, or later in a worker."""

from __future__ import annotations

import inspect
import random
import uuid
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, Generic, ParamSpec, TypeVar, overload

from django.utils import timezone

from jobs import broker, context
from jobs.conf import on_reset, settings
from jobs.exceptions import ConfigurationError, Retry
from jobs.messages import Envelope, JobMessage, encode
from jobs.middleware import stack
from jobs.options import (
    APPLY_OPTIONS,
    QUEUE_NAME,
    JobOptions,
    queue_problem,
)

P = ParamSpec("P")
R = TypeVar("R")

class Job(Generic[P, R]):
    """What ``@job`` makes of a function. Call it to run inline; ``delay()`` to enqueue."""

    def __init__(self, func: Callable[..., R], **options: Any) -> None:
        self.options = JobOptions.of(func, options)
        self.func = func
        self.name: str = self.options.name or f"{func.__module__}.{func.__qualname__}"
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__module__ = func.__module__
        self.__doc__ = func.__doc__
        self.__wrapped__ = func
        self.signature = inspect.signature(func)
        self._resolved: dict = {}  # option() values, settings defaults filled in

    def __repr__(self) -> str:
        return f"<@job {self.name}>"

    # Running inline ---------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.bind:
            return self.func(self, *args, **kwargs)
        return self.func(*args, **kwargs)

    @property
    def request(self) -> context.Request:
        """The request being run (inside a worker or ``apply()``); empty otherwise."""
        return context.current.get()

    # Enqueueing --------------------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs):
        """Enqueue with default options; returns a :class:`jobs.JobResult`."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args=None, kwargs=None, **options):
        """Enqueue with options: countdown, eta, expires, queue, priority, headers, ...

        Arguments are checked against the function's signature and serialized here, so a
        call that can't work fails now, in the caller, with a clear error.
        """
        if settings.ALWAYS_EAGER:
            self._check_options(options, "apply_async")
            args, kwargs = tuple(args or ()), dict(kwargs or {})
            if self.typing:
                self.check_arguments(args, kwargs)
            return self.apply(args, kwargs, **options)
        return self.publish(self.prepare(args, kwargs, **options), **options)

    def prepare(self, args=None, kwargs=None, **options) -> Envelope:
        """Build and serialize one call without sending it (``apply_async`` is ``prepare``
        then ``publish``). Raises here what can't be sent: arguments that don't fit the
        function (TypeError), values the serializer can't carry, a message too large."""
        self._check_options(options, "apply_async")
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        if self.typing:
            self.check_arguments(args, kwargs)
        return encode(self.build_message(args, kwargs, options),
                      options.get("serializer") or self.serializer or settings.TASK_SERIALIZER,
                      self.func, settings.TASK_MAX_MESSAGE_SIZE)

    def publish(self, envelope: Envelope, **options):
        """Send a prepared call to its queue, through the middleware's publishing hooks
        (which may change it, or answer with the handle of a job already queued); returns
        its :class:`jobs.JobResult`. Options: ``on_commit``, ``compression``, ``retry``,
        ``retry_policy``."""
        from jobs.results import JobResult

        middleware = stack()
        envelope = middleware.before_publish(self, envelope, options)
        if envelope.__class__ is not Envelope:
            return envelope  # a middleware answered for it (e.g. the same unique call)
        try:
            broker.publish(
                envelope,
                on_commit=options.get("on_commit"),
                compression=options.get("compression") or self.compression,
                retry=options.get("retry"),
                retry_policy=options.get("retry_policy"),
            )
        except BaseException as exc:
            middleware.publish_failed(self, envelope, exc)
            raise
        message = envelope.message
        middleware.notify("after_publish", self, message)
        return JobResult(message.id, name=self.name)

    def _check_options(self, options: dict, method: str) -> None:
        if options and not APPLY_OPTIONS.issuperset(options):
            unknown = ", ".join(sorted(set(options) - APPLY_OPTIONS))
            raise TypeError(f"{self.name}.{method}() got unknown option(s): {unknown}")

    def delay_many(self, calls, **options) -> list:
        """Enqueue one job per item of ``calls`` (each a tuple of positional arguments, or
        an ``(args, kwargs)`` pair) in one go: pipelined on Redis, batched elsewhere.
        Returns the JobResult handles in order."""
        from jobs.results import JobResult

        self._check_options(options, "delay_many")
        if options.get("task_id") or options.get("job_id"):
            raise TypeError(f"{self.name}.delay_many(): each job gets its own id")
        pairs = [_as_call(call) for call in calls]
        if self.typing:
            for args, kwargs in pairs:
                self.check_arguments(args, kwargs)
        if settings.ALWAYS_EAGER:
            return [self.apply(args, kwargs, **options) for args, kwargs in pairs]
        serializer = options.get("serializer") or self.serializer or settings.TASK_SERIALIZER
        limit = settings.TASK_MAX_MESSAGE_SIZE
        middleware = stack()
        handles, envelopes = [], []
        for args, kwargs in pairs:
            envelope = encode(self.build_message(args, kwargs, options), serializer, self.func,
                              limit)
            envelope = middleware.before_publish(self, envelope, options)
            if isinstance(envelope, Envelope):
                envelopes.append(envelope)
                envelope = JobResult(envelope.message.id, name=self.name)
            handles.append(envelope)
        try:
            broker.publish_many(envelopes, on_commit=options.get("on_commit"),
                                compression=options.get("compression") or self.compression)
        except BaseException as exc:
            for envelope in envelopes:
                middleware.publish_failed(self, envelope, exc)
            raise
        for envelope in envelopes:
            middleware.notify("after_publish", self, envelope.message)
        return handles

    def check_arguments(self, args: tuple, kwargs: dict) -> None:
        """Raise TypeError, naming the job, if the function can't be called so."""
        try:
            if self.bind:
                self.signature.bind(self, *args, **kwargs)
            else:
                self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None

    def build_message(self, args: tuple, kwargs: dict, options: dict) -> JobMessage:
        now = None
        eta = options.get("eta")
        countdown = options.get("countdown")
        if countdown is not None:
            now = timezone.now()
            eta = now + timedelta(seconds=countdown)
        elif eta is not None:
            eta = _aware(eta, "eta")
        expires = options.get("expires", self.expires)
        if isinstance(expires, (int, float)):
            expires = (now or timezone.now()) + timedelta(seconds=expires)
        elif expires is not None:
            expires = _aware(expires, "expires")
        queue = options.get("queue")
        exchange = routing_key = None
        priority = options.get("priority", self.priority)
        if not queue:
            route = broker.resolve(self.name, self.queue, args, kwargs, options)
            queue, exchange, routing_key = route.queue, route.exchange, route.routing_key
            if priority is None:
                priority = route.priority
        if priority is None:
            priority = settings.TASK_DEFAULT_PRIORITY
        if priority is not None or queue.__class__ is not str or not QUEUE_NAME.match(queue):
            problem = queue_problem(queue) or broker.priority_problem(priority)
            if problem:
                raise ValueError(f"{self.name}: {problem}")
        parent = context.current.get()
        job_id = options.get("task_id") or options.get("job_id") or str(uuid.uuid4())
        return JobMessage(
            id=job_id,
            name=self.name,
            args=args,
            kwargs=kwargs,
            queue=queue,
            eta=eta,
            expires=expires,
            retries=options.get("retries", 0),
            time_limit=options.get("time_limit", self.time_limit),
            soft_time_limit=options.get("soft_time_limit", self.soft_time_limit),
            root_id=options.get("root_id") or parent.root_id or parent.id,
            parent_id=options.get("parent_id") or parent.id,
            group_id=options.get("group_id"),
            priority=priority,
            ignore_result=options.get("ignore_result", self.ignore_result) or False,
            headers=options.get("headers") or {},
            exchange=exchange,
            routing_key=routing_key,
        )

    def apply(self, args=None, kwargs=None, **options):
        """Run now, in this process, as a worker would; returns an EagerResult."""
        from jobs.eager import run_eagerly

        return run_eagerly(self, tuple(args or ()), dict(kwargs or {}), options)

    # Inside a running job ------------------------------------------------------------------

    def retry(self, exc: BaseException | None = None, countdown: float | None = None,
              eta: datetime | None = None, max_retries: int | None = None, **options) -> Retry:
        """Schedule this job to run again; use as ``raise self.retry(exc=exc)``.

        When the retries are used up, the original exception (or MaxRetriesExceeded) is
        raised instead, so the job ends FAILURE.
        """
        request = self.request
        if request.id is None:
            raise RuntimeError(f"{self.name}.retry() called outside of a running job")
        limit = self.effective_max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            from jobs.exceptions import MaxRetriesExceeded

            raise MaxRetriesExceeded(
                f"{self.name}[{request.id}] retried {request.retries} times, the maximum"
            )
        if eta is None:
            delay = self.retry_delay(request.retries) if countdown is None else countdown
            eta = timezone.now() + timedelta(seconds=delay)
        if not request.is_eager:
            options = {**options, "eta": eta, "task_id": request.id,
                       "retries": request.retries + 1,
                       "queue": options.get("queue") or request.queue,
                       "root_id": request.root_id, "parent_id": request.parent_id,
                       "on_commit": False}
            self.publish(self.prepare(request.args, request.kwargs, **options), **options)
        wait = max(0.0, (eta - timezone.now()).total_seconds())
        return Retry(f"retry {request.retries + 1} in {wait:.1f}s", exc=exc, when=eta)

    @property
    def effective_max_retries(self) -> int | None:
        if self.max_retries is not None:
            return self.max_retries
        return settings.TASK_DEFAULT_MAX_RETRIES

    def retry_delay(self, retries: int) -> float:
        """Seconds before retry number ``retries + 1``: fixed, or exponential with jitter."""
        if self.retry_backoff:
            factor = 1 if self.retry_backoff is True else float(self.retry_backoff)
            delay = min(factor * (2 ** retries), self.retry_backoff_max)
            if self.retry_jitter:
                delay = random.uniform(0, delay)
            return delay
        if self.retry_kwargs and "countdown" in self.retry_kwargs:
            return self.retry_kwargs["countdown"]
        if self.default_retry_delay is not None:
            return self.default_retry_delay
        return settings.TASK_DEFAULT_RETRY_DELAY

    def update_state(self, state: str, meta: dict | None = None, job_id: str | None = None):
        """Record a custom state (e.g. PROGRESS) with ``meta`` for the running job (never
        over a state the job has ended in)."""
        from jobs import lifecycle

        job_id = job_id or self.request.id
        if job_id is None:
            raise RuntimeError(f"{self.name}.update_state() needs a running job or a job_id")
        lifecycle.mark_progress(job_id, self.name, state, meta)

    # Worker-side options with JOBS defaults --------------------------------------------------

    def option(self, name: str):
        """The option ``name``, or the JOBS setting it defaults to (kept until JOBS changes:
        the worker asks for a few of them for every job)."""
        try:
            return self._resolved[name]
        except KeyError:
            value = getattr(self.options, name)
            if value is None:
                value = getattr(settings, _SETTING_FOR[name])
            self._resolved[name] = value
            _RESOLVING.add(self)
            return value


#: Jobs whose ``option()`` values were resolved against the settings: forgotten on a change.
_RESOLVING: weakref.WeakSet = weakref.WeakSet()


@on_reset
def _forget_resolved_options() -> None:
    for job in list(_RESOLVING):
        job._resolved.clear()


for _option in JobOptions.__dataclass_fields__:
    if _option != "name":  # the job's own name attribute, which has the default filled in
        setattr(Job, _option, property(attrgetter(f"options.{_option}"),
                                       doc=f"The ``{_option}`` option of ``@job``."))

_SETTING_FOR = {
    "acks_late": "ACKS_LATE",
    "reject_on_worker_lost": "TASK_REJECT_ON_WORKER_LOST",
    "ignore_result": "TASK_IGNORE_RESULT",
    "track_started": "TASK_TRACK_STARTED",
    "time_limit": "TASK_TIME_LIMIT",
    "soft_time_limit": "TASK_SOFT_TIME_LIMIT",
}


def _as_call(call) -> tuple[tuple, dict]:
    if (isinstance(call, tuple) and len(call) == 2 and isinstance(call[0], (tuple, list))
            and isinstance(call[1], dict)):
        return tuple(call[0]), call[1]
    if isinstance(call, (tuple, list)):
        return tuple(call), {}
    raise TypeError(f"delay_many() takes tuples of arguments, not {type(call).__name__}")


def _aware(value, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if timezone.is_naive(value):
        raise ValueError(f"{what}={value!r} is naive; pass an aware datetime (USE_TZ)")
    return value


@overload
def job(func: Callable[P, R], /) -> Job[P, R]: ...
@overload
def job(*, name: str | None = ..., **options: Any) -> Callable[[Callable[P, R]], Job[P, R]]: ...


def job(func=None, /, **options):
    """Make a function a job: ``@job`` or ``@job(queue="emails", max_retries=5, ...)``."""
    from jobs.registry import registry

    def decorate(f):
        made = Job(f, **options)
        registry.register(made)
        return made

    if func is not None:
        if not callable(func):
            raise ConfigurationError("@job takes options as keyword arguments: @job(queue='x')")
        return decorate(func)
    return decorate
