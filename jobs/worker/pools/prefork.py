"""The ``prefork`` pool: jobs in forked child processes, one job per child at a time.

While jobs are short a child may be handed the next few deliveries before it finishes the
one it runs (:meth:`PreforkPool.set_reserve`): they wait in its pipe, and it reads the next
as soon as it answers, without waiting for the parent to send it. Each hand-over otherwise
costs a child, and the parent, a sleep and a wake-up per job. What a child is handed in one
turn goes in one write, and what it has answered is read in one (:mod:`.pipe`).

The children's outcomes are collected by the worker's main thread where it can wait on the
broker's sockets itself (Redis, RabbitMQ): one wait, on the children's pipes and the broker
at once (:meth:`PreforkPool.collect`). Elsewhere a collector thread of the pool's waits on
the pipes while the main thread waits in the broker's ``drain_events``; handing each outcome
from one thread to the other cost the parent half again its work per job, and three times
its context switches.
"""

from __future__ import annotations

import gc
import logging
import select
import threading
import time
from collections import deque
from multiprocessing import get_context

from jobs import connections
from jobs.execution import Delivery
from jobs.outcome import Kind, Outcome
from jobs.worker.pools.base import Pool
from jobs.worker.pools.child import (
    RECYCLE_EXIT,
    STOP,
    child_main,
    libc_prctl,
    pack_delivery,
    unpack_outcome,
)
from jobs.worker.pools.pipe import Pipe

logger = logging.getLogger("jobs.worker")

#: Deliveries a child may hold in its pipe beyond the one it runs, at most.
RESERVE_MOST = 7
#: The largest delivery (pickled) handed to a child that is busy: the pipe holds what a
#: child hasn't read yet, and a write to a full pipe would wait for the child's job to end.
RESERVE_BYTES = 8192


class _Child:
    def __init__(self, process, pipe: Pipe) -> None:
        self.process = process
        self.pipe = pipe
        self.sent: deque[Delivery] = deque()  # handed to it and not answered, in order
        self.deadline: float | None = None  # monotonic time its job's time_limit passes
        self.killed: Kind | None = None  # why we killed it: TIME_LIMIT or REVOKED
        self.unread = False  # it was gone before the job it was to run could reach it
        self.victim: Delivery | None = None  # the delivery it ran when we killed it
        self.done = 0

    @property
    def delivery(self) -> Delivery | None:
        """The one it runs: the first it was handed and hasn't answered."""
        return self.sent[0] if self.sent else None

    def room(self, reserve: int, most: int | None) -> int:
        """How many more deliveries it may be handed now."""
        room = 1 + reserve - len(self.sent)
        if most:  # max_tasks_per_child: none beyond its last
            room = min(room, most - self.done - len(self.sent))
        return room


class PreforkPool(Pool):
    """Jobs in forked child processes, one job per child at a time.

    :meth:`collect` waits on the children's pipes and their process sentinels, called by the
    worker's main thread (:meth:`collect_here`) or else in a loop by a collector thread: it
    reports outcomes, hands the next waiting delivery to a child that finished, and notices a
    child that died mid-job (reported as LOST, so the message is redelivered or failed per
    ``reject_on_worker_lost``). The main thread forks replacements in :meth:`maintain`.
    """

    name = "prefork"

    #: Deliveries each child may hold beyond the one it runs (:meth:`set_reserve`).
    reserve = 0
    #: The caller's thread collects the outcomes (:meth:`collect`): no collector thread.
    collected_here = False

    def start(self) -> None:
        self._ctx = get_context("fork")
        self._lock = threading.Lock()
        # Held while the collector thread works (all but its wait in poll()), and by a fork:
        # a child forked while that thread held a lock (a buffered stream's, writing a log
        # line) would find it held forever.
        self._working = threading.Lock()
        self._children: list[_Child] = []
        self._backlog: deque[Delivery] = deque()
        self._unflushed: set[_Child] = set()  # handed deliveries not written yet (flush())
        self._stopping = False
        self._wanted = 0
        self._retired: list = []  # stopped by resize(), not reaped yet
        self.max_tasks_per_child = self.options.get("max_tasks_per_child")
        self.max_memory_per_child = self.options.get("max_memory_per_child")
        connections.close_all()
        libc_prctl()  # loaded once here rather than in each child
        for _ in range(self.concurrency):
            self._children.append(self._fork())
        # collect(): the children watched, fd -> (child, whether it is its pipe), and a
        # poller for each set of the broker's sockets watched with them.
        self._polled: list[_Child] = []
        self._owners: dict[int, tuple[_Child, bool]] = {}
        self._pollers: dict[tuple, select.poll] = {}
        if not self.collected_here:
            self._collector = threading.Thread(target=self._collect, name="jobs-collector",
                                               daemon=True)
            self._collector.start()

    def collect_here(self) -> bool:
        self.collected_here = True
        return True

    def _fork(self) -> _Child:
        parent_end, child_end = Pipe.pair()
        process = self._ctx.Process(
            target=child_main, daemon=True,
            args=(child_end, self.hostname, self.accept, self.max_memory_per_child),
            name=f"jobs-child-{len(self._children) + 1}",
        )
        # A child shares the parent's memory until one of them writes to a page, and Python's
        # garbage collector writes to every object it examines: frozen once collected, the
        # objects alive now are left out of every later collection, in the child and here, so
        # their pages stay shared (a full collection in a child copied ~30 MB of them).
        gc.collect()
        gc.freeze()
        with self._working:
            process.start()
        child_end.close()
        return _Child(process, parent_end)

    # Main thread -------------------------------------------------------------------------

    def submit(self, delivery: Delivery) -> None:
        with self._lock:
            # Not asked whether it is alive (two system calls, on the way of every job): one
            # that died since the last collect() is buried at the next, and what it could
            # not read goes to another (_Child.unread).
            child = next((c for c in self._children if c.delivery is None), None)
            if child is not None:
                self._send(child, delivery)
            elif not self.reserve or self._backlog or not self._reserve_for(delivery):
                self._backlog.append(delivery)

    def set_reserve(self, count: int) -> None:
        """Let each child hold up to ``count`` deliveries (at most :data:`RESERVE_MOST`)
        beyond the one it runs, in its pipe. The worker sets it from the prefetch window:
        none at the base window, some while the window is widened for short jobs. What a
        child holds can't be taken back: a job that turns long keeps those few waiting."""
        self.reserve = max(0, min(RESERVE_MOST, count))

    def _reserve_for(self, delivery: Delivery) -> bool:
        """Hand ``delivery`` to the busy child holding the fewest, if one has room."""
        if not self._children:
            return False
        child = min(self._children, key=lambda c: len(c.sent))
        # A child dead meanwhile is not asked (a system call): what it was handed goes to
        # another child when the collector buries it.
        if child.room(self.reserve, self.max_tasks_per_child) <= 0:
            return False
        data = _small(delivery)
        if data is None:
            return False
        self._send(child, delivery, data)
        return True

    def _top_up(self, child: _Child) -> None:
        """Hand ``child`` the deliveries waiting here, in order, as far as it has room: one
        if it is idle, up to its reserve if not (each no larger than RESERVE_BYTES)."""
        while self._backlog and child.room(self.reserve, self.max_tasks_per_child) > 0:
            if child.delivery is None:
                self._send(child, self._backlog.popleft())
                continue
            data = _small(self._backlog[0])
            if data is None:
                return
            self._send(child, self._backlog.popleft(), data)

    def maintain(self) -> None:
        if self._retired:
            self._reap()
        if not self._wanted:  # read without the lock: a child wanted now is forked next time
            return
        with self._lock:
            wanted, self._wanted = self._wanted, 0
        if wanted and not self._stopping:
            connections.close_all()
            fresh = [self._fork() for _ in range(wanted)]
            with self._lock:
                self._children.extend(fresh)
                for child in fresh:
                    self._top_up(child)
            self.flush()

    def running(self) -> int:
        with self._lock:
            return sum(1 for c in self._children if c.delivery is not None)

    def resize(self, size: int) -> None:
        """Fork children up to ``size`` (each takes a waiting delivery), or stop idle ones."""
        if self._stopping:
            return
        if size > self.concurrency:
            self._wanted += size - self.concurrency  # maintain() forks them, now
            self.concurrency = size
            self.maintain()
            return
        with self._lock:
            idle = [c for c in self._children if c.delivery is None][:self.concurrency - size]
            for child in idle:
                self._children.remove(child)
                try:
                    child.pipe.send(STOP)
                except OSError:
                    pass
            self.concurrency -= len(idle)
        self._retired.extend(child.process for child in idle)

    def _reap(self) -> None:
        """Collect the children stopped by :meth:`resize` once they have exited."""
        alive = []
        for process in self._retired:
            process.join(0)
            if process.exitcode is None:
                alive.append(process)
        self._retired = alive

    def running_deliveries(self) -> list[Delivery]:
        """The deliveries the children run, and those waiting in their pipes: those will
        run whatever happens to the worker's connection (they can't be taken back)."""
        with self._lock:
            return [delivery for c in self._children for delivery in c.sent]

    def waiting(self) -> int:
        with self._lock:
            return len(self._backlog) + sum(max(0, len(c.sent) - 1) for c in self._children)

    def terminate_job(self, job_id: str) -> bool:
        with self._lock:
            for child in self._children:
                if child.delivery and child.delivery.headers.get("id") == job_id \
                        and not child.killed:
                    child.killed, child.victim = Kind.REVOKED, child.delivery
                    logger.warning("Terminating job %s (revoked): killing child process %s",
                                   job_id, child.process.pid)
                    child.process.kill()
                    return True
        return False

    def take_backlog(self) -> list[Delivery]:
        """Deliveries not started yet (to hand back to the broker at shutdown)."""
        with self._lock:
            items, self._backlog = list(self._backlog), deque()
        return items

    def stop(self, timeout: float) -> bool:
        self._stopping = True
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            if self.collected_here:
                self.collect(0.05)
            else:
                time.sleep(0.05)
        finished = not self.running()
        with self._lock:
            for child in self._children:
                if child.delivery is None:
                    try:
                        child.pipe.send(STOP)
                    except OSError:
                        pass
        for child in list(self._children):
            child.process.join(max(0.0, deadline - time.monotonic()) or 0.1)
        self.terminate()
        return finished

    def terminate(self) -> None:
        self._stopping = True
        for child in list(self._children):
            if child.process.is_alive():
                child.process.kill()
        for child in list(self._children):
            child.process.join(1)

    # Collecting --------------------------------------------------------------------------

    def collect(self, timeout: float, sockets=()) -> bool:
        """Take the children's outcomes (onto ``completions``), bury the dead and kill those
        past their time limit, waiting up to ``timeout`` seconds for one of them to answer or
        die, or for one of ``sockets`` (the broker's) to become readable: True if one is."""
        with self._lock:
            children = list(self._children)
        if children != self._polled:
            self._watch_here(children)
        sockets = tuple(sockets)
        poller = self._pollers.get(sockets) or self._poller_with(sockets)
        if timeout:
            timeout = min(timeout, self._wait_time(children))
        try:
            events = poller.poll(timeout * 1000)
        except OSError:  # a socket closed under us: the broker's drain says why
            return True
        with self._working:
            self._enforce_time_limits(children)
            readable = False
            owners = self._owners
            for fd, _ in events:
                owner = owners.get(fd)
                if owner is None:
                    readable = True
                elif owner[1]:
                    self._receive(owner[0])
                elif owner[0] in self._children:
                    self._bury(owner[0])
            self.flush()
        return readable

    def _watch_here(self, children: list[_Child]) -> None:
        """Have :meth:`collect` watch exactly these children, from now on."""
        self._owners = {fd: (child, is_pipe) for child in children for fd, is_pipe in (
            (child.pipe.fileno(), True), (child.process.sentinel, False))}
        self._pollers, self._polled = {}, children

    def _poller_with(self, sockets: tuple) -> select.poll:
        """A poller of the children's pipes and sentinels and of ``sockets`` (kept for the
        next calls: the worker passes the same few). A poller keeps nothing in the kernel: a
        socket closed and its number taken by a new one needs nothing but its number."""
        if len(self._pollers) >= 4:
            self._pollers.clear()
        poller = self._pollers[sockets] = select.poll()
        for fd in (*self._owners, *sockets):
            poller.register(fd, select.POLLIN)
        return poller

    # Collector thread (where the main thread waits in the broker's drain_events) ---------

    def _collect(self) -> None:
        """The collector thread: :meth:`collect`, until the pool stops and its children
        are gone."""
        while True:
            with self._lock:
                children = list(self._children)
            if not children and self._stopping:
                return
            self.collect(0.5)
            if self._stopping and not any(c.process.is_alive() for c in self._children):
                return

    # Either thread ----------------------------------------------------------------------

    def _send(self, child: _Child, delivery: Delivery, data: bytes | None = None) -> None:
        """Hand ``delivery`` to ``child``: at once if it is idle; else it goes with the
        others handed to it in this turn, on the next :meth:`flush` (a busy child reads
        them only when its job ends)."""
        child.sent.append(delivery)
        child.pipe.put(data or pack_delivery(delivery))
        if len(child.sent) == 1:  # it starts now: its time limit runs from now
            self._started(child)
            if not self._write(child):
                child.unread = True
        else:
            self._unflushed.add(child)

    def flush(self) -> None:
        if self._unflushed:
            with self._lock:
                for child in self._unflushed:
                    self._write(child)
                self._unflushed.clear()

    @staticmethod
    def _write(child: _Child) -> bool:
        """Write what ``child`` was handed; False if it is gone (its end of the pipe closed):
        the collector sees its sentinel, and reports or hands on what it had."""
        try:
            child.pipe.flush()
            return True
        except OSError:
            return False

    def _wait_time(self, children: list[_Child]) -> float:
        deadlines = [c.deadline for c in children if c.deadline is not None]
        if not deadlines:
            return 0.5
        return max(0.0, min(0.5, min(deadlines) - time.monotonic()))

    @staticmethod
    def _started(child: _Child) -> None:
        """The first of ``child.sent`` runs from now (sent to it, or the one before it
        answered)."""
        delivery = child.delivery
        child.deadline = (time.monotonic() + delivery.time_limit
                          if delivery is not None and delivery.time_limit else None)

    def _enforce_time_limits(self, children: list[_Child]) -> None:
        now = time.monotonic()
        for child in children:
            if child.deadline is not None and now >= child.deadline and not child.killed:
                child.killed, child.victim = Kind.TIME_LIMIT, child.delivery
                logger.error("Job %s passed its hard time limit; killing child process %s",
                             child.delivery.headers.get("id") if child.delivery else "?",
                             child.process.pid)
                child.process.kill()

    def _receive(self, child: _Child) -> bool:
        """Take the outcomes ``child`` has sent; False if there were none (or it died)."""
        try:
            frames = child.pipe.frames(block=False)
        except (EOFError, OSError):
            return False  # it died; its sentinel tells the rest
        for data in frames:
            self._answered(child, *unpack_outcome(data))
        return bool(frames)

    def _answered(self, child: _Child, tag, outcome: Outcome) -> None:
        with self._lock:
            if child.sent:
                child.sent.popleft()
            self._started(child)
            child.done += 1
            if child.killed:  # it answered just as we killed it: the answer stands
                self.completions.put((tag, outcome))
                return
            recycle = self.max_tasks_per_child and child.done >= self.max_tasks_per_child
            if recycle:  # it was handed none beyond its last (_Child.room)
                try:
                    child.pipe.send(STOP)
                except OSError:
                    pass
                self._children.remove(child)
                self._wanted += 1
            elif not self._stopping:
                self._top_up(child)
        self.completions.put((tag, outcome))

    def _bury(self, child: _Child) -> None:
        child.process.join(0.1)
        while self._receive(child):  # outcomes sent just before it exited
            pass
        with self._lock:
            if child not in self._children:
                return
            self._children.remove(child)
            sent, lost = list(child.sent), child.delivery
            child.sent.clear()
            if child.process.exitcode == RECYCLE_EXIT or child.unread or (
                    child.killed and lost is not None and lost is not child.victim):
                # It left for its memory limit right after answering, before reading what
                # was sent to it meanwhile; or it was gone before the job it was to run
                # was written to it; or we killed it for a job that had answered: those
                # never started (or were cut short), other children run them.
                lost = None
            # What waited in its pipe behind the job it died in never started.
            self._backlog.extendleft(reversed(sent[1:] if lost is not None else sent))
            if not self._stopping:
                self._wanted += 1
        code = child.process.exitcode
        if lost is not None and child.killed:
            reason = ("hard time limit exceeded" if child.killed is Kind.TIME_LIMIT
                      else "terminated")
            self.completions.put((lost.tag, Outcome(child.killed, lost.headers.get("id") or "",
                                                    lost.headers.get("task") or "",
                                                    reason=reason)))
        elif lost is not None:
            logger.error("Child process %s died (exit code %s) while running job %s",
                         child.process.pid, code, lost.headers.get("id"))
            self.completions.put((lost.tag, Outcome(Kind.LOST, lost.headers.get("id") or "",
                                                    lost.headers.get("task") or "",
                                                    reason=f"exit code {code}")))
        elif code == RECYCLE_EXIT:
            logger.info("Child process %s recycled (memory limit)", child.process.pid)
        elif not self._stopping:
            logger.warning("Child process %s exited (code %s); replacing it",
                           child.process.pid, code)


def _small(delivery: Delivery) -> bytes | None:
    """``delivery`` pickled, if that takes no more than RESERVE_BYTES (a larger body is
    not pickled to find out: a large delivery waiting here is looked at after every job)."""
    if len(delivery.body or b"") > RESERVE_BYTES:
        return None
    data = pack_delivery(delivery)
    return data if len(data) <= RESERVE_BYTES else None
