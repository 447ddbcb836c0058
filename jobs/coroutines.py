"""Running an ``async def`` job's coroutine from the worker's synchronous path.

A thread that runs jobs (a prefork child, a thread of the ``threads`` pool, the worker
itself) keeps one event loop for the async jobs it runs, made on first use; the ``asyncio``
pool hands every coroutine to its one shared loop instead (:func:`use`). Either way the
job's code runs in an event loop, so Django's async rules hold there: the ORM is used
through its async methods (``await Model.objects.aget(...)``) or ``sync_to_async``.

A time limit (:data:`limit`, set by :mod:`jobs.middleware.time_limits`) cancels the
coroutine when it passes — the job sees ``CancelledError`` at its ``await`` and may clean
up — and the job fails with the limit's exception.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

_local = threading.local()

#: (seconds, exception class) for the coroutine run next in this context, or None.
limit: contextvars.ContextVar[tuple[float, type[BaseException]] | None] = \
    contextvars.ContextVar("jobs_coroutine_limit", default=None)


def run(coroutine):
    """Run ``coroutine`` to its end (within the time limit set); return its value."""
    bounds = limit.get()
    if bounds is not None:
        coroutine = _within(coroutine, *bounds)
    runner = getattr(_local, "runner", None)
    if runner is None:
        runner = use(_own_loop())
    return runner(coroutine)


def use(runner):
    """Have this thread run coroutines with ``runner(coroutine) -> value``; returns it."""
    _local.runner = runner
    return runner


def _own_loop():
    """A runner on an event loop of this thread's own, kept for the next coroutine."""
    return asyncio.Runner().run


async def _within(coroutine, seconds: float, error: type[BaseException]):
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await coroutine
    except TimeoutError:
        if deadline.expired():
            raise error(f"time limit ({seconds:g}s) exceeded") from None
        raise
