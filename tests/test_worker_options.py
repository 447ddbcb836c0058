"""jobs_worker's options for running under a supervisor: --pidfile, --logfile (reopened on
SIGHUP, as logrotate expects), --autoscale MAX,MIN. Real worker processes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jobs.models import JobRecord
from jobs.testing import running_worker
from tests.conftest import wait_for
from tests.jobs_app import jobs as test_jobs

pytestmark = pytest.mark.e2e
database = pytest.mark.parametrize("broker_url", ["django"], indirect=True)


# --pidfile ----------------------------------------------------------------------------------


@database
def test_the_pidfile_holds_the_workers_pid_and_is_removed_when_it_stops(
        broker_url, start_worker, tmp_path):
    path = tmp_path / "worker.pid"
    worker = start_worker(broker_url, "-P", "solo", "--pidfile", str(path))

    assert path.read_text().strip() == str(worker.process.pid)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert not path.exists()


@database
def test_a_second_worker_refuses_a_pidfile_naming_a_running_worker(
        broker_url, start_worker, tmp_path):
    path = tmp_path / "worker.pid"
    first = start_worker(broker_url, "-P", "solo", "--pidfile", str(path))

    second = start_worker(broker_url, "-P", "solo", "--pidfile", str(path), ready=False)

    assert second.wait() != 0
    assert f"names process {first.process.pid}, which is running" in second.output
    assert path.read_text().strip() == str(first.process.pid)
    assert first.process.poll() is None


@database
def test_a_pidfile_left_by_a_dead_worker_is_taken_over(broker_url, start_worker, tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    path = tmp_path / "worker.pid"
    path.write_text(f"{gone.pid}\n")

    worker = start_worker(broker_url, "-P", "solo", "--pidfile", str(path))

    assert path.read_text().strip() == str(worker.process.pid)


# --logfile ----------------------------------------------------------------------------------


@database
def test_the_log_goes_to_the_logfile_and_sighup_reopens_it_after_rotation(
        broker_url, start_worker, tmp_path):
    log = tmp_path / "worker.log"
    worker = start_worker(broker_url, "-P", "threads", "-c", "1", "--logfile", str(log),
                          ready=False)
    wait_for(lambda: log.exists() and "consuming from" in log.read_text(),
             message="the worker did not log its start to --logfile")
    assert "consuming from" not in worker.output  # the log went to the file only

    rotated = log.rename(tmp_path / "worker.log.1")  # as logrotate does
    worker.signal(signal.SIGHUP)
    wait_for(log.exists, message="SIGHUP did not reopen the logfile")

    handle = test_jobs.leave_mark.delay(str(tmp_path), 1)
    assert handle.get(timeout=20) == 1
    wait_for(lambda: handle.id in log.read_text(), message="the job's line is not in the new file")
    assert handle.id not in rotated.read_text()
    assert worker.process.poll() is None


# --autoscale --------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def quick_keepalive(monkeypatch):
    monkeypatch.setenv("JOBS_SETTINGS", json.dumps({"WORKER_AUTOSCALE_KEEPALIVE": 0.5}))


@database
def test_autoscale_forks_children_while_jobs_wait_and_lets_them_go_when_idle(
        broker_url, start_worker, tmp_path, quick_keepalive):
    worker = start_worker(broker_url, "-P", "prefork", "--autoscale", "3,1")
    assert len(children(worker.process.pid)) == 1

    handles = [test_jobs.leave_mark.delay(str(tmp_path), i, seconds=1.5) for i in range(3)]

    assert [h.get(timeout=30) for h in handles] == [0, 1, 2]
    pids = {(tmp_path / str(i)).read_text().strip() for i in range(3)}
    assert len(pids) == 3  # the three ran side by side, each in a child of its own
    wait_for(lambda: len(children(worker.process.pid)) == 1, timeout=20,
             message="the pool did not shrink back to one child")
    assert "Autoscale: prefork pool from 3 to 2" in worker.output


@database
def test_autoscale_adds_threads_while_jobs_wait_and_ends_them_when_idle(
        broker_url, start_worker, tmp_path, quick_keepalive):
    worker = start_worker(broker_url, "-P", "threads", "--autoscale", "4,1")
    started = time.monotonic()

    handles = [test_jobs.leave_mark.delay(str(tmp_path), i, seconds=2) for i in range(4)]

    assert [h.get(timeout=30) for h in handles] == [0, 1, 2, 3]
    rows = JobRecord.objects.filter(job_id__in=[h.id for h in handles])
    first_end = min(row.date_done for row in rows)
    last_start = max(row.date_started for row in rows)
    assert last_start < first_end  # all four ran at once
    assert time.monotonic() - started < 7  # one thread would take 8 s
    wait_for(lambda: "Autoscale: threads pool from 2 to 1" in worker.output, timeout=20,
             message="the pool did not shrink back to one thread")


def test_autoscale_is_refused_for_the_solo_pool_and_bad_bounds(transactional_db):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="prefork or threads"):
        call_command("jobs_worker", "-P", "solo", "--autoscale", "4,1")
    with pytest.raises(CommandError, match="MAX,MIN"):
        call_command("jobs_worker", "-P", "threads", "--autoscale", "1,4")


@database
def test_a_worker_named_like_a_running_one_is_warned(broker_url, caplog):
    with caplog.at_level("WARNING", logger="jobs.worker"):
        with running_worker(hostname="twin@test"), running_worker(hostname="twin@test"), \
                running_worker(hostname="other@test"):
            pass
    warned = [r.getMessage() for r in caplog.records if "Another worker named" in r.getMessage()]
    assert len(warned) == 1
    assert "twin@test" in warned[0] and "-n worker2@%h" in warned[0]
