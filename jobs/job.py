"""``@job``: a function that can run now, or later in a worker."""

from __future__ import annotations

import inspect
import random
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, Generic, ParamSpec, TypeVar, overload

from asgiref.sync import sync_to_async
from django.utils import timezone

from jobs import broker, bulk, context
from jobs.broker.routing import Route
from jobs.conf import on_reset, settings
from jobs.exceptions import ConfigurationError, Retry
from jobs.hooks import JobHooks, class_options
from jobs.ids import new_id
from jobs.messages import Envelope, JobMessage, encode
from jobs.middleware import stack
from jobs.options import (
    APPLY_OPTIONS,
    EMBED_OPTIONS,
    FROM_SETTINGS,
    NAMES,
    QUEUE_NAME,
    JobOptions,
    queue_problem,
)

P = ParamSpec("P")
R = TypeVar("R")

class Job(JobHooks, Generic[P, R]):
    """What ``@job`` makes of a function. Call it to run inline; ``delay()`` to enqueue.
    Subclass it for a task class: ``@job(base=MyJob)`` (:mod:`jobs.hooks`)."""

    def __init__(self, func: Callable[..., R], **options: Any) -> None:
        defaults = class_options(type(self), NAMES) if type(self) is not Job else {}
        self.options = JobOptions.of(func, {**defaults, **options})
        for name in defaults:  # a class attribute hides the option's property: the value wins
            self.__dict__[name] = getattr(self.options, name)
        self.func = func
        self.name: str = self.options.name or f"{func.__module__}.{func.__qualname__}"
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__module__ = func.__module__
        self.__doc__ = func.__doc__
        self.__wrapped__ = func
        self.call_signature = inspect.signature(func)  # (signature() is Celery's)
        self._positional = _positional_counts(self.call_signature, self.options.bind)
        self.is_async = inspect.iscoroutinefunction(func)  # its calls return a coroutine
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
            if not EMBED_OPTIONS.isdisjoint(options):  # link, link_error: run them too
                return self.signature(args, kwargs, **options).apply()
            return self.apply(args, kwargs, **options)
        if not options:  # delay(): the job's message made once, filled for each call
            args, kwargs = tuple(args or ()), dict(kwargs or {})
            if self.options.typing:
                self.check_arguments(args, kwargs)
            job_id = bulk.delay_one(self, args, kwargs)
            if job_id is not None:
                return _result_class()(job_id, name=self.name)
        return self.publish(self.prepare(args, kwargs, **options), **options)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs):
        """:meth:`delay` for async code: ``await add.adelay(2, 3)``."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(self, args=None, kwargs=None, **options):
        """:meth:`apply_async` for async code, run where Django runs the ORM for async code
        (``sync_to_async``), so that it joins the caller's transaction and its commit."""
        return await sync_to_async(self.apply_async, thread_sensitive=True)(args, kwargs,
                                                                           **options)

    def prepare(self, args=None, kwargs=None, **options) -> Envelope:
        """Build and serialize one call without sending it (``apply_async`` is ``prepare``
        then ``publish``). Raises here what can't be sent: arguments that don't fit the
        function (TypeError), values the serializer can't carry, a message too large."""
        if options:
            self._check_options(options, "apply_async")
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        job = self.options  # read here, not through the option properties: a hot path
        if job.typing:
            self.check_arguments(args, kwargs)
        return encode(self.build_message(args, kwargs, options),
                      options.get("serializer") or job.serializer or settings.TASK_SERIALIZER,
                      self.func, settings.TASK_MAX_MESSAGE_SIZE)

    def publish(self, envelope: Envelope, **options):
        """Send a prepared call to its queue, through the middleware's publishing hooks
        (which may change it, or answer with the handle of a job already queued); returns
        its :class:`jobs.JobResult`. Options: ``on_commit``, ``compression``, ``retry``,
        ``retry_policy``."""
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
        return _result_class()(message.id, name=self.name)

    def _check_options(self, options: dict, method: str) -> None:
        if options and not APPLY_OPTIONS.issuperset(options):
            unknown = ", ".join(sorted(set(options) - APPLY_OPTIONS))
            raise TypeError(f"{self.name}.{method}() got unknown option(s): {unknown}")

    def delay_many(self, calls, **options) -> list:
        """Enqueue one job per item of ``calls`` (each a tuple of positional arguments, or
        an ``(args, kwargs)`` pair) in one go: pipelined on Redis, batched elsewhere.
        Returns the JobResult handles in order."""
        self._check_options(options, "delay_many")
        if options.get("task_id") or options.get("job_id"):
            raise TypeError(f"{self.name}.delay_many(): each job gets its own id")
        pairs = [_as_call(call) for call in calls]
        if self.typing:
            for args, kwargs in pairs:
                self.check_arguments(args, kwargs)
        if settings.ALWAYS_EAGER:
            return [self.apply(args, kwargs, **options) for args, kwargs in pairs]
        return bulk.delay_many(self, pairs, options)

    def check_arguments(self, args: tuple, kwargs: dict) -> None:
        """Raise TypeError, naming the job, if the function can't be called so."""
        counts = self._positional
        if counts and not kwargs and counts[0] <= len(args) <= counts[1]:
            return  # positional arguments only, as many as it takes: no need to bind them
        try:
            if self.bind:
                self.call_signature.bind(self, *args, **kwargs)
            else:
                self.call_signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None

    def build_message(self, args: tuple, kwargs: dict, options: dict,
                      route: Route | None = None) -> JobMessage:
        job = self.options  # read here, not through the option properties: a hot path
        now = None
        eta = options.get("eta")
        countdown = options.get("countdown")
        if countdown is not None:
            now = timezone.now()
            eta = now + timedelta(seconds=countdown)
        elif eta is not None:
            eta = _aware(eta, "eta")
        expires = options.get("expires", job.expires)
        if isinstance(expires, (int, float)):
            expires = (now or timezone.now()) + timedelta(seconds=expires)
        elif expires is not None:
            expires = _aware(expires, "expires")
        queue = options.get("queue")
        exchange = routing_key = None
        priority = options.get("priority", job.priority)
        if not queue:
            route = route or broker.resolve(self.name, job.queue, args, kwargs, options)
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
        job_id = options.get("task_id") or options.get("job_id") or new_id()
        return JobMessage(
            id=job_id,
            name=self.name,
            args=args,
            kwargs=kwargs,
            queue=queue,
            eta=eta,
            expires=expires,
            retries=options.get("retries", 0),
            time_limit=options.get("time_limit", job.time_limit),
            soft_time_limit=options.get("soft_time_limit", job.soft_time_limit),
            root_id=options.get("root_id") or parent.root_id or parent.id,
            parent_id=options.get("parent_id") or parent.id,
            group_id=options.get("group_id"),
            group_index=options.get("group_index"),
            embed=_embed(options) if options and not EMBED_OPTIONS.isdisjoint(options) else None,
            priority=priority,
            ignore_result=options.get("ignore_result", job.ignore_result) or False,
            headers=options.get("headers") or {},
            exchange=exchange,
            routing_key=routing_key,
        )

    def apply(self, args=None, kwargs=None, **options):
        """Run now, in this process, as a worker would; returns an EagerResult."""
        from jobs.eager import run_eagerly

        return run_eagerly(self, tuple(args or ()), dict(kwargs or {}), options)

    # Signatures (jobs.canvas) ---------------------------------------------------------------

    def signature(self, args=None, kwargs=None, **options):
        """This job's call, kept for later or for a workflow: ``add.signature((2, 2))``."""
        from jobs.signatures import Signature

        return Signature(self, args, kwargs, **options)

    def s(self, *args, **kwargs):
        """``add.s(2)``: a signature; in a chain, the previous result comes before 2."""
        return self.signature(args, kwargs)

    def si(self, *args, **kwargs):
        """``add.si(2, 2)``: an immutable signature, which takes no previous result."""
        return self.signature(args, kwargs, immutable=True)

    def map(self, it):
        """One job calling this one with each item of ``it``."""
        from jobs.canvas import xmap

        return xmap(self.s(), it)

    def starmap(self, it):
        """One job calling this one with each tuple of ``it`` as its arguments."""
        from jobs.canvas import xstarmap

        return xstarmap(self.s(), it)

    def chunks(self, it, n: int):
        """The calls of ``it`` (tuples of arguments) in jobs of ``n`` calls each."""
        from jobs.canvas import chunks

        return chunks(self.s(), it, n)

    # Inside a running job ------------------------------------------------------------------

    def retry(self, args=None, kwargs=None, exc: BaseException | None = None, throw: bool = True,
              eta: datetime | None = None, countdown: float | None = None,
              max_retries: int | None = None, **options) -> Retry:
        """Schedule this job to run again, and raise :class:`~jobs.exceptions.Retry` to end
        this run, as Celery's ``Task.retry`` does (``raise self.retry(...)`` reads the same).
        ``throw=False`` returns the Retry instead, and the run goes on. ``args``/``kwargs``
        replace the call's arguments for the retry; ``max_retries`` overrides the job's.

        When the retries are used up, the original exception (or MaxRetriesExceeded) is
        raised instead, so the job ends FAILURE.
        """
        request = self.request
        if request.id is None:
            raise RuntimeError(f"{self.name}.retry() called outside of a running job")
        limit = self.max_retries if max_retries is None else max_retries
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
                       "group_id": request.group_id, "group_index": request.group_index,
                       "embed": request.embed, "on_commit": False}
            self.publish(self.prepare(request.args if args is None else args,
                                      request.kwargs if kwargs is None else kwargs,
                                      **options), **options)
        wait = max(0.0, (eta - timezone.now()).total_seconds())
        retry = Retry(f"retry {request.retries + 1} in {wait:.1f}s", exc=exc, when=eta)
        if throw:
            raise retry
        return retry

    @property
    def max_retries(self) -> int | None:
        """The ``max_retries`` option: None retries forever (as in Celery); left out of
        ``@job``, the TASK_DEFAULT_MAX_RETRIES setting."""
        value = self.options.max_retries
        return settings.TASK_DEFAULT_MAX_RETRIES if value is FROM_SETTINGS else value

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

    def update_state(self, state: str, meta: dict | None = None, job_id: str | None = None,
                     task_id: str | None = None):
        """Record a custom state (e.g. PROGRESS) with ``meta`` for the running job (never
        over a state the job has ended in): ``JobResult.info`` reads the meta, and the
        admin shows ``{"current": i, "total": n}`` as a progress bar. ``task_id`` is
        Celery's name for ``job_id``."""
        from jobs import lifecycle

        job_id = job_id or task_id or self.request.id
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
    # ``name``: the job's own attribute, with the default filled in; ``max_retries``: a
    # property of its own.
    if _option not in ("name", "max_retries"):
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


def _result_class():
    """:class:`jobs.results.JobResult`, imported on first use (it imports the models), then
    kept: an import statement costs more than the rest of building the handle."""
    global _JobResult
    if _JobResult is None:
        from jobs.results import JobResult

        _JobResult = JobResult
    return _JobResult


_JobResult = None


def _embed(options: dict) -> dict | None:
    from jobs.signatures import embed_of

    return embed_of(options)


def _positional_counts(signature: inspect.Signature, bind: bool) -> tuple[int, float] | None:
    """``(least, most)`` positional arguments a call without keyword arguments may pass, or
    None if such a call can't be judged by its count alone (a keyword-only parameter without
    a default)."""
    least, most = 0, 0.0
    for parameter in signature.parameters.values():
        kind, required = parameter.kind, parameter.default is parameter.empty
        if kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            most += 1
            least += required
        elif kind is parameter.VAR_POSITIONAL:
            most = float("inf")
        elif kind is parameter.KEYWORD_ONLY and required:
            return None
    if bind:  # the job itself comes first
        least, most = max(least - 1, 0), most - 1
    return least, most


def _as_call(call) -> tuple[tuple, dict]:
    if call.__class__ is tuple and (len(call) != 2 or call[1].__class__ is not dict):
        return call, {}  # positional arguments only, the common case: told apart cheaply
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
def job(*, name: str | None = ..., base: type[Job] = ...,
        **options: Any) -> Callable[[Callable[P, R]], Job[P, R]]: ...


def job(func=None, /, *, base: type[Job] = Job, **options):
    """Make a function a job: ``@job`` or ``@job(queue="emails", max_retries=5, ...)``;
    ``base=`` a subclass of :class:`Job` for a task class with its hooks and defaults."""
    from jobs.registry import registry

    if not (isinstance(base, type) and issubclass(base, Job)):
        raise ConfigurationError(f"@job(base={base!r}): base must be a subclass of jobs.Job")

    def decorate(f):
        made = base(f, **options)
        registry.register(made)
        return made

    if func is not None:
        if not callable(func):
            raise ConfigurationError("@job takes options as keyword arguments: @job(queue='x')")
        return decorate(func)
    return decorate
