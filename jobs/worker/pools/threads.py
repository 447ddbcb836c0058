"""The ``threads`` pool: jobs in threads of the worker process, for I/O-bound jobs."""

from __future__ import annotations

import queue
import threading

from jobs import connections
from jobs.execution import Delivery
from jobs.worker.pools.base import Pool


class ThreadPool(Pool):
    """Jobs in threads of the worker process: good for I/O-bound jobs. A thread can't be
    interrupted or killed from outside, so time limits are not enforced here."""

    name = "threads"

    def start(self) -> None:
        self._inbox: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._busy = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, name=f"jobs-thread-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while (delivery := self._inbox.get()) is not None:
            with self._lock:
                self._busy += 1
            try:
                self.completions.put((delivery.tag, self._run(delivery)))
            finally:
                with self._lock:
                    self._busy -= 1
        connections.close_all()

    def submit(self, delivery: Delivery) -> None:
        self._inbox.put(delivery)

    def take_backlog(self) -> list[Delivery]:
        items = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return items
            if item is not None:
                items.append(item)

    def running(self) -> int:
        return self._busy

    def stop(self, timeout: float) -> bool:
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)
