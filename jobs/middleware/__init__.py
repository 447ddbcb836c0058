"""Job middleware: the one seam for behaviour that cuts across every job.

``JOBS["MIDDLEWARE"]`` is an ordered list of dotted paths, like Django's ``MIDDLEWARE``;
each names a :class:`Middleware` subclass. Every feature that isn't the bare delivery of a
message — recording results, expiry, revocations, retries, rate limits, time limits, the
poison-job cap, uniqueness, delayed jobs, signals, logging — is one of them, and a project
adds its own the same way. The defaults, in order, are :data:`jobs.conf.DEFAULT_MIDDLEWARE`.

Hooks are of two kinds:

- **Steering hooks** decide what happens: ``before_publish``, ``publish_failed``,
  ``receive``, ``execute``, ``completed``, and the worker's ``tick``, ``connection_lost``
  and ``stand_down``. An exception raised by one of them is an error of the job's
  delivery: at the call site for the publishing hooks; in the worker, the message is handed
  back (the worker reconnects and the broker delivers it again).
- **Observer hooks** only watch: ``after_publish``, ``started``, ``finished``,
  ``worker_started``, ``worker_stopped`` and ``process_started``. One that raises is logged
  with its traceback and changes nothing: a job's outcome stands, and a finished job never
  runs again because of an observer.

Order, as in Django: ``receive`` hooks run in list order and ``execute`` hooks wrap the ones
listed after them (the message comes in from the first listed); ``before_publish`` hooks run
in reverse list order (a message goes out from the last listed), so that the first listed,
``Signing``, signs what every other middleware has made of a message and checks it first
when it comes in. Only the hooks a class overrides are called, and a middleware may say which
jobs its per-job hooks concern (``applies_to``), so a middleware costs nothing where it has
nothing to do.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

from jobs.conf import on_reset, settings
from jobs.exceptions import ConfigurationError
from jobs.messages import Envelope

if TYPE_CHECKING:
    from jobs.execution import Delivery, Execution
    from jobs.job import Job
    from jobs.messages import JobMessage
    from jobs.outcome import Outcome
    from jobs.results import JobResult

logger = logging.getLogger("jobs.middleware")


class Middleware:
    """Base class of job middleware: every hook does nothing. Override the ones you need."""

    # Where jobs are enqueued ----------------------------------------------------------------

    def before_publish(self, job: Job, envelope: Envelope, options: dict) -> Envelope | JobResult:
        """Return the envelope to send (this one or a changed one), or a JobResult to send
        nothing and hand that to the caller instead; raise to refuse the call."""
        return envelope

    def passes_through(self, job: Job, message: JobMessage, options: dict) -> bool:
        """Whether ``before_publish`` returns every envelope of this bulk call of ``job``
        (``delay_many``) as it is, whatever each call's id and arguments: ``message`` is the
        call's message with stand-ins for them. If every publishing middleware says so, the
        call's messages are built from one (:class:`jobs.batch.Batch`) and not shown to
        ``before_publish`` one by one. ``delay()`` with no options, outside a running job, is
        a call of one, asked once per job (again when JOBS changes) with ``options`` empty.
        A middleware that overrides ``before_publish`` says here when it has nothing to do;
        the default, False, has every message shown to it."""
        return False

    def publish_failed(self, job: Job, envelope: Envelope, exc: BaseException) -> None:
        """Sending ``envelope`` failed after ``before_publish`` let it through: undo."""

    def after_publish(self, job: Job, message: JobMessage) -> None:
        """Observer: the message was handed to the broker (or waits for the commit)."""

    # The worker's main process --------------------------------------------------------------

    def worker_started(self, worker) -> None:
        """Observer: the worker is about to consume."""

    def tick(self, worker) -> None:
        """Called many times a second from the worker's main thread (keep it cheap)."""

    def receive(self, worker, delivery: Delivery) -> Delivery | None:
        """A message arrived. Return the delivery to run (this one or a changed one), or
        None when this middleware took it over: it has (or will have) called
        ``worker.resume`` (to go on with it later, through the ``receive`` hooks listed after
        this one), ``worker.ack``, ``worker.requeue`` or ``worker.dead_letter``. One held for
        a while should be announced with ``worker.hold``, so it doesn't keep other messages
        out."""
        return delivery

    def completed(self, worker, delivery: Delivery, outcome: Outcome) -> Outcome:
        """The pool reported ``outcome`` (the worker acknowledges by the one returned)."""
        return outcome

    def connection_lost(self, worker) -> None:
        """The broker connection broke: deliveries held from it will come again; drop them."""

    def stand_down(self, worker) -> None:
        """The worker takes no more jobs for now (it stops, or waits for its database):
        finish with every delivery you hold, or hand it back (``worker.requeue``)."""

    def worker_stopped(self, worker) -> None:
        """Observer: the worker has stopped."""

    # Where jobs run (a prefork child, a thread, or the worker process) ------------------------

    def process_started(self) -> None:
        """Observer: a process that will run jobs starts (a prefork child, or the worker)."""

    def applies_to(self, job: Job) -> bool:
        """Whether this middleware's hooks where jobs run (``execute``, ``started``,
        ``finished``) concern ``job``. Asked once per job (again when JOBS changes); a job it
        says False for skips those hooks at no cost. Override it in a middleware that only
        some jobs need."""
        return True

    def execute(self, execution: Execution, call_next) -> Outcome:
        """Run the job by calling ``call_next(execution)``, or don't and return an Outcome."""
        return call_next(execution)

    def started(self, execution: Execution) -> None:
        """Observer: the job's function is about to be called."""

    def finished(self, execution: Execution, outcome: Outcome) -> None:
        """Observer: the job is over for this delivery and its outcome is recorded."""


STEERING = ("before_publish", "publish_failed", "receive", "completed", "execute", "tick",
            "connection_lost", "stand_down")
OBSERVING = ("after_publish", "worker_started", "worker_stopped", "process_started", "started",
             "finished")


class Stack:
    """The configured middleware, with each hook's overriding methods listed once."""

    def __init__(self, middleware: list[Middleware]) -> None:
        self.middleware = middleware
        self.hooks = {name: [getattr(m, name) for m in middleware if _overrides(m, name)]
                      for name in STEERING + OBSERVING}
        # A message goes out through the layers from the innermost (the last listed) and
        # comes in from the outermost, as Django's response and request middleware do: so
        # the signature is the last thing added to a message and the first thing checked.
        self.publishing = self.hooks["before_publish"][::-1]
        self.receiving = self.hooks["receive"]
        # A delivery a middleware held back goes on through the receive hooks after it.
        self._after = {id(hook.__self__): i + 1 for i, hook in enumerate(self.receiving)}
        self.completing = self.hooks["completed"]
        self._chains: dict = {}  # core -> it wrapped in the execute hooks
        self._selective = [m for m in middleware if _overrides(m, "applies_to")]
        self._for_job: dict = {}  # job -> the stack of the middleware that apply to it

    def __iter__(self):
        return iter(self.middleware)

    def execute(self, core):
        """``core`` wrapped in every ``execute`` hook, the first listed outermost."""
        call = self._chains.get(core)
        if call is None:
            call = core
            for hook in reversed(self.hooks["execute"]):
                call = partial(hook, call_next=call)
            self._chains[core] = call
        return call

    def for_job(self, job) -> Stack:
        """The middleware whose hooks apply to ``job`` (``applies_to``): this stack, or a
        smaller one, worked out once per job."""
        try:
            return self._for_job[job]
        except KeyError:
            pass
        chosen = self
        if self._selective:
            left_out = {id(m) for m in self._selective if not m.applies_to(job)}
            if left_out:
                chosen = Stack([m for m in self.middleware if id(m) not in left_out])
        self._for_job[job] = chosen
        return chosen

    def before_publish(self, job, envelope, options):
        for hook in self.publishing:
            envelope = hook(job, envelope, options)
            if envelope.__class__ is not Envelope:
                return envelope  # a middleware answered for it
        return envelope

    def passes_through(self, job, message, options) -> bool:
        """Whether every ``before_publish`` hook leaves the messages of this bulk call as
        they are (:meth:`Middleware.passes_through`)."""
        return all(hook.__self__.passes_through(job, message, options)
                   for hook in self.publishing)

    def publish_failed(self, job, envelope, exc) -> None:
        for hook in self.hooks["publish_failed"][::-1]:
            hook(job, envelope, exc)

    def receive(self, worker, delivery, after: Middleware | None = None):
        """``delivery`` through the receive hooks (those listed after ``after`` only)."""
        hooks = self.receiving if after is None else self.receiving[self._after[id(after)]:]
        for hook in hooks:
            delivery = hook(worker, delivery)
            if delivery is None:
                return None
        return delivery

    def completed(self, worker, delivery, outcome):
        for hook in self.completing:
            outcome = hook(worker, delivery, outcome)
        return outcome

    def call(self, name: str, *args) -> None:
        """Call steering hook ``name`` of every middleware, in order (errors propagate)."""
        for hook in self.hooks[name]:
            hook(*args)

    def notify(self, name: str, *args) -> None:
        """Call observer hook ``name`` of every middleware; one that raises is logged."""
        for hook in self.hooks[name]:
            try:
                hook(*args)
            except Exception:
                logger.exception("%s.%s raised; ignored (an observer changes no outcome)",
                                 type(hook.__self__).__qualname__, name)


def _overrides(middleware: Middleware, name: str) -> bool:
    return getattr(type(middleware), name) is not getattr(Middleware, name)


def load(paths) -> Stack:
    """Build the stack from dotted paths (``JOBS["MIDDLEWARE"]``)."""
    instances = []
    for path in paths:
        try:
            cls = import_string(path)
        except ImportError as exc:
            raise ConfigurationError(f"JOBS['MIDDLEWARE']: can't import {path!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Middleware)):
            raise ConfigurationError(f"JOBS['MIDDLEWARE']: {path!r} is not a subclass of "
                                     "jobs.middleware.Middleware")
        instances.append(cls())
    return Stack(instances)


_stack: Stack | None = None


def stack() -> Stack:
    """The configured middleware, built on first use (and again when JOBS changes)."""
    global _stack
    if _stack is None:
        from jobs.conf import DEFAULT_MIDDLEWARE

        paths = settings.MIDDLEWARE
        _stack = load(DEFAULT_MIDDLEWARE if paths is None else paths)
    return _stack


@on_reset
def _forget() -> None:
    global _stack
    _stack = None
