"""The benchmark harness keeps working: ``bench/run.py --smoke`` runs every peer on tiny sizes.

The benchmark itself is run by hand (see BENCHMARKS.md); this only checks that each broker's
run still goes end to end, with real workers of jobs and of each peer, and prints its tables:
on Redis (Celery, Dramatiq, Huey, raw LPUSH; results in PostgreSQL), on ``django://`` with
PostgreSQL and with SQLite (django-tasks-db, Huey's storage, raw INSERT), and on RabbitMQ
(Dramatiq through pika, raw ``basic_publish``). It needs the bench extra:
``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import uuid

import pytest

from tests.conftest import IN_CI, ROOT, require

pytestmark = [pytest.mark.e2e, pytest.mark.long]

JOBS = ("jobs (defaults, results in ORM)", "jobs, results off",
        "jobs, STARTED untracked (`TASK_TRACK_STARTED = False`)")
RUNS = {
    "redis": (["--broker", "redis"], ("redis", "postgres"), (
        "raw redis-py LPUSH", *JOBS,
        "Celery, results off", "Celery, django-celery-results", "Celery, Redis results",
        "Dramatiq -p 2 -t 1", "Dramatiq -p 2 -t 8", "Huey -w 2 -k process, Redis storage",
    ), ("| jobs / Celery |", "| jobs / Dramatiq |", "| jobs / Huey |", "chord, s to body",
        "chord, time to body (Celery: Redis results)",
        "| bulk enqueue, `delay_many` (raw: one command per message, pipelined) | jobs |")),
    "django-postgres": (["--broker", "django", "--figures", "enqueue,drain,roundtrip"],
                        ("redis", "postgres"), (
        "raw psycopg INSERT", *JOBS, "django-tasks-db, 2 × db_worker",
        "Huey -w 2 -k process, PostgreSQL storage",
    ), ("| jobs / django-tasks-db |", "| jobs / Huey |")),
    "django-sqlite": (["--broker", "django", "--database", "sqlite", "--figures",
                       "enqueue,drain,roundtrip"], ("redis",), (
        "raw sqlite3 INSERT", *JOBS, "django-tasks-db, 2 × db_worker",
        "Huey -w 2 -k process, SQLite storage",
    ), ("| jobs / django-tasks-db |", "| jobs / Huey |")),
    "amqp": (["--broker", "amqp", "--only", "raw,jobs,dramatiq", "--figures", "enqueue,drain",
              "--dramatiq-threads", "1"], ("redis", "rabbitmq", "postgres"), (
        "raw py-amqp basic_publish", *JOBS, "Dramatiq -p 2 -t 1",
    ), ("| jobs / Dramatiq | drain, results off |",)),
}
BENCH_MODULES = ("celery", "django_celery_results", "dramatiq", "psutil", "django_tasks_db",
                 "huey", "pika")
TIMEOUT = 240  # the Redis run takes 50-115 s here (two busy cores), the others less


def require_bench_extra() -> None:
    missing = [m for m in BENCH_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return
    message = f"the bench extra is not installed ({', '.join(missing)}): pip install -e '.[bench]'"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def bench_database():
    """A database of its own, so the smoke run never meets a real run or another test."""
    url = f"postgres://postgres@127.0.0.1:5432/bench_smoke_{uuid.uuid4().hex[:8]}"
    yield url
    from bench.environment import drop_database

    drop_database(url)


def run_smoke(args: list[str], database_url: str | None = None) -> tuple[int, str]:
    """Run the harness (with ``--database sqlite`` its database is a file of the run's)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if database_url:
        env["BENCH_DATABASE_URL"] = database_url
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the harness stops its workers and cleans up
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"bench/run.py --smoke took more than {TIMEOUT}s:\n{output[-5000:]}")
    return process.returncode, output


@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.parametrize("run", list(RUNS))
def test_the_smoke_benchmark_runs_every_peer_and_prints_the_table(run, request):
    args, services, peers, expected = RUNS[run]
    for service in services:
        require(service)
    require_bench_extra()
    database = request.getfixturevalue("bench_database") if "postgres" in services else None

    code, output = run_smoke(args, database)

    assert code == 0, output[-5000:]
    assert "| peer | results | enqueue, jobs/s |" in output, output[-5000:]
    rows = [line for line in output.splitlines() if line.startswith("| ")]
    for peer in peers:
        row = next((row for row in rows if row.startswith(f"| {peer} |")), None)
        assert row is not None, f"no row for {peer}:\n{output}"
        figures = [c.strip() for c in row.split("|")[3:-1]]
        assert any(f not in ("", "–") for f in figures), f"no figure measured: {row}"
    for text in expected:
        assert text in output, f"{text!r} missing:\n{output[-5000:]}"
    # jobs' enqueue as a share of the raw client's, measured in the same run.
    assert "| enqueue, one call per job (raw: one command or INSERT per job) | jobs |" in output


@pytest.mark.timeout(TIMEOUT + 60)
def test_the_worker_memory_is_given_as_pss_beside_rss():
    """PSS splits the pages a prefork parent shares with its children: it must be a real
    figure, below the summed RSS, not a zero from a /proc file that could not be read."""
    require("redis")
    require_bench_extra()

    code, output = run_smoke(["--broker", "django", "--database", "sqlite", "--only", "jobs",
                              "--figures", "drain"])

    assert code == 0, output[-5000:]
    header = next(line for line in output.splitlines() if line.startswith("| peer |"))
    columns = [c.strip() for c in header.split("|")]
    row = next(line for line in output.splitlines() if line.startswith("| jobs, results off |"))
    cells = [c.strip() for c in row.split("|")]
    rss = float(cells[columns.index("worker peak RSS, MB")].replace(",", ""))
    pss = float(cells[columns.index("worker peak PSS, MB")].replace(",", ""))
    assert 0 < pss < rss, row


@pytest.mark.timeout(TIMEOUT)
def test_the_bounds_of_the_database_are_measured(bench_database):
    """bench/bounds.py: what PostgreSQL alone takes for a job's writes, each figure a rate,
    and a round trip through Redis and PostgreSQL alone, in milliseconds."""
    require("postgres")
    require("redis")
    require_bench_extra()
    env = {**os.environ, "BENCH_DATABASE_URL": bench_database}
    env.pop("DJANGO_SETTINGS_MODULE", None)

    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bounds.py"), "--n", "40",
                           "--repeat", "1", "--roundtrips", "10"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)

    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 6, done.stdout
    for row in rows:
        figure = row.split("|")[2].split()[0].replace(",", "")
        assert float(figure) > 0, row
    assert rows[-1].startswith("| round trip") and " ms p50 " in rows[-1], rows[-1]


def test_the_bounds_round_trip_listens_where_jobs_notifies():
    # bench/bounds.py runs without Django, so it has its own copy of the channel's name.
    from bench import bounds
    from jobs.results import result_channel

    for job_id in ("bounds-1", "0c6b2a4e-1f7e-4c1e-9f43-0b8f6ad0f3b1"):
        assert bounds.result_channel(job_id) == result_channel(job_id)


def test_the_memory_floor_is_an_idle_tree_of_three_processes_below_the_worker():
    """``bench/memory.py``'s floor: a parent and two forked children that only loaded Django
    (and then the worker's modules), measured as the worker is; the worker is above it."""
    require("redis")
    require("postgres")
    require_bench_extra()
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "BENCH_DATABASE_URL": "postgres://postgres@127.0.0.1:5432/bench_memory_smoke"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "memory.py"), "--only", "floor,floor-worker,jobs-off",
         "--jobs", "10", "--settle", "0.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = {line.split(" RSS ")[0].strip(): float(line.split("PSS")[1].split()[0])
               for line in done.stdout.splitlines() if " PSS " in line and "USS" not in line}
    assert list(figures) == ["floor: Django set up, 3 processes idle",
                             "floor: and jobs' worker modules", "jobs, results off"]
    floor, with_worker, worker = figures.values()
    assert 0 < floor <= with_worker < worker
    roles = [line.split()[0] for line in done.stdout.splitlines() if "USS" in line]
    assert roles == ["main", "child", "child"] * 3


def test_a_peer_figure_too_small_to_measure_gives_no_ratio():
    # A tiny run can measure a peer's worker CPU as 0.0 s: its ratio is left out, where it
    # divided by zero and the run ended without its table.
    from bench.report import ratios

    text = ratios({"jobs-off": {"cpu": [0.2], "drain": [100.0]},
                   "celery-off": {"cpu": [0.0], "drain": [50.0]}})
    assert "drain, results off | jobs-off | celery-off | **2.00** |" in text
    assert "worker CPU per job, results off" not in text
