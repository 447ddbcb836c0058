#!/usr/bin/env python
"""What the services alone take for a job's writes: the physical bound of the drain figures,
and of the round trip.

    python bench/bounds.py [--n 4000] [--connections 2] [--repeat 3] [--roundtrips 500]
                           [--batch 4]

No worker, no broker client, no Django: the statements a worker sends to PostgreSQL for one
job that records its result, sent by raw psycopg from ``--connections`` processes at once
(the worker's ``-c 2`` children), each job's statements one after the other, as a child
sends them:

- **job writes**: the STARTED row (``INSERT .. ON CONFLICT .. RETURNING``, committed without
  waiting for the disk, as the trigger of migration 0002 has it), then the outcome (an
  ``UPDATE`` committed durably), then the NOTIFY for waiting callers in a transaction of its
  own, as ``jobs.lifecycle`` writes them. The table is the bench database's JobRecord table,
  with its indexes and triggers, so each row costs what the worker's costs.
- **NOTIFY inside the outcome's transaction**: the same, with the outcome's transaction
  notifying (the trigger left to do it), which PostgreSQL serialises through the disk flush.
- **job writes in batches**: the same two writes for ``--batch`` jobs at a time, each a
  single statement (the STARTED rows one ``INSERT .. SELECT FROM unnest(..) .. ON CONFLICT ..
  RETURNING``, the outcomes one ``UPDATE .. WHERE job_id = ANY(..)``, whose commit the trigger
  notifies for every row): what group commit of results would take, the writes of the jobs
  claimed together sent together.
- **STARTED in batches**: the STARTED rows so, each outcome still its own statement and
  durable commit: what batching only the first write would take.
- **a durable commit**: one single-row ``UPDATE`` committed durably per job on a table of
  its own: the least any durable outcome costs on this machine.
- **round trip**: a caller ``LPUSH``es a job's id on a Redis list and waits, LISTENing on
  its PostgreSQL connection, for the notification of its outcome; one consumer process
  waits on the list (``BLMOVE``) and writes the job's STARTED row and outcome as above (the
  NOTIFY inside the outcome's commit). What a durable round trip through Redis and
  PostgreSQL takes with no task library in between: p50 and p99 of ``--roundtrips`` calls.

The rate is jobs per second over all the processes (median of ``--repeat`` runs, with their
range). The database is the bench's (``BENCH_DATABASE_URL``), migrated; the rows this writes
carry the name ``bench.bounds`` and are deleted afterwards. ``tests/test_bench_smoke.py`` runs
it on tiny sizes, so that it can't rot.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
import uuid
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path[0] == str(Path(__file__).resolve().parent):
    sys.path[0] = str(ROOT)  # import ``bench`` as a package, never its modules as top-level

URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
NAME = "bench.bounds"

START = (
    "INSERT INTO jobs_jobresult (job_id, name, state, args, kwargs, result, traceback, meta, "
    "retries, deliveries, queue, worker, parent_id, root_id, date_created, date_started, "
    "date_done, runtime, group_id) VALUES (%s, %s, 'STARTED', '[]', '{}', NULL, '', NULL, 0, 1, "
    "'bounds', 'bounds', '', %s, now(), now(), NULL, NULL, '') ON CONFLICT (job_id) DO UPDATE "
    "SET deliveries = jobs_jobresult.deliveries + 1 RETURNING deliveries"
)
OUTCOME = ("UPDATE jobs_jobresult SET state = 'SUCCESS', result = 'null', date_done = now(), "
           "runtime = 0.001, worker = 'bounds' WHERE job_id = %s AND retries <= 0{after}")
START_MANY = (
    "INSERT INTO jobs_jobresult (job_id, name, state, args, kwargs, result, traceback, meta, "
    "retries, deliveries, queue, worker, parent_id, root_id, date_created, date_started, "
    "date_done, runtime, group_id) SELECT id, %s, 'STARTED', '[]', '{}', NULL, '', NULL, 0, 1, "
    "'bounds', 'bounds', '', id, now(), now(), NULL, NULL, '' FROM unnest(%s::text[]) AS id "
    "ON CONFLICT (job_id) DO UPDATE SET deliveries = jobs_jobresult.deliveries + 1 "
    "RETURNING deliveries"
)
OUTCOME_MANY = ("UPDATE jobs_jobresult SET state = 'SUCCESS', result = 'null', "
                "date_done = now(), runtime = 0.001, worker = 'bounds' "
                "WHERE job_id = ANY(%s) AND retries <= 0")
AFTER = " AND set_config('jobs.notify', 'after-commit', true) IS NOT NULL"
NOTIFY = ("SELECT set_config('synchronous_commit', 'off', true), "
          "pg_notify('jobs_result_' || md5(job_id), "
          "json_build_object('id', job_id, 'state', state, 'result', result)::text) "
          "FROM jobs_jobresult WHERE job_id = %s")
COMMIT = "UPDATE bench_bounds_commit SET n = n + 1 WHERE id = %s"


def result_channel(job_id: str) -> str:
    """The channel a job's outcome is notified on: jobs.results.result_channel's, here
    without Django."""
    return "jobs_result_" + hashlib.md5(job_id.encode(), usedforsecurity=False).hexdigest()


def job_writes(cursor, job_id: str, notify_after: bool) -> None:
    cursor.execute(START, [job_id, NAME, job_id])
    cursor.fetchone()
    cursor.execute(OUTCOME.format(after=AFTER if notify_after else ""), [job_id])
    if notify_after:
        cursor.execute(NOTIFY, [job_id])


def batch_writes(cursor, job_ids: list[str], outcomes_each: bool = False) -> None:
    cursor.execute(START_MANY, [NAME, job_ids])
    cursor.fetchall()
    if outcomes_each:
        for job_id in job_ids:
            cursor.execute(OUTCOME.format(after=""), [job_id])
    else:
        cursor.execute(OUTCOME_MANY, [job_ids])


def connect():
    import psycopg

    return psycopg.connect(URL.replace("postgres://", "postgresql://", 1), autocommit=True)


def run_process(figure: str, n: int, slot: int, ready, go, batch: int) -> None:
    with connect() as pg:
        cursor = pg.cursor()
        ready.release()
        go.wait()
        prefix = uuid.uuid4().hex[:8]
        if figure in ("batch", "batch-started"):
            for i in range(0, n, batch):
                job_ids = [f"bounds-{prefix}-{k}" for k in range(i, min(n, i + batch))]
                batch_writes(cursor, job_ids, outcomes_each=figure == "batch-started")
            return
        for i in range(n):
            if figure == "commit":
                cursor.execute(COMMIT, [slot])
            else:
                job_writes(cursor, f"bounds-{prefix}-{i}", notify_after=figure == "job")


def consume(queue: str, ready) -> None:
    """The round trip's consumer: each id from ``queue``, its STARTED row and outcome
    written, until ``stop``."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    with connect() as pg:
        cursor = pg.cursor()
        ready.release()
        while True:
            job_id = client.blmove(queue, f"{queue}:taken", 0, "RIGHT", "LEFT").decode()
            if job_id == "stop":
                break
            job_writes(cursor, job_id, notify_after=False)
    client.delete(queue, f"{queue}:taken")


def round_trips(count: int) -> list[float]:
    """Milliseconds of ``count`` sequential round trips (see the module's docstring)."""
    import json

    import redis

    ctx = get_context("spawn")
    ready = ctx.Semaphore(0)
    queue = f"bench-bounds-{uuid.uuid4().hex[:8]}"
    consumer = ctx.Process(target=consume, args=(queue, ready))
    consumer.start()
    ready.acquire()
    client = redis.Redis.from_url(REDIS_URL)
    times = []
    with connect() as pg:
        prefix = uuid.uuid4().hex[:8]
        ids = [f"bounds-{prefix}-{i}" for i in range(count + 20)]  # the first 20 warm up
        # Each job's outcome is notified on its own channel (jobs.results.result_channel):
        # listening on all of them before the first leaves the listening out of the figure.
        pg.execute("; ".join(f"LISTEN {result_channel(job_id)}" for job_id in ids))
        for i, job_id in enumerate(ids):
            started = time.perf_counter()
            client.lpush(queue, job_id)
            for notify in pg.notifies():
                if json.loads(notify.payload).get("id") == job_id:
                    break
            if i >= 20:
                times.append((time.perf_counter() - started) * 1000)
    client.lpush(queue, "stop")
    consumer.join()
    return times


def measure(figure: str, n: int, connections: int, batch: int = 1) -> float:
    ctx = get_context("spawn")
    ready, go = ctx.Semaphore(0), ctx.Event()
    share = n // connections
    processes = [ctx.Process(target=run_process, args=(figure, share, slot, ready, go, batch))
                 for slot in range(connections)]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    for process in processes:
        process.join()
        if process.exitcode:
            raise SystemExit(f"{figure}: a process exited with {process.exitcode}")
    return share * connections / (time.perf_counter() - started)


def prepare(connections: int) -> None:
    """The bench database, created and migrated if it isn't, and a row per process for the
    commit figure."""
    import tempfile

    from bench.environment import Environment

    Environment("redis", "postgres", logs=Path(tempfile.mkdtemp(prefix="bench-bounds-"))).prepare()
    with connect() as pg:
        pg.execute("CREATE TABLE IF NOT EXISTS bench_bounds_commit (id int PRIMARY KEY, n bigint)")
        for slot in range(connections):
            pg.execute("INSERT INTO bench_bounds_commit VALUES (%s, 0) ON CONFLICT DO NOTHING",
                       [slot])


def clean(drop: bool = True) -> None:
    with connect() as pg:
        pg.execute("DELETE FROM jobs_jobresult WHERE name = %s", [NAME])
        if drop:
            pg.execute("DROP TABLE IF EXISTS bench_bounds_commit")


FIGURES = {
    "job": "job writes: STARTED, outcome (durable), NOTIFY after",
    "notify-inside": "the same, NOTIFY inside the outcome's transaction",
    "batch": "job writes in batches of {batch}: one statement each for STARTED and outcomes",
    "batch-started": "STARTED rows in batches of {batch}, each outcome its own durable commit",
    "commit": "one durable single-row UPDATE per job",
    "roundtrip": "round trip: LPUSH, BLMOVE, the job's writes, NOTIFY to the caller",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="jobs per run")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--roundtrips", type=int, default=500)
    parser.add_argument("--batch", type=int, default=4,
                        help="jobs per statement in the batch figure (half -c 2's window)")
    parser.add_argument("--figures", default=",".join(FIGURES))
    args = parser.parse_args(argv)
    prepare(args.connections)
    try:
        print(f"PostgreSQL alone, {args.connections} connections, {args.n:,} jobs per run, "
              f"load average {os.getloadavg()[0]:.2f} at the start")
        for figure in args.figures.split(","):
            if figure == "roundtrip":
                times = sorted(round_trips(args.roundtrips))
                clean(drop=False)
                print(f"| {FIGURES[figure]} | {times[len(times) // 2]:.2f} ms p50 "
                      f"(p99 {times[min(len(times) - 1, len(times) * 99 // 100)]:.2f} ms), "
                      "one connection each |")
                continue
            rates = []
            for _ in range(args.repeat):
                rates.append(measure(figure, args.n, args.connections, args.batch))
                clean(drop=False)
            print(f"| {FIGURES[figure].format(batch=args.batch)} | {statistics.median(rates):,.0f} "
                  f"({min(rates):,.0f}–{max(rates):,.0f}) jobs/s |")
    finally:
        clean()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
