"""The ``asyncio`` pool: many ``async def`` jobs at once on one event loop, for I/O-bound work.

``-P asyncio -c 500`` runs up to 500 jobs at once in the worker process. Each slot is a
thread that takes a job through the middleware (recording its states, retries, limits), as
the ``threads`` pool does; when it comes to the job's coroutine, the slot hands it to the
pool's one event loop and waits. The database connections are not the slots' own: the pool
keeps :data:`DATABASE_SLOTS` sets of them and lends one to a slot while it uses the
database, taking it back while the slot waits on the loop. So 500 slots don't open 500
connections (PostgreSQL allows 100 by default), and none is opened per job. A plain job on
this pool keeps its connections while it runs.
"""

from __future__ import annotations

import asyncio
import queue
import threading

from jobs import coroutines
from jobs.compat.django import lend, shareable_connections, take_back
from jobs.outcome import Outcome
from jobs.worker.pools.threads import ThreadPool

#: Slots using the database at once, each with connections lent by the pool.
DATABASE_SLOTS = 8


class AsyncioPool(ThreadPool):
    name = "asyncio"

    def start(self) -> None:
        self._event_loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._event_loop.run_forever,
                                             name="jobs-asyncio-loop", daemon=True)
        self._loop_thread.start()
        self._all_connections = [shareable_connections()
                                 for _ in range(min(DATABASE_SLOTS, self.concurrency))]
        self._free_connections: queue.SimpleQueue[dict] = queue.SimpleQueue()
        for lent in self._all_connections:
            self._free_connections.put(lent)
        self._held = threading.local()
        super().start()

    def _loop(self) -> None:
        coroutines.use(self._await_on_loop)
        super()._loop()

    def _run(self, delivery) -> Outcome:
        self._borrow()
        try:
            return super()._run(delivery)
        finally:
            self._give_back()

    def _await_on_loop(self, coroutine):
        """Run ``coroutine`` on the pool's loop; the slot waits without connections."""
        self._give_back()
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, self._event_loop).result()
        finally:
            self._borrow()

    def _borrow(self) -> None:
        self._held.lent = lent = self._free_connections.get()
        lend(lent)

    def _give_back(self) -> None:
        lent, self._held.lent = self._held.lent, None
        take_back(lent)
        self._free_connections.put(lent)

    def stop(self, timeout: float) -> bool:
        finished = super().stop(timeout)
        self._event_loop.call_soon_threadsafe(self._event_loop.stop)
        self._loop_thread.join(timeout)
        for lent in self._all_connections:
            for connection in lent.values():
                connection.close()
        return finished
