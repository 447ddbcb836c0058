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
        self._current: dict[int, Delivery] = {}  # thread id -> the delivery it runs
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started = 0
        self._grow(self.concurrency)

    def _grow(self, n: int) -> None:
        for _ in range(n):
            self._started += 1
            thread = threading.Thread(target=self._loop, name=f"jobs-thread-{self._started}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def resize(self, size: int) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        if size > self.concurrency:
            self._grow(size - self.concurrency)
        elif size < self.concurrency:
            idle = max(0, self.concurrency - self.running() - self._inbox.qsize())
            size = max(size, self.concurrency - idle)
            for _ in range(self.concurrency - size):
                self._inbox.put(None)  # the next idle thread to take it ends
        self.concurrency = size

    def waiting(self) -> int:
        return max(0, self._inbox.qsize() - (self.concurrency - self._busy))

    def _loop(self) -> None:
        me = threading.get_ident()
        while (delivery := self._inbox.get()) is not None:
            with self._lock:
                self._busy += 1
            self._current[me] = delivery
            try:
                self.completions.put((delivery.tag, self._run(delivery)))
            finally:
                del self._current[me]
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

    def running_deliveries(self) -> list[Delivery]:
        return list(self._current.values())

    def stop(self, timeout: float) -> bool:
        for _ in range(self.concurrency):
            self._inbox.put(None)
        for thread in self._threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)
