"""The monitoring dashboard: its numbers, its JSON endpoint, and who may see them."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse

from jobs.admin import dashboard, stats
from jobs.broker import get_broker
from jobs.models import JobRecord, States
from project.demo import jobs as demo
from tests import factories
from tests.conftest import broker_params, wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.pg]

NOW = datetime(2025, 3, 4, 12, 30, 20, tzinfo=UTC)
DASHBOARD = "admin:jobs_jobrecord_dashboard"
DATA = "admin:jobs_jobrecord_dashboard_data"


def finished(name="shop.jobs.charge", state=States.SUCCESS, ago=60.0, runtime=0.5, **fields):
    done = NOW - timedelta(seconds=ago)
    return factories.record(name=name, state=state, date_done=done, runtime=runtime,
                            date_created=done - timedelta(seconds=runtime + 1), **fields)


def minute(index_from_now: int) -> int:
    """The chart's index of the minute ``index_from_now`` minutes before NOW's."""
    return stats.WINDOW_MINUTES - 1 - index_from_now


@pytest.fixture(autouse=True)
def fresh_cache():
    """The counts of finished minutes are cached; each test starts without them."""
    cache.clear()
    yield
    cache.clear()


# Jobs per minute -----------------------------------------------------------------------------


def test_jobs_are_counted_in_the_minute_they_finished():
    finished(ago=5 * 60)
    finished(ago=5 * 60 + 10)
    finished(state=States.FAILURE, ago=5 * 60)
    finished(ago=0)

    series = dashboard.snapshot(NOW)["throughput"]

    assert series["succeeded"][minute(5)] == 2
    assert series["failed"][minute(5)] == 1
    assert series["succeeded"][minute(0)] == 1
    assert len(series["succeeded"]) == 60


def test_jobs_that_finished_over_an_hour_ago_are_not_counted():
    finished(ago=61 * 60)
    finished(state=States.FAILURE, ago=2 * 3600)

    totals = dashboard.snapshot(NOW)["totals"]

    assert (totals["succeeded"], totals["failed"]) == (0, 0)


def test_a_finished_minute_is_counted_once_then_read_from_the_cache():
    finished(ago=5 * 60)
    dashboard.snapshot(NOW)
    JobRecord.objects.all().delete()

    series = dashboard.snapshot(NOW)["throughput"]

    assert series["succeeded"][minute(5)] == 1


def test_the_current_minute_is_counted_afresh_each_time():
    dashboard.snapshot(NOW)
    finished(ago=0)

    series = dashboard.snapshot(NOW)["throughput"]

    assert series["succeeded"][minute(0)] == 1


def test_revoked_and_unfinished_jobs_are_not_counted_as_succeeded_or_failed():
    finished(state=States.REVOKED, ago=60)
    factories.record(state=States.STARTED, date_started=NOW - timedelta(seconds=30))

    totals = dashboard.snapshot(NOW)["totals"]

    assert (totals["succeeded"], totals["failed"]) == (0, 0)


def test_retried_counts_jobs_finished_after_a_retry_and_jobs_waiting_for_one():
    finished(ago=3 * 60, retries=2)
    finished(state=States.FAILURE, ago=3 * 60, retries=3)
    finished(ago=3 * 60)
    factories.record(state=States.RETRY, retries=1, date_started=NOW - timedelta(minutes=7))

    snapshot = dashboard.snapshot(NOW)

    assert snapshot["throughput"]["retried"][minute(3)] == 2
    assert snapshot["throughput"]["retried"][minute(7)] == 1
    assert snapshot["totals"]["retried"] == 3


# Slowest and most failing jobs ------------------------------------------------------------


def test_percentiles_interpolate_between_neighbours():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]

    assert stats.percentile(values, 0.5) == 6.0
    assert stats.percentile(values, 0.95) == pytest.approx(10.5)
    assert stats.percentile([], 0.5) is None


def test_slowest_jobs_are_ranked_by_their_p95_runtime():
    for runtime in (0.1, 0.2, 0.3, 0.4, 5.0):
        finished("shop.jobs.spiky", runtime=runtime)
    for runtime in (1.0, 1.0, 1.0):
        finished("shop.jobs.steady", runtime=runtime)

    slowest = dashboard.snapshot(NOW)["slowest"]

    assert [row["name"] for row in slowest] == ["shop.jobs.spiky", "shop.jobs.steady"]
    spiky = slowest[0]
    assert (spiky["runs"], spiky["p50"], spiky["max"]) == (5, 0.3, 5.0)
    assert spiky["p95"] == pytest.approx(4.08)
    assert (spiky["p50_text"], spiky["p95_text"]) == ("300 ms", "4.08 s")


def test_slowest_jobs_leave_out_runs_outside_the_window():
    finished("shop.jobs.report", runtime=100.0, ago=2 * 3600)
    finished("shop.jobs.report", runtime=2.0)

    [row] = dashboard.snapshot(NOW)["slowest"]

    assert (row["name"], row["runs"], row["max"]) == ("shop.jobs.report", 1, 2.0)


def test_most_failing_jobs_show_failures_runs_and_rate():
    for state in (States.FAILURE, States.FAILURE, States.SUCCESS, States.SUCCESS):
        finished("shop.jobs.charge", state=state)
    finished("shop.jobs.refund", state=States.FAILURE)
    finished("shop.jobs.ship")

    failing = dashboard.snapshot(NOW)["failing"]

    assert [(row["name"], row["failed"], row["runs"], row["rate"]) for row in failing] == [
        ("shop.jobs.charge", 2, 4, 50.0), ("shop.jobs.refund", 1, 1, 100.0)]


# Running jobs, workers and queues -----------------------------------------------------------


def test_running_jobs_show_their_runtime_so_far_longest_first():
    factories.record(job_id="short", name="shop.jobs.a", state=States.STARTED, worker="jobs@a",
                     date_started=NOW - timedelta(seconds=3))
    factories.record(job_id="long", name="shop.jobs.b", state=States.STARTED, worker="jobs@b",
                     date_started=NOW - timedelta(seconds=125))

    snapshot = dashboard.snapshot(NOW)

    assert [(job["job_id"], job["runtime_text"]) for job in snapshot["running"]] == [
        ("long", "2 min 5 s"), ("short", "3.00 s")]
    assert snapshot["totals"]["running"] == 2


def test_running_jobs_list_the_first_ten_and_count_them_all():
    JobRecord.objects.bulk_create(
        JobRecord(job_id=f"run-{i}", state=States.STARTED, date_started=NOW) for i in range(12))

    snapshot = dashboard.snapshot(NOW)

    assert len(snapshot["running"]) == 10
    assert snapshot["totals"]["running"] == 12


def test_workers_online_show_queues_pool_concurrency_load_and_heartbeat():
    now = datetime.now(UTC)
    factories.worker_row(hostname="jobs@alive", queues=["default", "mail"], pool="prefork",
                         concurrency=4, active=3, processed=120,
                         last_seen=now - timedelta(seconds=2))
    factories.worker_row(hostname="jobs@gone", pool="threads", concurrency=8, stopped_at=now)

    [worker] = dashboard.snapshot(now)["workers"]

    assert {key: worker[key] for key in ("hostname", "queues", "pool", "concurrency", "active",
                                         "load", "processed", "seen_ago")} == {
        "hostname": "jobs@alive", "queues": ["default", "mail"], "pool": "prefork",
        "concurrency": 4, "active": 3, "load": 75, "processed": 120, "seen_ago": 2.0}


def test_a_worker_that_waited_for_its_database_lately_says_how_long_and_until_when(settings):
    settings.TIME_ZONE = "UTC"
    now = datetime(2030, 1, 7, 9, 30, 0, tzinfo=UTC)
    factories.worker_row(hostname="jobs@waited", last_seen=now,
                         database_lost_at=now - timedelta(minutes=10, seconds=31),
                         database_back_at=now - timedelta(minutes=10))
    factories.worker_row(hostname="jobs@long-ago", last_seen=now,
                         database_lost_at=now - timedelta(hours=3, seconds=5),
                         database_back_at=now - timedelta(hours=3))

    workers = {w["hostname"]: w["database_wait"] for w in dashboard.snapshot(now)["workers"]}

    assert workers == {
        "jobs@waited": {"seconds": 31.0, "text": "31.00 s", "since": "2030-01-07 09:19:29",
                        "until": "2030-01-07 09:20:00"},
        "jobs@long-ago": None,
    }


def test_queue_depths_on_the_database_broker_count_ready_reserved_and_delayed():
    now = datetime.now(UTC)
    for fields in ({}, {}, {"lease_owner": "w", "lease_until": now + timedelta(seconds=30)},
                   {"visible_at": now + timedelta(hours=1)}):
        factories.message_row(queue="mail", **fields)

    queues = dashboard.snapshot(now)["queues"]

    assert queues["available"] is True
    assert {"name": "mail", "ready": 2, "reserved": 1, "delayed": 1, "consumers": 0} \
        in queues["rows"]


def test_queues_of_settings_and_workers_show_even_when_empty(settings):
    settings.JOBS = {**settings.JOBS, "TASK_ROUTES": {"shop.jobs.*": {"queue": "shop"}}}
    factories.worker_row(queues=["reports"])

    rows = dashboard.snapshot()["queues"]["rows"]

    assert [row["name"] for row in rows] == ["default", "reports", "shop"]
    assert all(row["ready"] == 0 for row in rows)


def test_a_broker_that_refuses_connections_shows_as_unavailable(settings):
    settings.JOBS = {**settings.JOBS, "BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
                     "BROKER_CONNECTION_TIMEOUT": 1}

    queues = dashboard.snapshot()["queues"]

    assert queues["available"] is False
    assert queues["error"]
    assert [row["ready"] for row in queues["rows"]] == [None]


def test_a_broker_that_never_answers_does_not_hold_up_the_dashboard(settings):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, then never says a word
    port = silent.getsockname()[1]
    settings.JOBS = {**settings.JOBS, "BROKER_URL": f"amqp://guest:guest@127.0.0.1:{port}//",
                     "BROKER_CONNECTION_TIMEOUT": 3}
    try:
        started = time.monotonic()
        counts, error = get_broker().ready_counts(["default"], timeout=0.5)
        elapsed = time.monotonic() - started
    finally:
        silent.close()

    assert counts is None
    assert error == "the broker did not answer within 0.5 s"
    assert elapsed < 1.5


@pytest.mark.parametrize("broker_url", [p for p in broker_params() if p.id != "django"],
                         indirect=True)
def test_queue_depths_on_redis_and_rabbitmq_come_from_the_broker(broker_url):
    for i in range(3):
        demo.add.delay(i, i)
    demo.add.apply_async((1, 1), countdown=3600, queue="other")

    def depths():
        rows = {row["name"]: row for row in dashboard.snapshot()["queues"]["rows"]}
        return rows if rows["default"]["ready"] == 3 else None

    rows = wait_for(depths, timeout=10, message="the broker never reported 3 ready jobs")
    assert rows["default"]["reserved"] is None


# The pages -------------------------------------------------------------------------------


def test_dashboard_needs_the_view_permission_on_job_results(staff_client):
    client = staff_client("view_worker", "view_deadletter", "view_message")

    assert client.get(reverse(DASHBOARD)).status_code == 403
    assert client.get(reverse(DATA)).status_code == 403


def test_dashboard_sends_anonymous_users_to_the_login_page(client):
    response = client.get(reverse(DATA))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_dashboard_data_is_json_for_users_who_may_view_results(staff_client):
    finished(ago=0)
    client = staff_client("view_jobrecord", "view_worker", "view_deadletter")

    response = client.get(reverse(DATA))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    data = response.json()
    assert set(data) >= {"totals", "throughput", "workers", "queues", "running", "slowest",
                         "failing", "links"}
    assert data["totals"]["workers"] == 0


def test_dashboard_leaves_out_workers_and_dead_letters_for_users_who_may_not_view_them(
        staff_client):
    factories.worker_row(hostname="jobs@secret-host")

    response = staff_client("view_jobrecord").get(reverse(DATA))

    data = response.json()
    assert data["workers"] is None
    assert data["totals"]["workers"] is None
    assert data["totals"]["dead_letters"] is None
    assert "secret-host" not in response.text


def test_dashboard_links_each_number_to_the_rows_behind_it(admin_client, settings):
    settings.TIME_ZONE = "UTC"
    response = admin_client.get(reverse(DATA))

    links = response.json()["links"]
    since = f"{stats.window_start(datetime.now(UTC)):%Y-%m-%dT%H%%3A%M}"
    assert links["failed"] == (f"{reverse('admin:jobs_jobrecord_changelist')}"
                               f"?state=FAILURE&date_done__gte={since}")
    assert links["delayed"] == f"{reverse('admin:jobs_message_changelist')}?status=delayed"


def test_the_failed_count_links_to_the_failures_of_the_last_hour(admin_client):
    now = datetime.now(UTC)
    factories.record(job_id="recent", state=States.FAILURE, date_done=now)
    factories.record(job_id="old", state=States.FAILURE, date_done=now - timedelta(hours=2))
    factories.record(job_id="fine", state=States.SUCCESS, date_done=now)

    link = admin_client.get(reverse(DATA)).json()["links"]["failed"]
    response = admin_client.get(link)

    assert [row.job_id for row in response.context["cl"].result_list] == ["recent"]


def test_dashboard_links_only_to_pages_the_user_may_open(staff_client):
    links = staff_client("view_jobrecord").get(reverse(DATA)).json()["links"]

    assert (links["workers"], links["queued"], links["delayed"], links["dead_letters"]) == (
        None, None, None, None)
    assert links["failed"]


def test_dashboard_never_shows_arguments_or_results(admin_client):
    finished(args=["card-4242"], kwargs={"token": "hunter2"}, result={"secret": "result-s3cr3t-7781"})
    factories.record(state=States.STARTED, args=["card-4242"], date_started=datetime.now(UTC))

    for url in (reverse(DASHBOARD), reverse(DATA)):
        text = admin_client.get(url).text
        assert "card-4242" not in text
        assert "hunter2" not in text
        assert "result-s3cr3t-7781" not in text


def test_dashboard_page_embeds_the_data_and_polls_the_json_endpoint(admin_client):
    response = admin_client.get(reverse(DASHBOARD))

    assert response.status_code == 200
    assert f'data-url="{reverse(DATA)}"' in response.text
    assert 'src="/static/jobs/dashboard.js"' in response.text
    embedded = json.loads(
        response.text.split('<script id="jobs-dashboard-data" type="application/json">')[1]
        .split("</script>")[0])
    assert embedded["totals"]["running"] == 0


def test_dashboard_data_stays_small_however_many_jobs_there_are(admin_client):
    now = datetime.now(UTC)
    JobRecord.objects.bulk_create(
        JobRecord(job_id=f"j-{i}", name=f"shop.jobs.job_{i % 40}", state=state,
                  date_done=now - timedelta(seconds=i), date_created=now, runtime=0.1 * i,
                  args=["x" * 100])
        for i in range(2000) for state in [States.FAILURE if i % 7 == 0 else States.SUCCESS])
    JobRecord.objects.bulk_create(
        JobRecord(job_id=f"run-{i}", state=States.STARTED, date_started=now) for i in range(100))

    data = admin_client.get(reverse(DATA))

    assert len(data.content) < 16_000
    assert len(data.json()["slowest"]) == 10


def test_admin_index_links_to_the_dashboard(admin_client):
    response = admin_client.get(reverse("admin:index"))

    assert f'<a href="{reverse(DASHBOARD)}">Dashboard</a>' in response.text


def test_admin_index_has_no_dashboard_link_for_users_who_may_not_view_results(staff_client):
    response = staff_client("view_worker").get(reverse("admin:index"))

    assert response.status_code == 200
    assert reverse(DASHBOARD) not in response.text


def test_jobs_app_page_links_to_the_dashboard(admin_client):
    response = admin_client.get(reverse("admin:app_list", args=["jobs"]))

    assert f'<a href="{reverse(DASHBOARD)}">Dashboard</a>' in response.text


def test_job_results_list_links_to_the_dashboard(admin_client):
    response = admin_client.get(reverse("admin:jobs_jobrecord_changelist"))

    assert f'<a href="{reverse(DASHBOARD)}">Dashboard</a>' in response.text


def test_the_dashboards_old_address_redirects_to_it_for_good(admin_client):
    # Its address before the model was renamed JobRecord, which people bookmarked.
    response = admin_client.get("/admin/jobs/jobresult/dashboard/")

    assert response.status_code == 301
    assert response["Location"] == reverse(DASHBOARD) == "/admin/jobs/jobrecord/dashboard/"
    assert admin_client.get(response["Location"]).status_code == 200
