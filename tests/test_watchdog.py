"""The watchdog: a worker whose main loop is stuck exits non-zero so its supervisor restarts
it, and its jobs are delivered again; under systemd it reports through the notify socket.
Real worker processes, their loop frozen by a test middleware (SIGUSR2)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest

from jobs.middleware.watchdog import WATCHDOG_EXIT
from tests.jobs_app import jobs as test_jobs

pytestmark = pytest.mark.e2e
FREEZE = "tests.jobs_app.middleware.FreezeOnSignal"


@pytest.fixture
def frozen_on_sigusr2(monkeypatch):
    monkeypatch.setenv("JOBS_EXTRA_MIDDLEWARE", json.dumps([FREEZE]))


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_a_worker_whose_loop_is_stuck_exits_and_its_job_is_delivered_again(
        broker_url, start_worker, frozen_on_sigusr2, monkeypatch, tmp_path):
    monkeypatch.setenv("JOBS_SETTINGS", json.dumps({"WORKER_WATCHDOG_TIMEOUT": 2}))
    stuck = start_worker(broker_url, "-P", "threads", "-c", "1")
    handle = test_jobs.stall_once.delay(str(tmp_path))
    wait_for_file(tmp_path / "started")

    stuck.signal(signal.SIGUSR2)

    assert stuck.wait(timeout=20) == WATCHDOG_EXIT
    assert "main loop made no progress" in stuck.output
    assert "_freeze" in stuck.output  # where the loop was stuck
    start_worker(broker_url, "-P", "threads", "-c", "1")
    assert handle.get(timeout=30) == "again"


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_a_long_job_in_the_solo_pool_is_not_a_stuck_loop(
        broker_url, start_worker, monkeypatch, tmp_path):
    """The solo pool runs a job in the loop itself: the loop waits for it, and is not stuck."""
    monkeypatch.setenv("JOBS_SETTINGS", json.dumps({"WORKER_WATCHDOG_TIMEOUT": 1}))
    worker = start_worker(broker_url, "-P", "solo")

    assert test_jobs.leave_mark.delay(str(tmp_path), 1, seconds=3).get(timeout=30) == 1
    assert worker.process.poll() is None
    assert "made no progress" not in worker.output


@pytest.fixture
def notify_socket(monkeypatch):
    """A datagram socket standing in for systemd's, named in NOTIFY_SOCKET."""
    folder = Path(tempfile.mkdtemp(prefix="jobs-notify-"))  # short: AF_UNIX paths are
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def receive(sock, timeout: float) -> str | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode()
    except TimeoutError:
        return None


def wait_for_datagram(sock, wanted: str, timeout: float = 30) -> list[str]:
    """The datagrams received up to and including the first holding ``wanted``."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        datagram = receive(sock, max(0.01, deadline - time.monotonic()))
        if datagram is None:
            break
        seen.append(datagram)
        if wanted in datagram.splitlines():
            return seen
    raise AssertionError(f"no {wanted} within {timeout}s; received {seen}")


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_under_systemd_the_worker_says_ready_and_pets_the_watchdog_while_its_loop_turns(
        broker_url, start_worker, notify_socket, frozen_on_sigusr2, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # WatchdogSec=1
    monkeypatch.setenv("JOBS_SETTINGS", json.dumps({"WORKER_WATCHDOG_TIMEOUT": 4}))
    worker = start_worker(broker_url, "-P", "threads", "-c", "1", ready=False)

    first = wait_for_datagram(notify_socket, "READY=1")
    assert "READY=1" in first[0].splitlines()  # nothing before it
    assert any(line.startswith("STATUS=consuming from") for line in first[0].splitlines())
    for _ in range(3):
        wait_for_datagram(notify_socket, "WATCHDOG=1", timeout=2)

    worker.signal(signal.SIGUSR2)
    # Pets already on their way, then silence: systemd would restart the worker.
    pets = [receive(notify_socket, 1.5) for _ in range(3)]
    assert pets[-1] is None, pets
    assert worker.wait(timeout=20) == WATCHDOG_EXIT


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_under_systemd_a_warm_shutdown_says_stopping(broker_url, start_worker, notify_socket):
    worker = start_worker(broker_url, "-P", "threads", "-c", "1", ready=False)
    wait_for_datagram(notify_socket, "READY=1")

    worker.signal(signal.SIGTERM)

    wait_for_datagram(notify_socket, "STOPPING=1")
    assert worker.wait(timeout=20) == 0


def wait_for_file(path: Path, timeout: float = 20) -> None:
    from tests.conftest import wait_for

    wait_for(path.exists, timeout=timeout, message=f"{path.name} did not appear")
