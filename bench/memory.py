#!/usr/bin/env python
"""Worker memory, jobs beside Dramatiq: RSS and PSS of each worker's process tree.

    python bench/memory.py [--jobs 200] [--settle 3] [--repeat 1] [--broker redis]

Starts ``manage.py jobs_worker -c 2 -P prefork`` (bench settings; results in the ORM, then
off) and ``dramatiq bench.dramatiq_tasks -p 2 -t 1`` on the same broker and database, has each
run ``--jobs`` no-op jobs, then reads the memory of every process of the tree once it has
settled. RSS counts a page shared by a parent and its forked children once per process; PSS
divides it between them, so PSS summed over the tree is what the worker costs the machine.

The floor (``--only floor``, ``floor-worker``): a parent and two forked children that only load
Django with the bench's settings, psycopg, redis-py and kombu (and, for ``floor-worker``, the
jobs worker's modules), then do nothing (``bench/floor.py``), measured the same way.

The database is ``bench_memory`` (``BENCH_DATABASE_URL`` overrides it), not the bench's own,
so that a benchmark running beside it keeps its tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path[0] == str(Path(__file__).resolve().parent):
    sys.path[0] = str(ROOT)  # import ``bench`` as a package, never its modules as top-level

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_memory")

import psutil  # noqa: E402

from bench import marks  # noqa: E402
from bench.environment import Environment  # noqa: E402
from bench.measure import Spread, WorkerTree  # noqa: E402

MB = 2**20


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    parser.add_argument("--jobs", type=int, default=200, help="no-op jobs each worker runs first")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds of samples once the jobs ran (the largest is kept)")
    parser.add_argument("--repeat", type=int, default=1, help="workers started per peer")
    parser.add_argument("--only", default="floor,floor-worker,jobs,jobs-off,dramatiq",
                        help="comma-separated: floor, floor-worker, jobs, jobs-off, dramatiq")
    return parser.parse_args(argv)


FLOORS = {"floor": ("django", "floor: Django set up, 3 processes idle"),
          "floor-worker": ("worker", "floor: and jobs' worker modules")}


def peers(ctx, only: list[str]) -> list:
    from bench.peers.dramatiq_peer import DramatiqPeer
    from bench.peers.jobs_peer import JobsPeer

    made = {"jobs": lambda: JobsPeer(ctx), "jobs-off": lambda: JobsPeer(ctx, ignore_result=True),
            "dramatiq": lambda: DramatiqPeer(ctx, threads=1)}
    return [made[name]() for name in only if name not in FLOORS]


def processes(tree: WorkerTree) -> list[tuple[str, int, int, int]]:
    """(role, RSS, PSS, USS) of each process of the tree, the main process first."""
    rows = []
    for proc in tree.processes():
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        role = "main" if proc.pid == tree.root.pid else "child"
        rows.append((role, info.rss, info.pss, info.uss))
    return rows


def measure(ctx, peer, n: int, settle: float, serial: int) -> dict:
    """Run ``n`` no-op jobs through a fresh worker of ``peer``; its tree's memory after."""
    peer.purge()
    ctx.queues.add(peer.queue)
    end = marks.key(f"memory-{serial}")
    peer.enqueue(n)
    peer.send_mark(end)
    log = ctx.logs / f"memory-{serial}-{peer.key}.log"
    with WorkerTree(peer.worker_argv(), peer.env(), cwd=ROOT, log=log) as tree:
        try:
            marks.wait(end, max(120.0, n / 20), alive=tree.alive)
        except (marks.NotReached, RuntimeError) as exc:
            raise RuntimeError(f"{exc}; worker output:\n{tree.output()[-3000:]}") from exc
        rss, pss = tree.steady(settle)
        rows = processes(tree)
    peer.purge()
    return {"rss": rss / MB, "pss": pss / MB, "processes": rows}


def measure_floor(ctx, name: str, settle: float, serial: int) -> dict:
    """The memory of ``bench/floor.py``'s idle tree, read as :func:`measure` reads a worker's."""
    level, _ = FLOORS[name]
    env = {**os.environ, **ctx.env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
           "BENCH_JOBS_IGNORE_RESULT": "1"}  # the apps of the jobs workers measured beside it
    log = ctx.logs / f"memory-{serial}-{name}.log"
    with WorkerTree([sys.executable, "-m", "bench.floor", level], env, cwd=ROOT, log=log) as tree:
        deadline = time.monotonic() + 60
        while "ready" not in tree.output():
            if not tree.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{tree.output()[-3000:]}")
            time.sleep(0.05)
        rss, pss = tree.steady(settle)
        rows = processes(tree)
    return {"rss": rss / MB, "pss": pss / MB, "processes": rows}


def show(label: str, runs: list[dict]) -> None:
    rss, pss = Spread.of([r["rss"] for r in runs]), Spread.of([r["pss"] for r in runs])
    spread = f" (range {pss.low:.0f}-{pss.high:.0f})" if pss.count > 1 else ""
    print(f"{label:<34} RSS {rss.median:6.1f} MB   PSS {pss.median:6.1f} MB{spread}")
    for role, rss_b, pss_b, uss_b in runs[-1]["processes"]:
        print(f"    {role:<6} RSS {rss_b / MB:6.1f}   PSS {pss_b / MB:6.1f}   "
              f"USS {uss_b / MB:6.1f}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logs = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    ctx = Environment(args.broker, "postgres", logs)
    ctx.prepare()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    serial = 0
    results: dict[str, list[dict]] = {}
    try:
        for _ in range(args.repeat):
            for name in (name for name in only if name in FLOORS):
                serial += 1
                results.setdefault(FLOORS[name][1], []).append(
                    measure_floor(ctx, name, args.settle, serial))
            for peer in peers(ctx, only):
                serial += 1
                results.setdefault(peer.label, []).append(
                    measure(ctx, peer, args.jobs, args.settle, serial))
    finally:
        ctx.cleanup()
    print(f"Worker memory after {args.jobs} no-op jobs, {args.broker} broker, PostgreSQL; "
          f"process trees summed (logs in {logs}):")
    for label, runs in results.items():
        show(label, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
