"""The benchmark harness keeps working: ``bench/run.py --smoke`` runs every peer on tiny sizes.

The benchmark itself is run by hand (see BENCHMARKS.md); this only checks that it still runs
end to end — real workers of jobs, Celery and Dramatiq on Redis, results in PostgreSQL — and
prints its table. It needs the bench extra: ``pip install -e '.[bench]'``.
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

pytestmark = pytest.mark.e2e

PEERS = (
    "jobs (defaults, results in ORM)",
    "jobs, results off",
    "Celery, results off",
    "Celery, django-celery-results",
    "Celery, Redis results",
    "Dramatiq -p 2 -t 1",
    "Dramatiq -p 2 -t 8",
)
BENCH_MODULES = ("celery", "django_celery_results", "dramatiq", "psutil")
TIMEOUT = 120  # it takes about 50 s here


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


def run_smoke(database_url: str) -> tuple[int, str]:
    env = {**os.environ, "BENCH_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--broker", "redis"],
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


def test_the_smoke_benchmark_runs_every_peer_and_prints_the_table(bench_database):
    require("redis")
    require("postgres")
    require_bench_extra()

    code, output = run_smoke(bench_database)

    assert code == 0, output[-5000:]
    assert "| peer | results | enqueue, jobs/s |" in output, output[-5000:]
    rows = [line for line in output.splitlines() if line.startswith("| ")]
    for peer in PEERS:
        assert any(row.startswith(f"| {peer} |") for row in rows), f"no row for {peer}:\n{output}"
    assert "| jobs / Celery |" in output and "| jobs / Dramatiq |" in output
    assert "chord, s to body" in output and "chord, time to body (Celery: Redis results)" \
        in output, output[-5000:]
