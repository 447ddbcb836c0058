"""``jobs_inspect`` and ``jobs_control`` against real worker processes, on every broker:
each command is broadcast, answered by every live worker by name, and acted on."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from jobs.control import broadcast
from jobs.management.commands.jobs_inspect import PARKED
from jobs.models import ControlMessage, ControlReply, JobRecord, Worker
from project.demo import jobs as demo
from tests.conftest import broker_params, pool_matrix, wait_for
from tests.jobs_app import jobs as testjobs

pytestmark = [pytest.mark.e2e, pytest.mark.long]
brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


def inspect(*args: str) -> dict:
    out = StringIO()
    call_command("jobs_inspect", *args, "--json", "--timeout", "5", stdout=out)
    return json.loads(out.getvalue())


def online_names() -> set[str]:
    return set(Worker.objects.online().values_list("hostname", flat=True))


def control(*args: str) -> dict:
    out = StringIO()
    call_command("jobs_control", *args, "--json", "--timeout", "5", stdout=out)
    return json.loads(out.getvalue())


@brokers
def test_every_live_worker_answers_by_name_within_a_second(broker_url, start_worker):
    start_worker(broker_url, "-c", "1", "-n", "one@control")
    start_worker(broker_url, "-c", "1", "-n", "two@control")
    # The broadcast waits for as many answers as there are workers online: these two.
    both = {"one@control", "two@control"}
    online = wait_for(lambda: (names := online_names()) == both and names,
                      message="the two workers are not both online")
    began = time.monotonic()
    answers = broadcast("ping", timeout=10)
    assert answers == {"one@control": "pong", "two@control": "pong"}
    # Back once every online worker has answered (within a second, unless the machine is
    # very busy), not after the timeout.
    assert time.monotonic() - began < 3, f"online before: {online}; now: {online_names()}"
    assert inspect("ping", "-d", "two@control") == {"two@control": "pong"}
    assert not ControlMessage.objects.exists() and not ControlReply.objects.exists()


@pool_matrix(("prefork", "threads"))
def test_inspect_reports_what_each_worker_holds(broker_url, pool, start_worker):
    start_worker(broker_url, "-P", pool, "-c", "1", "-n", "busy@control",
                 "--prefetch-multiplier", "2")
    running = testjobs.work.delay(0, seconds=30)
    wait_for(lambda: running.state == "STARTED", message="the job never started")
    waiting = testjobs.work.delay(1)
    wait_for(lambda: inspect("reserved")["busy@control"], message="nothing reserved")

    assert [job["id"] for job in inspect("active")["busy@control"]] == [running.id]
    reserved = inspect("reserved")["busy@control"]
    assert [(job["id"], job["name"], job["args"]) for job in reserved] == [
        (waiting.id, "tests.jobs_app.jobs.work", "(1,)")]
    assert inspect("scheduled") == {"busy@control": [], PARKED: []}
    assert "project.demo.jobs.add" in inspect("registered")["busy@control"]
    stats = inspect("stats")["busy@control"]
    assert stats["pool"]["max-concurrency"] == 1 and stats["pool"]["running"] == 1
    assert stats["queues"] == ["default", "other"]
    queues = inspect("active_queues")["busy@control"]
    assert [q["name"] for q in queues] == ["default", "other"]


@brokers
def test_scheduled_lists_the_jobs_held_until_due_and_those_parked_in_the_database(
        broker_url, start_worker):
    start_worker(broker_url, "-c", "1", "-n", "eta@control")
    soon = testjobs.work.apply_async((1,), countdown=0.8)
    later = testjobs.work.apply_async((2,), countdown=3600)
    assert soon.get(timeout=10) == 1
    parked = wait_for(lambda: inspect("scheduled")[PARKED], message="the job was never parked")
    assert [(job["id"], job["args"], job["queue"]) for job in parked] == [
        (later.id, "(2,)", "default")]
    assert later.state == "PENDING"


def test_the_table_names_each_worker_and_its_jobs(broker_url_django, start_worker):
    start_worker(broker_url_django, "-c", "1", "-n", "table@control")
    out = StringIO()
    call_command("jobs_inspect", "active_queues", stdout=out)
    assert out.getvalue().splitlines()[:2] == [
        "table@control: 2", "  name     exchange  exchange_type  routing_key"]
    out = StringIO()
    call_command("jobs_inspect", "ping", stdout=out)
    assert out.getvalue().strip() == "table@control: pong"


@pytest.fixture
def broker_url_django(settings, transactional_db):
    return "django://"


def test_no_answer_is_an_error(transactional_db):
    with pytest.raises(CommandError, match="No worker answered ping within 0.3s"):
        call_command("jobs_inspect", "ping", "--timeout", "0.3")


@brokers
def test_a_revoked_job_is_refused_by_a_worker_told_at_once(broker_url, start_worker, tmp_path):
    start_worker(broker_url, "-c", "1", "-n", "rev@control")
    job_id = "revoked-by-control"
    answers = control("revoke", job_id)
    assert answers == {"rev@control": {"ok": f"revoked {job_id}"}}
    assert inspect("revoked")["rev@control"] == [job_id]
    testjobs.leave_mark_quietly.apply_async((str(tmp_path), 1), job_id=job_id)
    after = testjobs.leave_mark.delay(str(tmp_path), 2, 0)
    assert after.get(timeout=30) == 2
    assert not (tmp_path / "1").exists()
    assert JobRecord.objects.get(job_id=job_id).state == "REVOKED"


@brokers
def test_terminate_stops_a_running_job(broker_url, start_worker):
    start_worker(broker_url, "-c", "1", "-n", "term@control")
    handle = testjobs.work.delay(0, seconds=60)
    wait_for(lambda: handle.state == "STARTED", message="the job never started")
    answers = control("terminate", handle.id)
    # It stops the job now, unless its heartbeat read the revocation a moment before.
    assert answers["term@control"]["ok"] in (f"terminated {handle.id}", f"revoked {handle.id}")
    after = demo.add.delay(1, 2)
    assert after.get(timeout=10) == 3  # its slot is free: the job was stopped
    assert JobRecord.objects.get(job_id=handle.id).state == "REVOKED"


@brokers
def test_shutdown_stops_the_worker(broker_url, start_worker):
    worker = start_worker(broker_url, "-c", "1", "-n", "bye@control")
    assert control("shutdown") == {"bye@control": {"ok": "shutting down"}}
    assert worker.wait(20) == 0


@brokers
def test_a_queue_paused_cluster_wide_runs_nothing_until_resumed(broker_url, start_worker):
    start_worker(broker_url, "-c", "1", "-n", "a@control")
    start_worker(broker_url, "-c", "1", "-n", "b@control")
    answers = control("cancel_consumer", "other")
    assert answers == {name: {"ok": "no longer consuming from other"}
                       for name in ("a@control", "b@control")}
    paused = testjobs.on_other_queue.delay(7)
    assert demo.add.delay(1, 1).get(timeout=10) == 2  # the default queue still runs
    assert [q["name"] for q in inspect("active_queues")["a@control"]] == ["default"]
    assert paused.state == "PENDING"

    answers = control("add_consumer", "other")
    assert answers == {name: {"ok": "consuming from other"} for name in ("a@control", "b@control")}
    assert paused.get(timeout=10) == 14


@brokers
def test_rate_and_time_limits_change_in_live_workers(broker_url, start_worker):
    start_worker(broker_url, "-c", "2", "-n", "limits@control")
    name = "tests.jobs_app.jobs.work"
    assert control("rate_limit", name, "1/h") == {
        "limits@control": {"ok": f"new rate limit for {name}: 1/h"}}
    first, held = testjobs.work.delay(1), testjobs.work.delay(2)
    first.get(timeout=10)
    wait_for(lambda: [j["id"] for j in inspect("reserved")["limits@control"]] == [held.id])
    assert held.state == "PENDING"
    control("rate_limit", name, "0")
    assert held.get(timeout=10) == 2

    control("time_limit", name, "0.5", "10")
    slow = testjobs.work.delay(3, seconds=30)
    wait_for(lambda: slow.state == "FAILURE", timeout=15, message="the soft limit never hit")
    assert JobRecord.objects.get(job_id=slow.id).result["exc_type"] == "SoftTimeLimitExceeded"

    bad = broadcast("rate_limit", {"job_name": name, "rate": "fast"}, timeout=5)
    assert bad == {"limits@control": {"error": "ValueError: 'fast' is not a rate; write it as "
                                               "'10/s', '100/m' or '1000/h'"}}
    unknown = control("time_limit", "no.such.job", "1")
    assert unknown == {"limits@control": {"error": "NotRegistered: unregistered job "
                                                   "'no.such.job' — is the module imported by "
                                                   "this worker?"}}


def test_a_solo_worker_says_its_pool_has_a_fixed_size(start_worker):
    start_worker("django://", "-P", "solo", "-n", "solo@control")
    assert control("pool_grow") == {
        "solo@control": {"error": "NotImplementedError: the solo pool has a fixed size"}}


@brokers
def test_the_pool_grows_and_shrinks(broker_url, start_worker):
    start_worker(broker_url, "-c", "1", "-n", "pool@control")
    assert control("pool_grow", "2") == {
        "pool@control": {"ok": "pool now runs up to 3 jobs at once"}}
    assert inspect("stats")["pool@control"]["pool"]["max-concurrency"] == 3
    control("pool_shrink")
    wait_for(lambda: inspect("stats")["pool@control"]["pool"]["max-concurrency"] == 2)


@brokers
def test_a_job_revoked_while_every_worker_was_down_never_runs(broker_url, start_worker,
                                                              tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    quiet = testjobs.leave_mark_quietly.delay(str(marks), 1)
    tracked = testjobs.leave_mark.delay(str(marks), 2, 0)
    out = StringIO()
    call_command("jobs_control", "revoke", quiet.id, tracked.id, "--timeout", "0.2", stdout=out)
    assert out.getvalue().startswith("Revoked 2 job(s); no worker answered")
    # Long before the workers come back.
    JobRecord.objects.filter(job_id__in=[quiet.id, tracked.id]).update(
        date_done=timezone.now() - timedelta(hours=3))
    after = testjobs.leave_mark.delay(str(marks), 3, 0)

    start_worker(broker_url, "-c", "1", "-n", "late@control")
    assert after.get(timeout=30) == 3
    assert sorted(p.name for p in marks.iterdir()) == ["3"]
    assert set(JobRecord.objects.filter(job_id__in=[quiet.id, tracked.id])
               .values_list("state", flat=True)) == {"REVOKED"}


def queue_control(action: str, queue: str) -> str:
    return reverse("admin:jobs_jobrecord_queue_control", args=[action, queue])


def test_the_dashboard_pauses_and_resumes_a_queue_on_every_worker(admin_client, start_worker):
    start_worker("django://", "-c", "1", "-n", "dash@control")
    start_worker("django://", "-c", "1", "-n", "elsewhere@control", "-Q", "default")
    data = admin_client.get(reverse("admin:jobs_jobrecord_dashboard_data")).json()
    row = next(q for q in data["queues"]["rows"] if q["name"] == "other")
    assert row["pause_url"] == queue_control("pause", "other")
    assert row["consumers"] == 1

    response = admin_client.post(row["pause_url"], follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        "Pause other: dash@control: no longer consuming from other; "
        "elsewhere@control: not consuming from other"]
    paused = testjobs.on_other_queue.delay(1)
    assert demo.add.delay(1, 1).get(timeout=10) == 2
    assert paused.state == "PENDING"
    assert consumers(admin_client, "other") == 0

    response = admin_client.post(row["resume_url"], follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        "Resume other: dash@control: consuming from other; "
        "elsewhere@control: other is not paused here"]
    assert paused.get(timeout=10) == 2
    queues = inspect("active_queues", "-d", "elsewhere@control")["elsewhere@control"]
    assert [q["name"] for q in queues] == ["default"]
    assert consumers(admin_client, "other") == 1


def consumers(client, queue: str) -> int:
    data = client.get(reverse("admin:jobs_jobrecord_dashboard_data")).json()
    return next(q["consumers"] for q in data["queues"]["rows"] if q["name"] == queue)


def test_pausing_a_queue_needs_the_change_permission_on_workers(staff_client):
    viewer = staff_client("view_jobrecord", "view_worker")
    assert viewer.post(queue_control("pause", "default")).status_code == 403
    data = viewer.get(reverse("admin:jobs_jobrecord_dashboard_data")).json()
    assert all("pause_url" not in q for q in data["queues"]["rows"])


def test_a_queue_is_paused_by_post_only(admin_client):
    assert admin_client.get(queue_control("pause", "default")).status_code == 405
    assert admin_client.post(queue_control("stop", "default")).status_code == 404


def test_a_command_with_the_wrong_arguments_says_how_to_call_it(transactional_db):
    with pytest.raises(CommandError, match=r"^usage: jobs_control time_limit JOB_NAME SOFT \[HARD\]$"):
        call_command("jobs_control", "time_limit", "tests.jobs_app.jobs.work")
    with pytest.raises(CommandError, match=r"^n must be a number, not 'many'$"):
        call_command("jobs_control", "pool_grow", "many")
    assert not ControlMessage.objects.exists()  # nothing was sent
