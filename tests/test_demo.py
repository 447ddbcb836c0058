"""The demo: its page, its JSON status, and the pieces of ``manage.py demo``."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth import authenticate
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobs.models import JobRecord, Message, States
from project.demo.management.commands import demo
from project.demo.views import SESSION_KEY
from tests import factories

pytestmark = pytest.mark.django_db

INDEX = "/"
STATUS = "/status.json"


@pytest.fixture
def eager(settings):
    settings.JOBS = {**settings.JOBS, "ALWAYS_EAGER": True}


@pytest.fixture
def database_broker(settings):
    settings.JOBS = {**settings.JOBS, "BROKER_URL": "django://"}


def flash(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# The page ------------------------------------------------------------------------------------


def test_page_renders_the_enqueue_buttons(client):
    response = client.get(INDEX)

    assert response.status_code == 200
    for action in ("add", "batch", "fail", "slow"):
        assert f'name="action" value="{action}"' in response.text
    assert 'name="csrfmiddlewaretoken"' in response.text


def test_page_links_to_the_admin(client):
    response = client.get(INDEX)

    assert f'href="{reverse("admin:index")}"' in response.text
    assert f'href="{reverse("admin:jobs_jobrecord_changelist")}"' in response.text


def test_page_polls_the_status_endpoint(client):
    response = client.get(INDEX)

    assert f'"{STATUS}"' in response.text
    assert "fetch(" in response.text


def test_page_loads_nothing_from_other_hosts(client):
    response = client.get(INDEX)

    assert "http://" not in response.text
    assert "https://" not in response.text


def test_page_shows_recent_jobs(client):
    factories.record(name=factories.ADD, state=States.SUCCESS, args=[2, 3], result=5)

    response = client.get(INDEX)

    assert '<span class="state state-success">SUCCESS</span>' in response.text
    assert "2, 3" in response.text


# Enqueueing ----------------------------------------------------------------------------------


def test_adding_one_job_redirects_back_and_remembers_its_id(client, eager):
    response = client.post(INDEX, {"action": "add"})

    assert response.status_code == 302
    assert response.url == INDEX
    remembered = client.session[SESSION_KEY]
    assert len(remembered) == 1
    assert remembered[0]["name"] == "project.demo.jobs.add"
    assert len(remembered[0]["id"]) == 36


def test_an_eager_job_shows_its_outcome(client, eager):
    client.post(INDEX, {"action": "add"})

    [job] = client.get(STATUS).json()["jobs"]
    x, y = client.session[SESSION_KEY][0]["args"]
    assert job["state"] == "SUCCESS"
    assert job["result"] == str(x + y)


def test_a_batch_enqueues_that_many_jobs(client, eager):
    response = client.post(INDEX, {"action": "batch", "count": "7"})

    assert flash(response) == ["Enqueued 7 add jobs."]
    assert len(client.session[SESSION_KEY]) == 7


def test_a_batch_of_more_than_a_thousand_is_refused(client, eager):
    response = client.post(INDEX, {"action": "batch", "count": "1001"})

    assert response.status_code == 302
    assert "1 to 1000" in flash(response)[0]
    assert SESSION_KEY not in client.session


def test_the_session_keeps_only_the_twenty_newest_jobs(client, eager):
    client.post(INDEX, {"action": "batch", "count": "30"})

    assert len(client.session[SESSION_KEY]) == 20


def test_a_failing_job_run_eagerly_is_reported_not_crashed(client, settings):
    settings.JOBS = {"ALWAYS_EAGER": True, "EAGER_PROPAGATES": True}
    response = client.post(INDEX, {"action": "fail"})

    assert response.status_code == 302
    assert flash(response) == ["Could not enqueue: ValueError: it went wrong"]


def test_an_unknown_action_is_refused(client, eager):
    response = client.post(INDEX, {"action": "format-disk"})

    assert flash(response) == ["Unknown action."]
    assert SESSION_KEY not in client.session


def test_enqueueing_needs_the_csrf_token():
    client = Client(enforce_csrf_checks=True)

    assert client.post(INDEX, {"action": "add"}).status_code == 403


def test_a_job_sent_to_the_broker_shows_as_pending(client, database_broker):
    client.post(INDEX, {"action": "slow"})

    [job] = client.get(STATUS).json()["jobs"]
    assert job["id"] == client.session[SESSION_KEY][0]["id"]
    assert job["state"] == "PENDING"
    assert job["name"] == "sleep_then_add"
    assert job["args"].startswith("3, ")
    assert Message.objects.count() == 1


# The status endpoint -------------------------------------------------------------------------


def test_status_lists_recorded_jobs_with_their_states(client):
    now = timezone.now()
    factories.record(job_id="ok", name=factories.ADD, state=States.SUCCESS, args=[1, 2],
                     result=3, runtime=0.25, date_created=now - timedelta(seconds=2))
    factories.record(
        job_id="bad", name="project.demo.jobs.fail", state=States.FAILURE, args=[],
        result={"exc_type": "ValueError", "exc_module": "builtins",
                "exc_message": ["it went wrong"]},
        date_created=now - timedelta(seconds=1),
    )

    response = client.get(STATUS)

    assert response["Content-Type"] == "application/json"
    jobs = response.json()["jobs"]
    assert [(j["id"], j["state"], j["result"]) for j in jobs] == [
        ("bad", "FAILURE", "ValueError: it went wrong"),
        ("ok", "SUCCESS", "3"),
    ]
    assert jobs[1]["args"] == "1, 2"
    assert jobs[1]["runtime"] == "250.0 ms"


def test_status_lists_at_most_the_twenty_newest_jobs(client):
    now = timezone.now()
    JobRecord.objects.bulk_create(
        JobRecord(job_id=f"job-{i:02}", date_created=now - timedelta(seconds=i))
        for i in range(25)
    )

    jobs = client.get(STATUS).json()["jobs"]

    assert [j["id"] for j in jobs] == [f"job-{i:02}" for i in range(20)]


def test_status_prefers_the_recorded_state_of_an_enqueued_job(client, database_broker):
    client.post(INDEX, {"action": "add"})
    job_id = client.session[SESSION_KEY][0]["id"]
    factories.record(job_id=job_id, name=factories.ADD, state=States.STARTED)

    jobs = client.get(STATUS).json()["jobs"]

    assert [(j["id"], j["state"]) for j in jobs] == [(job_id, "STARTED")]


def test_status_counts_workers_online_and_queued_messages(client, database_broker):
    factories.worker_row()
    factories.worker_row(stopped_at=timezone.now())
    client.post(INDEX, {"action": "batch", "count": "3"})

    data = client.get(STATUS).json()

    assert data["workers_online"] == 1
    assert data["queued"] == 3
    assert data["eager"] is False


# manage.py demo ------------------------------------------------------------------------------


def test_ensure_admin_gives_a_password_that_logs_in():
    password = demo.ensure_admin()

    user = authenticate(username="admin", password=password)
    assert user is not None
    assert user.is_superuser and user.is_staff


def test_ensure_admin_makes_a_new_password_each_time():
    first = demo.ensure_admin()
    second = demo.ensure_admin()

    assert first != second
    assert authenticate(username="admin", password=first) is None
    assert authenticate(username="admin", password=second) is not None


def test_demo_runs_a_worker_a_scheduler_and_a_local_web_server_with_this_interpreter():
    worker, web, beat = demo.children(port=8123, concurrency=3)

    assert worker.argv[0] == web.argv[0] == beat.argv[0] == sys.executable
    assert worker.argv[-3:] == ["jobs_worker", "-c", "3"]
    assert web.argv[-3:] == ["runserver", "127.0.0.1:8123", "--noreload"]
    assert beat.argv[-1] == "jobs_beat"


@pytest.mark.parametrize("options", [{"port": 0}, {"port": 70000}, {"concurrency": 0}])
def test_demo_refuses_bad_options(options):
    with pytest.raises(CommandError):
        call_command("demo", **options)


def sleeper(name: str) -> demo.Child:
    return demo.Child(name, [sys.executable, "-c", "import time; time.sleep(60)"])


def test_when_one_process_exits_the_others_are_stopped_and_the_demo_fails():
    supervisor = demo.Supervisor(
        [sleeper("worker"), demo.Child("web server", [sys.executable, "-c", "exit(3)"])])

    with pytest.raises(CommandError, match="web server exited with code 3"):
        supervisor.run()

    assert supervisor.processes["worker"].returncode == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed(tmp_path):
    ready = tmp_path / "ready"
    stubborn = demo.Child("stubborn", [sys.executable, "-c", (
        "import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)")])
    supervisor = demo.Supervisor([stubborn], stop_timeout=0.5)
    supervisor.start()
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)

    supervisor.stop()

    assert supervisor.processes["stubborn"].returncode == -signal.SIGKILL


def test_sigterm_stops_the_demo_and_its_processes():
    supervisor = demo.Supervisor([sleeper("worker"), sleeper("web server")])

    def terminate_once_started():
        deadline = time.monotonic() + 10
        while len(supervisor.processes) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_started, daemon=True).start()
    supervisor.run()  # returns instead of raising: stopping on request is not a failure

    assert {p.returncode for p in supervisor.processes.values()} == {-signal.SIGTERM}
    assert signal.getsignal(signal.SIGTERM) is not demo._stop
