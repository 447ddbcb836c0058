"""Django tasks (Django's Tasks API) the tests run on ``jobs.backends.JobsBackend``; the
backends ``retrying`` and ``limited`` are in project/settings.py."""

import asyncio
import os
import time

from jobs.compat.tasks import task


@task
def add(x, y):
    return x + y


@task
async def async_add(x, y):
    await asyncio.sleep(0.01)
    return x + y


@task(takes_context=True)
def who_runs_me(context, x):
    return {"id": context.task_result.id, "attempt": context.attempt, "x": x,
            "worker_ids": context.task_result.worker_ids}


@task
def fail(message):
    raise ValueError(message)


@task(queue_name="other")
def on_other_queue(x):
    return x * 2


@task
def started_at(tag):
    """Returns when it ran, so that tests can tell the order tasks ran in."""
    return {"tag": tag, "at": time.monotonic(), "pid": os.getpid()}


@task(takes_context=True, backend="retrying")
def fails_until(context, succeed_on):
    """Raises ValueError (which its backend retries) until attempt ``succeed_on``."""
    if context.attempt < succeed_on:
        raise ValueError(f"attempt {context.attempt} failed")
    return context.attempt


@task(backend="limited")
def spin_forever():
    """Never returns: only the backend's hard time limit stops it."""
    while True:
        pass


@task
def pause(seconds):
    time.sleep(seconds)
    return seconds
