"""Measuring a worker from outside: its whole process tree's CPU time and memory.

A :class:`WorkerTree` is a worker started in its own session, sampled every 0.2 s for the
summed RSS of all its processes, and killed with its whole process group when done (or when
the bench exits, however it exits).
"""

from __future__ import annotations

import atexit
import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.marks import NotReached

SAMPLE_EVERY = 0.2
_live: set[WorkerTree] = set()


class WorkerTree:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.argv = argv
        self.log = log
        self._out = open(log, "wb")
        self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._out,
                                        stderr=subprocess.STDOUT, preexec_fn=_detach)
        self.root = psutil.Process(self.process.pid)
        self.peak_rss = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        _live.add(self)

    def alive(self) -> bool:
        return self.process.poll() is None

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        """Bytes resident in all processes of the tree, summed (shared pages count once per
        process, as ``ps`` shows them)."""
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def pss(self) -> int:
        """Proportional set size of the tree: shared pages split between the processes that
        share them, so forked children don't count their parent's pages again."""
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
                pass
        return total

    def cpu(self) -> float:
        """User + system seconds of the tree so far, children already reaped included."""
        total = 0.0
        for proc in self.processes():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
            if proc is self.root:
                total += times.children_user + times.children_system
        return total

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.peak_rss = max(self.peak_rss, self.rss())
            self.peak_pss = max(self.peak_pss, self.pss())

    def steady(self, seconds: float = 2.0) -> tuple[int, int]:
        """The largest summed RSS and PSS over a few samples, once the worker has settled."""
        deadline = time.monotonic() + seconds
        rss, pss = self.rss(), self.pss()
        while time.monotonic() < deadline:
            time.sleep(SAMPLE_EVERY)
            rss, pss = max(rss, self.rss()), max(pss, self.pss())
        return rss, pss

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the worker's whole process group; the bench purges its queues afterwards."""
        self._stop.set()
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._out.close()
        _live.discard(self)

    def __enter__(self) -> WorkerTree:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _detach() -> None:
    """In the worker, before exec: its own process group (so the bench can kill the whole
    tree), and death with the bench should the bench be killed outright (Linux)."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@atexit.register
def _kill_all() -> None:
    for tree in list(_live):
        tree.stop()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2, alive=None):
    """Poll ``predicate`` until it returns something true; NotReached after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and not alive():
            raise RuntimeError(f"the worker exited while waiting for {what}")
        if time.monotonic() >= deadline:
            raise NotReached(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements, with their range."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        values = [v for v in values if v is not None]
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 500 values is the 495th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]
