"""The ``asyncio`` pool: many ``async def`` jobs at once on one event loop, for I/O-bound work.

``-P asyncio -c 500`` runs up to 500 jobs at once in the worker process. Each slot is a
thread that takes a job through the middleware (recording its states, retries, limits), as
the ``threads`` pool does; when it comes to the job's coroutine, the slot hands it to the
pool's one event loop and waits, letting go of its database connection meanwhile. So the
loop runs every coroutine, and no more than :data:`DATABASE_SLOTS` slots use the database at
once however large ``-c`` is: 500 slots don't open 500 database connections. A plain job on
this pool holds its database slot while it runs.
"""

from __future__ import annotations

import asyncio
import threading

from jobs import connections, coroutines
from jobs.outcome import Outcome
from jobs.worker.pools.threads import ThreadPool

#: Slots using the database at once (each with its own connection while it does).
DATABASE_SLOTS = 8


class AsyncioPool(ThreadPool):
    name = "asyncio"

    def start(self) -> None:
        self._event_loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._event_loop.run_forever,
                                             name="jobs-asyncio-loop", daemon=True)
        self._loop_thread.start()
        self._database = threading.BoundedSemaphore(min(DATABASE_SLOTS, self.concurrency))
        super().start()

    def _loop(self) -> None:
        coroutines.use(self._await_on_loop)
        super()._loop()

    def _run(self, delivery) -> Outcome:
        with self._database:
            return super()._run(delivery)

    def _await_on_loop(self, coroutine):
        """Run ``coroutine`` on the pool's loop; this slot waits without its connection."""
        connections.close_all()
        self._database.release()
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, self._event_loop).result()
        finally:
            self._database.acquire()

    def stop(self, timeout: float) -> bool:
        finished = super().stop(timeout)
        self._event_loop.call_soon_threadsafe(self._event_loop.stop)
        self._loop_thread.join(timeout)
        return finished
