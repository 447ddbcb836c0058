"""A pool's completions on their way to the worker's main thread, made durable first.

An outcome whose record is not durable yet (``Outcome.deferred``: group commit, see
:mod:`jobs.middleware.results`) must not be acknowledged until it is. Such outcomes wait in
a thread of their own, which hands every outcome that has come in meanwhile to the
middleware's ``settle`` hooks at once (one durable commit for the batch), then passes them
on to the main thread. The others pass straight through. The thread, not the main thread,
waits for the disk: the main thread may be waiting on the broker for a tenth of a second,
and a caller waiting in ``get()`` is woken by the commit that makes its outcome durable.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading

from jobs import connections
from jobs.outcome import Kind

logger = logging.getLogger("jobs.worker")


class Completions:
    """Quacks like the pool's ``completions`` queue to both sides: the pool ``put``\\ s, the
    main thread ``get``\\ s."""

    def __init__(self, settle) -> None:
        self._settle = settle  # list[Outcome] -> list[Outcome]
        self._ready: queue.SimpleQueue = queue.SimpleQueue()
        self._unsettled: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0  # outcomes put and not passed on yet
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def put(self, item) -> None:
        if not item[1].deferred:
            self._ready.put(item)
            return
        with self._lock:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jobs-settle",
                                                daemon=True)
                self._thread.start()
        self._unsettled.put(item)

    def get(self, timeout: float | None = None):
        return self._ready.get(timeout=timeout)

    def get_nowait(self):
        return self._ready.get_nowait()

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every outcome put has been passed on; False if ``timeout`` passed."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def stop(self) -> None:
        """End the thread, once every outcome put has been passed on."""
        if self._thread is not None:
            self._unsettled.put(None)
            self._thread.join()

    def _run(self) -> None:
        try:
            while (first := self._unsettled.get()) is not None:
                batch = [first]
                while True:
                    try:
                        item = self._unsettled.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._unsettled.put(None)  # after this batch
                        break
                    batch.append(item)
                for item in zip((tag for tag, _ in batch), self._settled(batch), strict=True):
                    self._ready.put(item)
                with self._idle:
                    self._pending -= len(batch)
                    self._idle.notify_all()
        finally:
            connections.close_all()

    def _settled(self, batch: list) -> list:
        outcomes = [outcome for _, outcome in batch]
        try:
            return self._settle(outcomes)
        except Exception as exc:  # a bug: not acknowledged, so the jobs run again
            logger.exception("Could not make %d outcome(s) durable; their jobs run again",
                             len(outcomes))
            reason = f"{type(exc).__name__}: {exc}"
            return [dataclasses.replace(outcome, kind=Kind.REQUEUE, reason=reason)
                    for outcome in outcomes]
