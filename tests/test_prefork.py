"""The prefork pool handing a busy child its next deliveries (its reserve), with real forked
children: what waits in a child's pipe runs once, in order, and nothing is lost or run twice
when the child dies, passes its time limit or is recycled."""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import queue
import socket
import threading
import time
import uuid

import pytest

from jobs.broker import get_broker
from jobs.execution import Delivery
from jobs.messages import JobMessage, encode
from jobs.outcome import Kind
from jobs.worker.pools.pipe import HEADER, Pipe
from jobs.worker.pools.prefork import RESERVE_BYTES, RESERVE_MOST, PreforkPool
from jobs.worker.worker import Worker
from tests.jobs_app import jobs as test_jobs

ACCEPT = {"application/json"}


def delivery(job, *args, tag=None, time_limit=None) -> Delivery:
    envelope = encode(JobMessage(id=str(uuid.uuid4()), name=job.name, args=args), "json")
    return Delivery(tag=tag, headers=envelope.headers, body=envelope.payload.encode(),
                    content_type=envelope.content_type,
                    content_encoding=envelope.content_encoding, queue="default",
                    time_limit=time_limit)


@pytest.fixture(params=["collector thread", "caller collects"])
def start_pool(transactional_db, request):
    """Start a pool whose outcomes a thread of its own collects, as with ``django://``, or the
    caller (the worker's main thread, as with Redis and RabbitMQ): every test runs with each."""
    pools = []

    def start(concurrency=1, reserve=RESERVE_MOST, **options):
        pool = PreforkPool(concurrency, "jobs@prefork-test", ACCEPT, **options)
        pools.append(pool)
        if request.param == "caller collects":
            assert pool.collect_here()
        pool.start()
        pool.set_reserve(reserve)
        return pool

    yield start
    for pool in pools:
        pool.terminate()


def outcomes(pool, count: int, timeout: float = 30) -> dict:
    """The next ``count`` outcomes, by delivery tag, forking replacements meanwhile (as the
    worker's main thread does)."""
    found, deadline = {}, time.monotonic() + timeout
    while len(found) < count:
        assert time.monotonic() < deadline, f"only {len(found)} of {count} outcomes came"
        pool.maintain()
        if pool.collected_here:
            pool.collect(0.1)
        try:
            tag, outcome = pool.completions.get(timeout=0 if pool.collected_here else 0.1)
        except Exception:
            continue
        assert tag not in found, f"{tag} answered twice"
        found[tag] = outcome
    return found


def runs(directory, i) -> list[str]:
    """The ids of the processes that ran mark ``i``, one line per run."""
    path = os.path.join(directory, str(i))
    return open(path).read().split() if os.path.exists(path) else []


def test_a_busy_child_is_handed_its_next_deliveries_and_runs_them_in_order(start_pool,
                                                                          tmp_path):
    pool = start_pool(concurrency=1, reserve=3)
    sent = [delivery(test_jobs.nap_quietly, str(tmp_path), i, 0.2, tag=i) for i in range(5)]
    for d in sent:
        pool.submit(d)

    # One runs, three wait in the child's pipe (its reserve), the fifth in the parent.
    assert [d.tag for d in pool.take_backlog()] == [4]
    assert pool.running() == 1 and pool.waiting() == 3
    assert [d.tag for d in pool.running_deliveries()] == [0, 1, 2, 3]

    done = outcomes(pool, 4)
    assert list(done) == [0, 1, 2, 3]
    assert all(o.kind is Kind.SUCCEEDED for o in done.values())
    pids = {pid for i in range(4) for pid in runs(tmp_path, i)}
    assert len(pids) == 1 and all(len(runs(tmp_path, i)) == 1 for i in range(4))


def test_without_a_reserve_a_busy_child_is_handed_nothing(start_pool, tmp_path):
    pool = start_pool(concurrency=1, reserve=0)
    for i in range(3):
        pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), i, 0.2, tag=i))

    assert [d.tag for d in pool.take_backlog()] == [1, 2]
    assert list(outcomes(pool, 1)) == [0]


def test_a_large_delivery_waits_in_the_parent_not_in_a_busy_childs_pipe(start_pool, tmp_path):
    pool = start_pool(concurrency=1, reserve=3)
    pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), 0, 0.2, tag=0))
    large = delivery(test_jobs.nap_quietly, str(tmp_path), 1, 0, "x" * RESERVE_BYTES, tag=1)
    pool.submit(large)
    small = delivery(test_jobs.nap_quietly, str(tmp_path), 2, tag=2)
    pool.submit(small)  # behind the large one: the order holds

    assert [d.tag for d in pool.take_backlog()] == [1, 2]


def test_the_deliveries_behind_a_job_past_its_time_limit_run_in_another_child(start_pool,
                                                                             tmp_path):
    pool = start_pool(concurrency=1, reserve=3)
    pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), 0, 60, tag=0, time_limit=0.5))
    for i in range(1, 4):
        pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), i, tag=i))

    done = outcomes(pool, 4)
    assert done[0].kind is Kind.TIME_LIMIT
    assert all(done[i].kind is Kind.SUCCEEDED for i in range(1, 4))
    assert runs(tmp_path, 0) == []
    killed_in = {pid for i in range(1, 4) for pid in runs(tmp_path, i)}
    assert len(killed_in) == 1 and all(len(runs(tmp_path, i)) == 1 for i in range(1, 4))


def test_a_child_that_dies_loses_only_the_job_it_ran(start_pool, tmp_path):
    pool = start_pool(concurrency=1, reserve=3)
    pool.submit(delivery(test_jobs.die_always_quietly, tag=0))
    for i in range(1, 4):
        pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), i, tag=i))

    done = outcomes(pool, 4)
    assert done[0].kind is Kind.LOST
    assert all(done[i].kind is Kind.SUCCEEDED for i in range(1, 4))
    assert all(len(runs(tmp_path, i)) == 1 for i in range(1, 4))


def test_a_job_handed_to_a_child_that_died_idle_runs_in_its_replacement(start_pool, tmp_path):
    # A child killed while idle (the OOM killer, an operator) is buried at the next collect;
    # the pool doesn't ask whether a child is alive before handing it a job (two system
    # calls per job). A job handed to it meanwhile never reached it: it runs in the child
    # that replaces it, and is not reported lost.
    pool = start_pool(concurrency=1)
    (child,) = multiprocessing.active_children()
    child.kill()
    child.join(10)
    pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), 1, tag=1))
    assert outcomes(pool, 1)[1].kind is Kind.SUCCEEDED
    assert len(runs(tmp_path, 1)) == 1


def test_a_child_recycled_after_its_last_job_is_handed_none_beyond_it(start_pool, tmp_path):
    pool = start_pool(concurrency=1, reserve=3, max_tasks_per_child=2)
    for i in range(5):
        pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), i, 0.05, tag=i))

    # It runs one and holds one more, its last; three wait in the parent.
    assert pool.running() == 1 and pool.waiting() == 4
    assert [d.tag for d in pool.running_deliveries()] == [0, 1]

    done = outcomes(pool, 5)
    assert all(o.kind is Kind.SUCCEEDED for o in done.values())
    assert all(len(runs(tmp_path, i)) == 1 for i in range(5))
    by_pid = {}
    for i in range(5):
        by_pid.setdefault(runs(tmp_path, i)[0], []).append(i)
    assert sorted(by_pid.values()) == [[0, 1], [2, 3], [4]]


def test_the_worker_gives_its_slots_a_reserve_only_while_its_window_is_widened(settings):
    settings.JOBS = {**settings.JOBS, "WORKER_PREFETCH_MULTIPLIER": None}
    worker = Worker(concurrency=2, pool="prefork")
    assert worker.prefetch == 8 and worker.pool.reserve == 0

    worker.set_window(32)  # jobs.middleware.prefetch, while jobs are short
    assert worker.pool.reserve == RESERVE_MOST
    worker.set_window(16)
    assert worker.pool.reserve == 4
    worker.set_window(8)  # back at the base window: one at a time again
    assert worker.pool.reserve == 0


def test_a_child_leaving_for_its_memory_limit_hands_back_what_waited_in_its_pipe(start_pool,
                                                                                tmp_path):
    pool = start_pool(concurrency=1, reserve=3, max_memory_per_child=1)  # 1 KB: after each job
    for i in range(4):
        pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), i, 0.05, tag=i))

    done = outcomes(pool, 4)
    assert all(o.kind is Kind.SUCCEEDED for o in done.values())
    assert all(len(runs(tmp_path, i)) == 1 for i in range(4))
    assert len({runs(tmp_path, i)[0] for i in range(4)}) == 4  # a fresh child for each


def test_a_stalled_worker_keeps_its_base_window_counting_what_waits_in_its_children():
    from jobs.middleware.prefetch import AdaptivePrefetch

    class Pool:  # two children, each running a long job and holding 2 more in its pipe
        concurrency = 2
        backlog = list(range(10))

        def running(self):
            return 2

        def waiting(self):
            return len(self.backlog) + 4

        def take_backlog(self):
            taken, self.backlog = self.backlog, []
            return taken

        def submit(self, delivery):
            self.backlog.append(delivery)

    class Worker:
        prefetch = 8
        pool = Pool()
        requeued = []

        def requeue(self, delivery):
            self.requeued.append(delivery)

    worker = Worker()
    AdaptivePrefetch()._hand_back_extra(worker)

    # The base window (8) holds the 2 running and the 4 in the pipes: 2 more stay.
    assert worker.pool.backlog == [0, 1]
    assert worker.requeued == list(range(2, 10))


def test_a_large_delivery_waiting_in_the_parent_goes_to_a_child_only_when_it_is_free(
        start_pool, tmp_path):
    pool = start_pool(concurrency=1, reserve=3)
    for i in range(2):
        pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), i, 0.3, tag=i))
    pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), 2, 0, "x" * RESERVE_BYTES,
                         tag=2))

    assert list(outcomes(pool, 1)) == [0]
    # The child runs the one it held; the large one is not put behind it, but waits here.
    assert [d.tag for d in pool.running_deliveries()] == [1]
    assert list(outcomes(pool, 2)) == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_with_debug_on_a_worker_keeps_only_the_queries_of_the_job_it_runs(settings):
    from django.db import connection

    from jobs.worker.pools.base import Pool

    settings.DEBUG = True  # Django logs every query of the process then
    pool = Pool(1, "jobs@test", ACCEPT)
    counts = []
    for i in range(3):
        assert pool._run(delivery(test_jobs.count_results, tag=i)).kind is Kind.SUCCEEDED
        counts.append(len(connection.queries))
    assert counts[0] > 0 and counts == [counts[0]] * 3


def test_a_burst_of_short_jobs_widens_the_window_within_milliseconds(monkeypatch):
    from jobs.middleware import prefetch

    clock = [100.0]
    monkeypatch.setattr(prefetch.time, "monotonic", lambda: clock[0])

    class Worker:
        adaptive_prefetch, prefetch, window, concurrency, processed = True, 8, 8, 2, 0

        def set_window(self, size):
            self.window = size

    worker, middleware = Worker(), prefetch.AdaptivePrefetch()
    middleware.worker_started(worker)
    clock[0] += 0.01
    worker.processed = 64  # four windows of 8 in 10 ms: too soon to judge a rate
    middleware.tick(worker)
    assert worker.window == 8
    clock[0] += 0.015
    middleware.tick(worker)  # 25 ms: jobs are short, so it widens now, not at 250 ms
    assert worker.window == 32
    clock[0] += 0.1
    worker.processed += 20  # slower: fewer than four windows, no look before 250 ms
    middleware.tick(worker)
    assert worker.window == 32
    clock[0] += 0.2
    middleware.tick(worker)  # 20 jobs in 0.3 s: it narrows back at the usual look
    assert worker.window == 8


@pytest.mark.parametrize("start_pool", ["caller collects"], indirect=True)
def test_the_caller_collecting_wakes_for_an_answer_or_for_the_brokers_socket(start_pool,
                                                                             tmp_path):
    pool = start_pool(concurrency=1)
    assert not any(t.name == "jobs-collector" for t in threading.enumerate())
    broker, sender = socket.socketpair()
    with broker, sender:
        pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), 0, 0.3, tag=0))
        # The child's answer ends the wait, long before its timeout: no socket was readable.
        started = time.monotonic()
        while pool.completions.empty():
            assert pool.collect(30, [broker.fileno()]) is False
        assert time.monotonic() - started < 10
        assert pool.completions.get_nowait()[0] == 0 and pool.running() == 0

        # The broker's socket ends it as well, while a child runs a job.
        pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), 1, 30, tag=1))
        threading.Timer(0.2, sender.send, (b"+",)).start()
        started = time.monotonic()
        assert pool.collect(30, [broker.fileno()]) is True
        assert time.monotonic() - started < 10
        assert pool.completions.empty() and pool.running() == 1


def test_stopping_waits_for_the_running_jobs_and_keeps_their_outcomes(start_pool, tmp_path):
    pool = start_pool(concurrency=2)
    for i in range(2):
        pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), i, 0.3, tag=i))
    assert pool.stop(30) is True
    assert sorted(pool.completions.get_nowait()[0] for _ in range(2)) == [0, 1]
    assert all(runs(tmp_path, i) for i in range(2))


class _Watching:
    """A pool whose wait notes what it watched: the sockets readable or not, as told (and
    never an outcome)."""

    def __init__(self, readable: bool) -> None:
        self.readable, self.watched = readable, []
        self.completions = queue.SimpleQueue()

    def collect(self, timeout, sockets=()):
        self.watched.append(tuple(sockets))
        return self.readable and bool(sockets)

    def flush(self):
        pass


class _Quiet:
    """A broker connection with nothing to deliver."""

    def drain_events(self, timeout):
        raise TimeoutError

    def heartbeat_check(self):
        pass


@pytest.mark.parametrize("readable", [False, True], ids=["idle", "readable, nothing to take"])
def test_the_worker_keeps_watching_the_brokers_socket_while_nothing_comes(monkeypatch,
                                                                          readable):
    worker = Worker(concurrency=1, pool="prefork")
    worker._watching = worker._collecting = True  # as run() sets them for prefork on Redis
    worker.pool = _Watching(readable)
    monkeypatch.setattr(get_broker(), "sockets", lambda connection: [7])
    for _ in range(8):
        worker._fetch(_Quiet())
    if not readable:  # an idle worker: a job sent now is seen at once, whenever it comes
        assert worker.pool.watched == [(7,)] * 8
    else:  # kombu holding back with the socket readable: not a busy loop
        assert worker.pool.watched == [(7,)] * 3 + [()] + [(7,)] * 3 + [()]


def test_a_pipe_gives_every_frame_that_came_whole_in_order_and_waits_for_the_rest():
    parent, child = Pipe.pair()
    big = os.urandom(600_000)  # more than the socket holds: written while it is read
    writer = threading.Thread(target=lambda: [parent.put(b"one"), parent.put(b""),
                                              parent.put(big), parent.flush()])
    writer.start()
    frames = []
    while len(frames) < 3:
        frames += child.frames()
    writer.join()
    assert frames == [b"one", b"", big]

    assert child.frames(block=False) == []
    parent.sock.sendall(HEADER.pack(5) + b"ab")  # a frame cut short: not given yet
    assert child.frames(block=False) == []
    parent.sock.sendall(b"cde" + HEADER.pack(1))
    assert child.frames(block=False) == [b"abcde"]
    parent.sock.sendall(b"!")
    parent.close()
    assert child.frames() == [b"!"]  # what came before the end, then the end
    with pytest.raises(EOFError):
        child.frames(block=False)
    child.close()


def test_a_child_forked_while_the_collector_writes_a_log_line_can_log(start_pool, tmp_path):
    # A buffered log stream (a FileHandler's, or stderr without PYTHONUNBUFFERED) holds a
    # lock while it writes. A child forked meanwhile inherits the lock held, by a thread
    # that doesn't exist there: its first line to that stream would wait forever, with its
    # job. Here the collector's "replacing it" line takes 0.3 s to write.
    class SlowSink(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            time.sleep(0.3)
            return len(data)

    handler = logging.StreamHandler(io.TextIOWrapper(io.BufferedWriter(SlowSink())))
    logger = logging.getLogger("jobs.worker")
    logger.addHandler(handler)
    try:
        pool = start_pool(concurrency=1)
        (child,) = multiprocessing.active_children()
        child.kill()
        child.join(10)
        pool.submit(delivery(test_jobs.nap_quietly, str(tmp_path), 1, tag=1))
        assert outcomes(pool, 1, timeout=10)[1].kind is Kind.SUCCEEDED
    finally:
        logger.removeHandler(handler)
