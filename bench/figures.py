"""The five figures, measured the same way for every peer.

1. enqueue   N no-op jobs from this process, one call each, and through the bulk path.
2. drain     N queued no-op jobs, one worker, concurrency 2: jobs/s, worker CPU s per 1,000
             jobs, peak RSS of the worker's process tree.
3. roundtrip one job at a time, enqueue -> result seen by the caller; p50 and p99.
4. scale     drain rate with a shallow vs a deep queue; worker memory with many delayed jobs.
5. chord     a chord of 1,000 no-op jobs: seconds from sending it to its body's result.

Drains are timed inside the worker: a *gate* mark queued before the N jobs and an *end* mark
queued after them each record when they ran (:mod:`bench.marks`). Queues are FIFO and the
marks run in the same pool as the jobs, so the interval covers the N jobs and neither the
worker's start-up nor the bench's polling. Runs with stored results also wait until N
successful results are counted in the database, polling every 0.2 s.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field

from bench import marks
from bench.measure import WorkerTree, percentile, wait_until

GATE_TIMEOUT = 90.0  # a worker's start-up, at most
ATTEMPTS = 4  # a repetition disturbed by a service restart is measured again


class Disturbed(RuntimeError):
    """A service restarted during a measurement (someone else's test, on a shared machine)."""


@dataclass
class Sizes:
    n: int = 20_000  # enqueue and drain
    repeat: int = 3
    roundtrips: int = 500
    shallow: int = 10_000  # scale: queue depths compared
    deep: int = 200_000
    window: int = 10_000  # scale: jobs timed per window in the deep queue
    delayed: int = 100_000  # scale: delayed jobs scheduled for the memory figure
    delayed_repeat: int = 1
    settle: float = 3.0  # seconds of memory samples once a worker has settled
    chord: int = 1_000  # header jobs of the chord timed to its body

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(n=200, repeat=1, roundtrips=5, shallow=100, deep=600, window=100,
                   delayed=300, delayed_repeat=1, settle=0.5, chord=20)


@dataclass
class Results:
    """Measurements per peer label and metric, each a list of repetitions."""

    values: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    notes: list[str] = field(default_factory=list)
    _pending: list[tuple[str, str, float]] = field(default_factory=list)

    def add(self, label: str, metric: str, value: float) -> None:
        """Record a value of the attempt under way (kept by :meth:`commit`)."""
        self._pending.append((label, metric, value))

    def commit(self) -> None:
        for label, metric, value in self._pending:
            self.values[label][metric].append(value)
        self._pending.clear()

    def discard(self) -> None:
        self._pending.clear()


class Bench:
    def __init__(self, env, sizes: Sizes, figures: set[str], log=print) -> None:
        self.env = env
        self.sizes = sizes
        self.figures = figures
        self.results = Results()
        self.log = log
        self._workers = 0
        self._marks = itertools.count(1)

    # Worker processes ------------------------------------------------------------------------

    def start_worker(self, peer) -> WorkerTree:
        self._workers += 1
        path = self.env.logs / f"{self._workers:03d}-{peer.library}-{peer.results.split()[0]}.log"
        return WorkerTree(peer.worker_argv(), peer.env(), cwd=_root(), log=path)

    def _wait_mark(self, tree: WorkerTree, key: str, timeout: float) -> float:
        try:
            return marks.wait(key, timeout, alive=tree.alive, disturbed=self._check_services)
        except (marks.NotReached, RuntimeError) as exc:
            if isinstance(exc, Disturbed):
                raise
            raise RuntimeError(
                f"{exc}; worker output ({tree.log}):\n{tree.output()[-3000:]}") from exc

    # Measuring again what a restart disturbed ------------------------------------------------

    def _attempt(self, what: str, measure, *args) -> None:
        """Run ``measure``; if a service restarted or went away meanwhile (someone else's
        test on a shared machine), wait for it, purge, and measure again."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._services = self.env.services_fingerprint()
                measure(*args)
                self._check_services()
            except Exception as exc:
                self.results.discard()
                if attempt == ATTEMPTS or not (isinstance(exc, Disturbed) or _lost_service(exc)
                                               or self._restarted()):
                    raise
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
                self.log(f"    {what}: {reason}; measuring again once the services answer")
                self.results.notes.append(f"{what} was measured again ({reason}).")
                self.env.wait_for_services(timeout=300)
                continue
            self.results.commit()
            return

    def _restarted(self) -> bool:
        try:
            return self.env.services_fingerprint() != self._services
        except Exception:
            return True

    def _check_services(self) -> None:
        if self._restarted():
            raise Disturbed("a service (Redis, PostgreSQL or RabbitMQ) restarted during the "
                            "measurement")

    # Figures -----------------------------------------------------------------------------------

    def run_repetition(self, peer, rep: int) -> None:
        """The ``rep``-th repetition of ``peer``'s figures (all but scale), if it has any."""
        wanted = self.figures & peer.figures
        if wanted - {"scale"}:
            self.log(f"  {peer.label}: repetition {rep + 1}/{self.sizes.repeat}")
            self._attempt(f"{peer.label}, repetition {rep + 1}", self._repetition, peer, wanted)

    def run_scale(self, peer) -> None:
        if "scale" in self.figures & peer.figures:
            self.scale(peer)

    def _repetition(self, peer, wanted: set[str]) -> None:
        if "enqueue" in wanted:
            self.enqueue_bulk(peer)
        # Measured with the worker that drained, or one started for them.
        then = [measure for figure, measure in (("roundtrip", self.roundtrip),
                                                ("chord", self.chord)) if figure in wanted]
        if wanted & {"enqueue", "drain"}:
            self.enqueue_and_drain(peer, drain="drain" in wanted, then=then)
        elif then:
            with self.start_worker(peer) as tree:
                for measure in then:
                    measure(peer, tree)
            peer.purge()

    def n_for(self, peer) -> int:
        return min(self.sizes.n, peer.n or self.sizes.n)

    def enqueue_bulk(self, peer) -> None:
        n = self.n_for(peer)
        peer.purge()
        started = time.perf_counter()
        peer.enqueue_bulk(n)
        self.results.add(peer.label, "bulk", n / (time.perf_counter() - started))
        peer.purge()
        if peer.bulk_each_method:
            started = time.perf_counter()
            peer.enqueue_bulk_each(n)
            self.results.add(peer.label, "bulk_each", n / (time.perf_counter() - started))
            peer.purge()

    def enqueue_and_drain(self, peer, drain: bool, then=()) -> None:
        n = self.n_for(peer)
        peer.purge()
        serial = next(self._marks)
        gate, end = marks.key(f"gate-{serial}"), marks.key(f"end-{serial}")
        peer.send_mark(gate)
        started = time.perf_counter()
        peer.enqueue(n)
        self.results.add(peer.label, "enqueue", n / (time.perf_counter() - started))
        peer.send_mark(end)
        if not drain:
            peer.purge()
            return
        with self.start_worker(peer) as tree:
            self._drain(peer, tree, n, gate, end)
            for measure in then:
                measure(peer, tree)
        peer.purge()

    def _drain(self, peer, tree: WorkerTree, n: int, gate: str, end: str) -> None:
        opened = self._wait_mark(tree, gate, GATE_TIMEOUT)
        cpu_before = tree.cpu()
        closed = self._wait_mark(tree, end, max(120.0, n / 20))
        cpu = tree.cpu() - cpu_before
        if peer.stored_results() is not None:
            wait_until(lambda: peer.stored_results() >= n, 60, f"{n} stored results",
                       alive=tree.alive)
        self.results.add(peer.label, "drain", n / (closed - opened))
        self.results.add(peer.label, "cpu", cpu / n * 1000)
        self.results.add(peer.label, "rss", tree.peak_rss / 2**20)
        self.results.add(peer.label, "pss", tree.peak_pss / 2**20)

    def roundtrip(self, peer, tree: WorkerTree) -> None:
        count = min(peer.roundtrips or self.sizes.roundtrips, self.sizes.roundtrips)
        for attempt in range(3):  # the first one may wait for the worker to start
            try:
                peer.round_trip()
                break
            except Exception:
                if not tree.alive() or attempt == 2:
                    raise
        for _ in range(5):
            peer.round_trip()
        times = []
        for _ in range(count):
            started = time.perf_counter()
            peer.round_trip()
            times.append((time.perf_counter() - started) * 1000)
        self.results.add(peer.label, "rt_p50", percentile(times, 50))
        self.results.add(peer.label, "rt_p99", percentile(times, 99))
        self.results.add(peer.label, "rt_count", count)

    def chord(self, peer, tree: WorkerTree) -> None:
        """A chord of ``sizes.chord`` no-op jobs: seconds from sending it to its body's
        result, seen by the caller (a small chord first, while the worker starts)."""
        for attempt in range(3):
            try:
                peer.chord(2)
                break
            except Exception:
                if not tree.alive() or attempt == 2:
                    raise
        started = time.perf_counter()
        peer.chord(self.sizes.chord)
        self.results.add(peer.label, "chord", time.perf_counter() - started)

    # Scale -------------------------------------------------------------------------------------

    def scale(self, peer) -> None:
        if peer.library == "jobs":
            self.depth(peer)
        self.delayed_memory(peer)

    def depth(self, peer) -> None:
        """Drain rate with a shallow queue, then with a deep one, ``window`` jobs at a time."""
        s = self.sizes
        for rep in range(s.repeat):
            self.log(f"  {peer.label}: scale, {s.shallow:,} queued, {rep + 1}/{s.repeat}")
            self._attempt(f"{peer.label}, {s.shallow:,} queued", self._windows, peer,
                          "depth_shallow", s.shallow, s.shallow, 1)
        self.log(f"  {peer.label}: scale, {s.deep:,} queued, {s.repeat} windows of {s.window:,}")
        self._attempt(f"{peer.label}, {s.deep:,} queued", self._windows, peer, "depth_deep",
                      s.deep, s.window, s.repeat)

    def _windows(self, peer, metric: str, depth: int, window: int, windows: int) -> None:
        """Fill the queue to ``depth`` with marks between the first ``windows`` windows; the
        rate of each window is measured while the rest of the queue is still waiting."""
        peer.purge()
        serial = next(self._marks)
        keys = [marks.key(f"depth-{serial}-{i}") for i in range(windows + 1)]
        peer.send_mark(keys[0])
        for key in keys[1:]:
            peer.enqueue_bulk(window)
            peer.send_mark(key)
        rest = depth - window * windows
        while rest > 0:
            chunk = min(rest, 10_000)
            peer.enqueue_bulk(chunk)
            rest -= chunk
        with self.start_worker(peer) as tree:
            previous = self._wait_mark(tree, keys[0], GATE_TIMEOUT)
            for key in keys[1:]:
                stamp = self._wait_mark(tree, key, max(120.0, window / 20))
                self.results.add(peer.label, metric, window / (stamp - previous))
                previous = stamp
        peer.purge()

    def delayed_memory(self, peer) -> None:
        """The worker's memory with no delayed job, then with ``delayed`` of them scheduled an
        hour ahead, once it has received them all (an end mark queued after them has run)."""
        s = self.sizes
        for _ in range(s.delayed_repeat):
            for count in (0, s.delayed):
                self.log(f"  {peer.label}: scale, memory with {count:,} delayed jobs")
                self._attempt(f"{peer.label}, {count:,} delayed jobs", self._memory, peer, count)

    def _memory(self, peer, count: int) -> None:
        peer.purge()
        if count:
            peer.enqueue_delayed(count, 3600)
        end = marks.key(f"delayed-{next(self._marks)}")
        peer.send_mark(end)
        with self.start_worker(peer) as tree:
            started = time.monotonic()
            self._wait_mark(tree, end, max(300.0, count / 50))
            took = time.monotonic() - started
            rss, pss = tree.steady(self.sizes.settle)
            metric = "mem_loaded" if count else "mem_empty"
            self.results.add(peer.label, metric, rss / 2**20)
            self.results.add(peer.label, f"{metric}_pss", pss / 2**20)
            if count:
                self.results.add(peer.label, "mem_loaded_peak", tree.peak_rss / 2**20)
                self.results.add(peer.label, "mem_loaded_seconds", took)
        peer.purge()


def _lost_service(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says a server went away; the bench's own waits
    that ran out (:class:`bench.marks.NotReached`) don't."""
    names = {"ConnectionError", "OperationalError", "InterfaceError", "ConnectionRefusedError",
             "ConnectionResetError", "BrokenPipeError", "PublishError",
             "RecoverableConnectionError", "ConnectionClosed", "BusyLoadingError"}
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__name__ in names or isinstance(exc, OSError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _root():
    from bench.peers import ROOT

    return ROOT
