"""Running an ``async def`` job's coroutine from the worker's synchronous path.

Each thread that runs jobs (a prefork child, a thread of the ``threads`` pool, the worker
itself) keeps one event loop for all the async jobs it runs, made on first use. The job's
code runs in that loop, so Django's async rules hold there: the ORM is used through its
async methods (``await Model.objects.aget(...)``) or ``sync_to_async``.
"""

from __future__ import annotations

import asyncio
import threading

_local = threading.local()


def run(coroutine):
    """Run ``coroutine`` to its end in this thread's event loop; return its value."""
    runner = getattr(_local, "runner", None)
    if runner is None:
        runner = _local.runner = asyncio.Runner()
    return runner.run(coroutine)
