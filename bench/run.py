#!/usr/bin/env python
"""Benchmark jobs against its peers on the same machine, broker and database.

    python bench/run.py --broker redis [--write BENCHMARKS.md]
    python bench/run.py --broker amqp
    python bench/run.py --broker django [--database sqlite]
    python bench/run.py --smoke --broker redis          # tiny sizes: checks the harness

The peers of each broker: on Redis and RabbitMQ, Celery and Dramatiq (and Huey on Redis); on
``django://`` (messages in the database), django-tasks-db and Huey's storage of the same
database. Every run has a raw-client row, the broker's own limit for enqueueing.

Needs the bench extra (``pip install -e '.[bench]'``) and the services of the README's
development environment: PostgreSQL (database ``bench``, created if missing), Redis (db 9
unless ``BENCH_REDIS_URL`` says otherwise; the bench's timing marks live there whatever the
broker) and, with ``--broker amqp``, RabbitMQ (``BENCH_AMQP_URL``). See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path[0] == str(Path(__file__).resolve().parent):
    sys.path[0] = str(ROOT)  # import ``bench`` as a package, never its modules as top-level

from bench.environment import Environment  # noqa: E402
from bench.figures import Bench, Sizes  # noqa: E402
from bench.peers import FIGURES  # noqa: E402

LIBRARIES = ("jobs", "celery", "dramatiq", "django-tasks", "huey", "raw")
#: The libraries each broker runs by default (and the only ones it can run).
BROKERS = {
    "redis": ("raw", "jobs", "celery", "dramatiq", "huey"),
    "amqp": ("raw", "jobs", "celery", "dramatiq"),
    "django": ("raw", "jobs", "django-tasks", "huey"),
}
NEEDS = {"celery": ("celery", "django_celery_results"), "dramatiq": ("dramatiq",),
         "django-tasks": ("django_tasks_db",), "huey": ("huey",)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=tuple(BROKERS), default="redis",
                        help="django: jobs' django:// transport, messages in the database")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--n", type=int, help="jobs per enqueue and drain (default 20,000)")
    parser.add_argument("--repeat", type=int, help="repetitions of each figure (default 3)")
    parser.add_argument("--roundtrips", type=int, help="round trips per repetition (500)")
    parser.add_argument("--deep", type=int, help="scale: the deep queue's depth (200,000)")
    parser.add_argument("--delayed", type=int, help="scale: delayed jobs scheduled (100,000)")
    parser.add_argument("--chord", type=int, help="jobs in the timed chord's header (1,000)")
    parser.add_argument("--only", help="comma-separated libraries to run, of the broker's: "
                        + "; ".join(f"{b}: {','.join(libs)}" for b, libs in BROKERS.items())
                        + " (default: all of them)")
    parser.add_argument("--figures", default=",".join(FIGURES),
                        help=f"comma-separated figures to measure ({','.join(FIGURES)})")
    parser.add_argument("--dramatiq-threads", default="1,8",
                        help="threads per Dramatiq process, one configuration each (1: two "
                             "jobs at once, like -c 2; 8: Dramatiq's default)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and one repetition: checks that the harness works")
    parser.add_argument("--write", type=Path, metavar="BENCHMARKS.md",
                        help="also write the results into this file (its own section)")
    args = parser.parse_args(argv)
    if args.only is None:
        args.only = ",".join(BROKERS[args.broker])
    for name, allowed in (("only", BROKERS[args.broker]), ("figures", FIGURES)):
        chosen = [x.strip() for x in getattr(args, name).split(",") if x.strip()]
        unknown = set(chosen) - set(allowed)
        if unknown:
            parser.error(f"--{name}: unknown here {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(allowed)}")
        setattr(args, name, chosen)
    return args


def sizes_from(args) -> Sizes:
    sizes = Sizes.smoke() if args.smoke else Sizes()
    for arg, attr in (("n", "n"), ("repeat", "repeat"), ("roundtrips", "roundtrips"),
                      ("deep", "deep"), ("delayed", "delayed"), ("chord", "chord")):
        if getattr(args, arg) is not None:
            setattr(sizes, attr, getattr(args, arg))
    return sizes


def build_peers(args, env) -> tuple[list, list[str]]:
    peers, skipped = [], []
    for library in args.only:
        missing = [m for m in NEEDS.get(library, ()) if importlib.util.find_spec(m) is None]
        if library == "dramatiq" and args.broker == "amqp" and not importlib.util.find_spec("pika"):
            missing.append("pika")
        if missing:
            skipped.append(f"{library}: not installed ({', '.join(missing)}); "
                           "pip install -e '.[bench]'")
            continue
        if library == "jobs":
            from bench.peers.jobs_peer import JobsPeer

            peers += [JobsPeer(env), JobsPeer(env, ignore_result=True),
                      JobsPeer(env, track_started=False)]
        elif library == "raw":
            from bench.peers import raw_peer

            peers.append({"redis": raw_peer.RawRedisPeer, "amqp": raw_peer.RawAmqpPeer,
                          "django": raw_peer.RawSqlPeer}[args.broker](env))
        elif library == "django-tasks":
            from bench.peers.dtdb_peer import DjangoTasksDbPeer

            peers.append(DjangoTasksDbPeer(env))
        elif library == "huey":
            from bench.peers.huey_peer import HueyPeer

            peers.append(HueyPeer(env))
        elif library == "celery":
            from bench.peers.celery_peer import CeleryPeer

            peers += [CeleryPeer(env, mode) for mode in ("off", "django-db", "redis")]
        elif library == "dramatiq":
            from bench.peers.dramatiq_peer import DramatiqPeer

            peers += [DramatiqPeer(env, threads=int(t))
                      for t in args.dramatiq_threads.split(",") if t.strip()]
    return peers, skipped


def section_name(args) -> str:
    """A full run replaces its broker's and database's section; a partial run has its own."""
    name = f"{args.broker}-{args.database}"
    if args.smoke:
        name += "-smoke"
    if args.only != list(BROKERS[args.broker]):
        name += "-" + "+".join(args.only)
    if args.figures != list(FIGURES):
        name += "-" + "+".join(args.figures)
    return name


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups below
    sizes = sizes_from(args)
    logs = Path(tempfile.mkdtemp(prefix="jobs-bench-"))
    from bench import report

    measured = report.revision()
    env = Environment(args.broker, args.database, logs)
    env.prepare()
    peers, skipped = build_peers(args, env)
    env.queues = {peer.queue for peer in peers}
    command = "python bench/run.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"bench {env.prefix}: broker {env.broker_url}, database {env.database_url}, "
          f"worker logs in {logs}", flush=True)
    bench = Bench(env, sizes, set(args.figures),
                  log=lambda line: print(line, flush=True))
    bench.results.notes.extend(f"Skipped {line}" for line in skipped)
    failed = []
    started = time.monotonic()
    # Round robin: each repetition measures every peer in turn, so that a machine whose
    # speed drifts during the run (shared hosts do, by a third within the hour) moves every
    # peer's figures alike, and the ratios of one run compare moments close together.
    steps = [(peer, bench.run_repetition, rep) for rep in range(sizes.repeat) for peer in peers]
    steps += [(peer, bench.run_scale) for peer in peers]
    broken = set()
    try:
        for peer, step, *rep in steps:
            if peer.label in broken:
                continue
            try:
                step(peer, *rep)
            except Exception as exc:
                traceback.print_exc()
                broken.add(peer.label)
                failed.append(f"{peer.label}: {type(exc).__name__}: {exc}".splitlines()[0])
    finally:
        try:
            env.cleanup()
        except Exception as exc:  # a server down at the end: its leftovers have our prefix
            print(f"cleanup incomplete: {exc}", file=sys.stderr)
    bench.results.notes.extend(f"FAILED {line}" for line in failed)

    body = report.render(bench, peers, sizes, command, args.broker, args.database)
    header = (f"{report.heading(args.broker, args.database)}\n\n"
              f"Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
              f"{time.monotonic() - started:,.0f} s.\n\n{report.machine(env, measured)}\n\n")
    print("\n" + header + body, flush=True)
    if args.write:
        report.write(args.write, section_name(args), header + body)
        print(f"written to {args.write}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
