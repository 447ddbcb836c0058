"""Rate limits per worker and across all workers, changed at run time, persisted until reset,
and visible in the admin: against real worker processes, on every broker."""

from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.urls import reverse

from jobs import ratelimits
from jobs.checks import check_settings
from jobs.exceptions import ConfigurationError
from jobs.job import job
from jobs.models import JobRecord, RateLimit, RateLimitTurn, Worker
from project.demo import jobs as demo
from project.settings import SHARED_TEST_CACHE
from tests.conftest import broker_params, require, wait_for
from tests.jobs_app import jobs as testjobs

pytestmark = pytest.mark.long
brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


@pytest.fixture
def shared_cache(settings, monkeypatch):
    """A Redis cache named "shared", here and in the workers the test starts."""
    require("redis")
    settings.CACHES = {**settings.CACHES, "shared": SHARED_TEST_CACHE}
    monkeypatch.setenv("JOBS_TEST_SHARED_CACHE", "1")
    caches["shared"].clear()
GLOBAL = "tests.jobs_app.jobs.globally_limited"
HOURLY = "tests.jobs_app.jobs.hourly"


def control(*args: str) -> dict:
    out = StringIO()
    call_command("jobs_control", *args, "--json", "--timeout", "5", stdout=out)
    return json.loads(out.getvalue())


def starts_of(name: str, handles) -> list:
    """When each job started, in order, and which workers ran them."""
    rows = JobRecord.objects.filter(job_id__in=[h.id for h in handles])
    assert len(rows) == len(handles) and all(r.state == "SUCCESS" for r in rows)
    return sorted(r.date_started for r in rows), {r.worker for r in rows}


def assert_spaced(starts, per_second: float) -> None:
    """No second of the run saw more starts than the rate allows (give or take the one a
    worker's loop may release a little late)."""
    times = [start.timestamp() for start in starts]
    for i, first in enumerate(times):
        assert sum(1 for t in times[i:] if t - first < 1.0) <= per_second + 1, times
    assert times[-1] - times[0] >= (len(times) - 1) / per_second - 0.3, times


# Global limits -------------------------------------------------------------------------------


@pytest.mark.e2e
@brokers
def test_a_global_limit_holds_for_two_workers_together(broker_url, start_worker):
    # Four a second in all, each worker on a queue of its own, so that both run some.
    start_worker(broker_url, "-c", "2", "-n", "one@limits", "-Q", "default")
    start_worker(broker_url, "-c", "2", "-n", "two@limits", "-Q", "other")
    handles = [testjobs.globally_limited.apply_async((i,), queue=("default", "other")[i % 2])
               for i in range(12)]
    assert [h.get(timeout=60) for h in handles] == list(range(12))
    starts, workers = starts_of(GLOBAL, handles)
    assert workers == {"one@limits", "two@limits"}
    assert_spaced(starts, 4)


@pytest.mark.e2e
def test_a_global_limit_can_keep_its_turns_in_a_shared_cache(start_worker, monkeypatch,
                                                            shared_cache):
    monkeypatch.setenv("JOBS_SETTINGS", json.dumps({"GLOBAL_RATE_LIMIT_CACHE": "shared"}))
    start_worker("django://", "-c", "2", "-n", "one@cache", "-Q", "default")
    start_worker("django://", "-c", "2", "-n", "two@cache", "-Q", "other")
    handles = [testjobs.globally_limited.apply_async((i,), queue=("default", "other")[i % 2])
               for i in range(12)]
    assert [h.get(timeout=60) for h in handles] == list(range(12))
    starts, workers = starts_of(GLOBAL, handles)
    assert workers == {"one@cache", "two@cache"}
    assert_spaced(starts, 4)
    assert not RateLimitTurn.objects.exists()  # the database clock was not used


@pytest.mark.pg
def test_the_database_clock_gives_turns_an_interval_apart(transactional_db):
    clock, now = ratelimits.DatabaseClock(), 1_000_000.0
    assert [clock.turn("a", 0.5, now) for _ in range(3)] == [now, now + 0.5, now + 1.0]
    assert clock.turn("b", 2, now) == now  # each job has its own turns
    assert clock.turn("a", 0.5, now + 60) == now + 60  # idle: no backlog of turns saved up


def test_the_cache_clock_gives_each_turn_once():
    cache = caches["default"]  # in one process, as both clocks here are
    cache.clear()
    first, second, now = ratelimits.CacheClock(cache), ratelimits.CacheClock(cache), 1_000_000.0
    turns = [first.turn("a", 0.5, now), second.turn("a", 0.5, now), first.turn("a", 0.5, now)]
    assert turns == [now, now + 0.5, now + 1.0]


def test_a_limited_job_waits_without_keeping_other_jobs_out(start_worker):
    # One slot and a prefetch of one: the hourly job's second call waits in the worker
    # while the plain jobs sent after it still run.
    start_worker("django://", "-c", "1", "--prefetch-multiplier", "1", "-n", "held@limits")
    first = testjobs.hourly.delay(1)
    waiting = [testjobs.hourly.delay(i) for i in (2, 3)]
    assert first.get(timeout=20) == 1
    assert [demo.add.delay(i, i).get(timeout=20) for i in range(3)] == [0, 2, 4]
    assert [h.state for h in waiting] == ["PENDING", "PENDING"]
    # The admin shows what waits, by job, from the worker's heartbeat.
    row = wait_for(lambda: Worker.objects.filter(held={HOURLY: 2}).first(),
                   message="the worker's row never showed the held jobs")
    assert row.hostname == "held@limits"


# Changed at run time ---------------------------------------------------------------------------


@pytest.mark.e2e
@brokers
def test_a_limit_changed_at_run_time_holds_after_a_restart_until_reset(broker_url,
                                                                       start_worker):
    worker = start_worker(broker_url, "-c", "1", "-n", "first@limits")
    assert control("rate_limit", "tests.jobs_app.jobs.limited", "1/h") == {
        "first@limits": {"ok": "new rate limit for tests.jobs_app.jobs.limited: 1/h"}}
    worker.stop()

    start_worker(broker_url, "-c", "1", "-n", "second@limits")
    first, held = testjobs.limited.delay(1), testjobs.limited.delay(2)
    assert first.get(timeout=20) == 1
    wait_for(lambda: Worker.objects.filter(hostname="second@limits",
                                           held={"tests.jobs_app.jobs.limited": 1}).exists(),
             message="the second job was not held back")
    assert held.state == "PENDING"
    assert control("rate_limit", "tests.jobs_app.jobs.limited", "--reset") == {
        "second@limits": {"ok": "rate limits of tests.jobs_app.jobs.limited: its own"}}
    assert held.get(timeout=10) == 2
    assert not RateLimit.objects.exists()


@pytest.mark.e2e
def test_a_global_limit_changed_at_run_time_applies_within_a_second(start_worker):
    start_worker("django://", "-c", "2", "-n", "g@limits")
    answers = control("rate_limit", GLOBAL, "1/h", "--global")
    assert answers == {"g@limits": {"ok": f"new global rate limit for {GLOBAL}: 1/h"}}
    assert RateLimit.objects.get(name=GLOBAL).global_rate == "1/h"
    first, held = testjobs.globally_limited.delay(1), testjobs.globally_limited.delay(2)
    assert first.get(timeout=20) == 1
    wait_for(lambda: Worker.objects.filter(held={GLOBAL: 1}).exists(),
             message="the second job was not held back for its turn")
    assert held.state == "PENDING"
    began = time.monotonic()
    control("rate_limit", GLOBAL, "0", "--global")
    assert held.get(timeout=10) == 2
    assert time.monotonic() - began < 3


@pytest.mark.e2e
def test_an_admin_change_reaches_the_live_workers(start_worker, admin_client):
    start_worker("django://", "-c", "1", "-n", "admin@limits")
    first, held = testjobs.hourly.delay(1), testjobs.hourly.delay(2)
    assert first.get(timeout=20) == 1
    wait_for(lambda: Worker.objects.filter(held={HOURLY: 1}).exists())
    listed = admin_client.get(reverse("admin:jobs_ratelimit_changelist"))
    assert listed.status_code == 200
    response = admin_client.post(reverse("admin:jobs_ratelimit_add"), {
        "name": HOURLY, "rate": "0", "global_rate": ""}, follow=True)
    said = [str(m) for m in response.context["messages"]]
    assert said[-1] == "1 live worker(s) apply the limits of tests.jobs_app.jobs.hourly now."
    assert held.get(timeout=10) == 2
    page = admin_client.get(reverse("admin:jobs_ratelimit_changelist")).content.decode()
    assert '<td class="field-per_worker">none</td>' in page
    assert '<td class="field-across_workers">none (the job&#x27;s own)</td>' in page


def test_the_admin_refuses_a_malformed_rate(admin_client):
    response = admin_client.post(reverse("admin:jobs_ratelimit_add"), {
        "name": HOURLY, "rate": "often", "global_rate": ""})
    assert response.status_code == 200
    assert "Write a rate as" in response.content.decode()
    assert not RateLimit.objects.exists()


# Bad input ---------------------------------------------------------------------------------------


def test_a_malformed_global_rate_is_an_error_at_declaration():
    with pytest.raises(ConfigurationError, match="global_rate_limit: 'fast' is not a rate"):
        @job(global_rate_limit="fast")
        def f():
            pass


def test_jobs_control_refuses_a_malformed_rate_or_an_unknown_job(transactional_db):
    with pytest.raises(CommandError, match="'fast' is not a rate"):
        call_command("jobs_control", "rate_limit", HOURLY, "fast")
    with pytest.raises(CommandError, match="no job is named 'no.such.job'"):
        call_command("jobs_control", "rate_limit", "no.such.job", "1/s")
    with pytest.raises(CommandError, match="usage: jobs_control rate_limit"):
        call_command("jobs_control", "rate_limit", HOURLY, "1/s", "--reset")
    assert not RateLimit.objects.exists()


@pytest.mark.parametrize(("jobs_settings", "expected"), [
    ({"GLOBAL_RATE_LIMITS": {HOURLY: "lots"}}, "jobs.E017"),
    ({"GLOBAL_RATE_LIMITS": [HOURLY]}, "jobs.E017"),
    ({"GLOBAL_RATE_LIMITS": {"no.such.job": "1/s"}}, "jobs.W002"),
    ({"GLOBAL_RATE_LIMIT_CACHE": "nowhere"}, "jobs.E018"),
    ({"GLOBAL_RATE_LIMIT_CACHE": "default"}, "jobs.E018"),  # local memory: per process
])
def test_bad_global_rate_limit_settings_fail_the_check(settings, jobs_settings, expected):
    settings.JOBS = {**settings.JOBS, **jobs_settings}
    assert [e.id for e in check_settings()] == [expected]


def test_a_shared_cache_passes_the_check(settings, shared_cache):
    settings.JOBS = {**settings.JOBS, "GLOBAL_RATE_LIMIT_CACHE": "shared",
                     "GLOBAL_RATE_LIMITS": {HOURLY: "10/m"}}
    assert check_settings() == []
