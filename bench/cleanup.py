#!/usr/bin/env python
"""Housekeeping under load: deleting a million expired results while a worker drains jobs.

    python bench/cleanup.py [--expired 1000000] [--n 40000] [--repeat 3]

On PostgreSQL (database ``bench`` unless ``BENCH_DATABASE_URL`` says otherwise, as for
bench/run.py) and Redis. Each repetition fills the results table with ``--expired`` finished
rows two days old (one ``INSERT ... SELECT generate_series``), then times one worker
(``-c 2 -P prefork``, results in the ORM) draining ``--n`` no-op jobs twice:

1. with the expired rows in place and nothing deleting them;
2. with ``manage.py jobs_cleanup`` started as the drain starts: the drain rate while the
   cleanup ran and after it, within the same drain, and how long the cleanup took.

Last, ``jobs_cleanup`` on the same rows with no worker running, and once more with nothing
left to delete (the command's start-up and an empty pass, included in every time). The
worker's own housekeeping is left out of its middleware, so that the command is the only
thing deleting. Prints the figures (medians, with the range); writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path[0] == str(Path(__file__).resolve().parent):
    sys.path[0] = str(ROOT)  # import ``bench`` as a package, never its modules as top-level

from bench import marks  # noqa: E402
from bench.environment import Environment  # noqa: E402
from bench.measure import Spread, WorkerTree, wait_until  # noqa: E402

HOUSEKEEPING = "jobs.middleware.housekeeping.Housekeeping"
NOOP = "bench.tasks.noop"
ATTEMPTS = 5


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expired", type=int, default=1_000_000,
                        help="expired result rows to delete (default 1,000,000)")
    parser.add_argument("--n", type=int, default=40_000,
                        help="no-op jobs per drain (default 40,000; outlasts the cleanup)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    logs = Path(tempfile.mkdtemp(prefix="jobs-bench-cleanup-"))
    env = Environment("redis", "postgres", logs)
    from jobs.conf import DEFAULT_MIDDLEWARE

    env.env["BENCH_JOBS_EXTRA"] = json.dumps(
        {"MIDDLEWARE": [p for p in DEFAULT_MIDDLEWARE if p != HOUSEKEEPING]})
    env.prepare()
    from bench.peers.jobs_peer import JobsPeer

    peer = JobsPeer(env)
    env.queues = {peer.queue}
    say(f"bench {env.prefix}: {env.database_url}, {env.broker_url}; logs in {logs}; "
        f"load average {os.getloadavg()[0]:.2f}")
    figures: dict[str, list[float]] = {}
    try:
        for rep in range(1, args.repeat + 1):
            alone, both = repetition(peer, env, args, first=rep == 1)
            for name, value in [("alone", alone["rate"]), *both.items()]:
                figures.setdefault(name, []).append(value)
            say(f"repetition {rep}: drain {alone['rate']:,.0f} jobs/s with nothing deleting; "
                f"{both['during']:,.0f} jobs/s while jobs_cleanup deleted "
                f"{both['deleted']:,.0f} rows in {both['seconds']:.1f} s, then "
                f"{both['after']:,.0f} jobs/s (load average {os.getloadavg()[0]:.2f})")
        summary(figures, *idle_cleanups(peer, env, args))
    finally:
        peer.purge()
        env.cleanup()
    return 0


def repetition(peer, env, args, first: bool) -> tuple[dict, dict]:
    """Fill, drain alone, drain with the cleanup."""
    def measure():
        seconds = fill(args.expired)
        if first:
            say(f"filled {args.expired:,} expired results in {seconds:.1f} s\n{plan()}")
        return drain(peer, env, args.n, cleanup=False), drain(peer, env, args.n, cleanup=True)

    return again_if_disturbed(peer, env, measure)


def idle_cleanups(peer, env, args) -> tuple[dict, dict]:
    """jobs_cleanup with no worker running, on the expired rows and then on none."""
    def measure():
        fill(args.expired)
        return run_cleanup(peer), run_cleanup(peer)

    return again_if_disturbed(peer, env, measure)


def again_if_disturbed(peer, env, measure):
    """``measure()``, from a purged table; again (up to ATTEMPTS times) if Redis or PostgreSQL
    restarted meanwhile (another test run on a shared machine)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            peer.purge()
            services = env.services_fingerprint()
            result = measure()
            if env.services_fingerprint() != services:
                raise RuntimeError("a service restarted during the measurement")
            return result
        except Exception as exc:
            if attempt == ATTEMPTS or not _lost_service(exc):
                raise
            say(f"  a service went away ({type(exc).__name__}: {str(exc)[:80]}); "
                "measuring again once it is back")
            env.wait_for_services(timeout=600)
    raise AssertionError("unreachable")


def _lost_service(exc: BaseException) -> bool:
    import redis
    from django.db import DatabaseError

    from bench.marks import NotReached

    return isinstance(exc, (redis.RedisError, DatabaseError, NotReached, RuntimeError,
                            subprocess.CalledProcessError, ConnectionError))


def say(text: str) -> None:
    print(text, flush=True)


def summary(figures: dict[str, list[float]], idle: dict, empty: dict) -> None:
    def spread(name: str, unit: str) -> str:
        s = Spread.of(figures[name])
        return f"{s.median:,.{1 if unit == 's' else 0}f} {unit} ({s.low:,.1f}–{s.high:,.1f})"

    say("\nmedians (range) of the repetitions:")
    say(f"  drain, nothing deleting:            {spread('alone', 'jobs/s')}")
    say(f"  drain while jobs_cleanup runs:      {spread('during', 'jobs/s')}")
    say(f"  drain after it, in the same drain:  {spread('after', 'jobs/s')}")
    say(f"  jobs_cleanup during the drain:      {spread('seconds', 's')}")
    say(f"jobs_cleanup with no worker running: {idle['seconds']:.1f} s for {idle['deleted']:,} "
        f"rows; with nothing to delete: {empty['seconds']:.1f} s")


def fill(count: int) -> float:
    """``count`` SUCCESS results done two days ago, written by the database itself."""
    from django.db import connection

    from jobs.models import JobRecord

    table = connection.ops.quote_name(JobRecord._meta.db_table)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"""
            INSERT INTO {table} (job_id, name, state, args, kwargs, result, traceback, retries,
                                 deliveries, queue, worker, parent_id, root_id, date_created,
                                 date_started, date_done, runtime)
            SELECT 'expired-' || g, 'bench.expired', 'SUCCESS', '[]', '{{}}', 'null', '',
                   0, 1, 'bench', 'bench@host', '', 'expired-' || g,
                   now() - interval '2 days 1 minute', now() - interval '2 days 1 minute',
                   now() - interval '2 days', 0.001
            FROM generate_series(1, %s) AS g""", [count])
        cursor.execute(f"ANALYZE {table}")
    return time.perf_counter() - started


def plan() -> str:
    """PostgreSQL's plan for a batch's select, as a pass runs it."""
    from django.db import connection
    from django.utils import timezone

    from jobs import housekeeping

    sweep = [s for s in housekeeping.sweeps(timezone.now()) if s.kind == "job results"][-1]
    sql, params = sweep.rows.values_list("pk", flat=True)[:housekeeping.BATCH].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        lines = [row[0] for row in cursor.fetchall()]
    return "a batch's select:\n  " + sql + "\n  " + "\n  ".join(lines)


def drain(peer, env, n: int, cleanup: bool) -> dict:
    """``n`` no-op jobs through one worker, timed by marks in the worker (bench.figures);
    with ``cleanup``, ``jobs_cleanup`` runs from the start of the drain."""
    serial = f"{time.monotonic_ns()}"
    gate, end = marks.key(f"gate-{serial}"), marks.key(f"end-{serial}")
    peer.send_mark(gate)
    peer.enqueue_bulk(n)
    peer.send_mark(end)
    log = env.logs / f"worker-{serial}-{'cleanup' if cleanup else 'alone'}.log"
    with WorkerTree(peer.worker_argv(), peer.env(), cwd=ROOT, log=log) as tree:
        opened = marks.wait(gate, 90, alive=tree.alive)
        if cleanup:
            started = time.time()
            figures = run_cleanup(peer)
            ended = started + figures["seconds"]
        closed = marks.wait(end, max(120.0, n / 20), alive=tree.alive)
        wait_until(lambda: peer.stored_results() >= n, 120, f"{n} stored results",
                   alive=tree.alive)
    if not cleanup:
        figures = {"rate": n / (closed - opened)}
    elif ended >= closed:
        raise ValueError(f"the cleanup outlasted the drain: use a larger --n than {n}")
    else:
        figures.update(during=done_between(started, ended), after=done_between(ended, closed))
    forget_drained()
    return figures


def run_cleanup(peer) -> dict:
    """``manage.py jobs_cleanup`` in its own process: its wall time and what it deleted."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "manage.py"), "jobs_cleanup"], cwd=ROOT,
                          env=peer.env(), capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    deleted = sum(int(line.split(": ")[1].split()[0]) for line in done.stdout.splitlines()
                  if line.endswith(" deleted"))
    return {"seconds": seconds, "deleted": deleted}


def done_between(start: float, stop: float) -> float:
    """Jobs per second whose results were recorded between two wall-clock times."""
    from jobs.models import JobRecord

    count = JobRecord.objects.filter(
        name=NOOP, date_done__gte=datetime.fromtimestamp(start, UTC),
        date_done__lt=datetime.fromtimestamp(stop, UTC)).count()
    return count / (stop - start)


def forget_drained() -> None:
    """Delete the drained jobs' results; the expired rows stay for the next drain."""
    from jobs.models import JobRecord

    JobRecord.objects.filter(name=NOOP).delete()


if __name__ == "__main__":
    sys.exit(main())
