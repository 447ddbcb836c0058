"""Celery's task semantics, as a Celery user's code expects them: ``retry()`` raises, task
classes with their hooks, the handle's Celery names, ``send_task``, and progress reported
with ``update_state``. Run with a real worker in this process (jobs.testing.running_worker)
on the database broker; tests/test_task_semantics_e2e.py runs real workers on every broker.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict

import pytest
from django.urls import reverse

from jobs import AsyncResult, Job, JobResult, job, send_task
from jobs.admin.dashboard import snapshot
from jobs.conf import DEFAULT_MIDDLEWARE
from jobs.exceptions import ConfigurationError
from jobs.hooks import ExceptionInfo
from jobs.middleware import Middleware, stack
from jobs.middleware.hooks import Hooks
from jobs.models import JobRecord
from jobs.testing import running_worker
from tests import factories
from tests.conftest import wait_for

database_broker = pytest.mark.parametrize(
    "broker_url", [pytest.param("django", marks=pytest.mark.pg)], indirect=True)

runs: Counter = Counter()
lines: defaultdict = defaultdict(list)


@pytest.fixture
def caplog(caplog, monkeypatch):
    """caplog, seeing the jobs loggers (which don't propagate in the project's settings)."""
    monkeypatch.setattr(logging.getLogger("jobs"), "propagate", True)
    return caplog


# retry() ----------------------------------------------------------------------------------


@job(bind=True, default_retry_delay=0)
def bare_retry(self, key):
    """Retries its first try with ``self.retry()`` and no ``raise``, as Celery code does."""
    lines[key].append(f"ran {self.request.retries}")
    if self.request.retries == 0:
        self.retry(exc=ConnectionError("down"), countdown=0)
    lines[key].append(f"past retry {self.request.retries}")
    return self.request.retries


@job(bind=True)
def retry_and_go_on(self, key):
    lines[key].append(f"ran {self.request.retries}")
    if self.request.retries == 0:
        returned = self.retry(countdown=0, throw=False)
        lines[key].append(type(returned).__name__)
    return self.request.retries


@job(bind=True, max_retries=None, default_retry_delay=0)
def retry_forever(self, key, until):
    runs[key] += 1
    if self.request.retries < until:
        self.retry(exc=ConnectionError(f"try {self.request.retries}"))
    return self.request.retries


@job(bind=True, default_retry_delay=0)
def retry_by_default(self, key):
    runs[key] += 1
    self.retry(exc=ConnectionError(f"try {self.request.retries}"))


@job(bind=True, default_retry_delay=0)
def retry_with_new_arguments(self, value):
    if self.request.retries == 0:
        self.retry(args=(value * 10,))
    return value


@database_broker
def test_retry_without_raise_ends_the_run_and_runs_once_more(broker_url):
    with running_worker():
        handle = bare_retry.delay("bare")
        assert handle.get(timeout=20) == 1
    assert lines["bare"] == ["ran 0", "ran 1", "past retry 1"]
    assert JobRecord.objects.get(job_id=handle.id).retries == 1


@database_broker
def test_retry_with_throw_false_returns_and_the_run_goes_on(broker_url):
    with running_worker():
        handle = retry_and_go_on.delay("no-throw")
        wait_for(lambda: lines["no-throw"][-1:] == ["ran 1"], message="never retried")
        wait_for(lambda: handle.state == "SUCCESS" and handle.retries == 1,
                 message="the retry never finished")
    assert lines["no-throw"] == ["ran 0", "Retry", "ran 1"]


@database_broker
def test_max_retries_none_retries_past_the_default_limit(broker_url, settings):
    settings.JOBS = {**settings.JOBS, "TASK_DEFAULT_MAX_RETRIES": 1}
    with running_worker():
        assert retry_forever.delay("forever", 4).get(timeout=30) == 4
    assert runs["forever"] == 5


@database_broker
def test_max_retries_left_out_is_the_default_setting(broker_url, settings):
    settings.JOBS = {**settings.JOBS, "TASK_DEFAULT_MAX_RETRIES": 2}
    with running_worker():
        handle = retry_by_default.delay("default")
        with pytest.raises(ConnectionError, match="try 2"):
            handle.get(timeout=20)
    assert runs["default"] == 3
    assert retry_by_default.max_retries == 2


@database_broker
def test_retry_can_replace_the_arguments(broker_url):
    with running_worker():
        assert retry_with_new_arguments.delay(4).get(timeout=20) == 40


def test_retry_without_raise_in_eager_mode_never_goes_past_the_call(jobs_eager):
    assert bare_retry.delay("eager").get() == 1
    assert lines["eager"] == ["ran 0", "ran 1", "past retry 1"]


def test_a_bad_max_retries_is_an_error_at_declaration():
    with pytest.raises(ConfigurationError, match="max_retries=-1"):
        job(max_retries=-1)(lambda: None)


# Task classes ------------------------------------------------------------------------------

calls: defaultdict = defaultdict(list)


class Recorded(Job):
    """Records every hook call with its arguments; on_success and on_failure also note the
    state recorded by then."""

    def before_start(self, task_id, args, kwargs):
        calls[args[0]].append(("before_start", task_id, args, kwargs))

    def on_success(self, retval, task_id, args, kwargs):
        calls[args[0]].append(("on_success", retval, task_id, JobResult(task_id).state))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        calls[args[0]].append(("on_failure", exc, task_id, einfo, JobResult(task_id).state))

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        calls[args[0]].append(("on_retry", exc, task_id, einfo))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        calls[args[0]].append(("after_return", status, retval, task_id, einfo))


@job(base=Recorded, bind=True, default_retry_delay=0)
def hooked(self, key, fail=False, retry=False):
    if retry and self.request.retries == 0:
        raise self.retry(exc=ConnectionError("again"), countdown=0)
    if fail:
        raise ValueError(f"{key} failed")
    return f"{key} done"


class Clumsy(Job):
    """Every hook raises."""

    def before_start(self, task_id, args, kwargs):
        raise RuntimeError("bug in before_start")

    def on_success(self, retval, task_id, args, kwargs):
        raise RuntimeError("bug in on_success")

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        raise RuntimeError("bug in on_failure")

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        calls[args[0]].append(("after_return", status))
        raise RuntimeError("bug in after_return")


@job(base=Clumsy)
def clumsy(key, fail=False):
    runs[key] += 1
    if fail:
        raise ValueError("the job's own error")
    return key


class Patient(Job):
    """Options as class attributes, Celery's way: defaults for every job of the class."""

    max_retries = 7
    queue = "other"
    autoretry_for = (ConnectionError,)


@job(base=Patient)
def patient():
    pass


@job(base=Patient, max_retries=None, queue="default")
def impatient():
    pass


@database_broker
def test_hooks_of_a_successful_job_run_in_celerys_order_after_it_is_recorded(broker_url):
    with running_worker():
        handle = hooked.delay("ok", fail=False)
        assert handle.get(timeout=20) == "ok done"
        wait_for(lambda: len(calls["ok"]) == 3, message="the hooks did not all run")
    assert calls["ok"] == [
        ("before_start", handle.id, ("ok",), {"fail": False}),
        ("on_success", "ok done", handle.id, "SUCCESS"),
        ("after_return", "SUCCESS", "ok done", handle.id, None),
    ]


@database_broker
def test_on_failure_gets_the_exception_and_its_traceback(broker_url):
    with running_worker():
        handle = hooked.delay("bad", fail=True)
        with pytest.raises(ValueError):
            handle.get(timeout=20)
        wait_for(lambda: len(calls["bad"]) == 3, message="the hooks did not all run")
    (_, exc, task_id, einfo, state), after = calls["bad"][1], calls["bad"][2]
    assert (type(exc), str(exc), task_id, state) == (ValueError, "bad failed", handle.id, "FAILURE")
    assert isinstance(einfo, ExceptionInfo) and einfo.type is ValueError
    assert 'raise ValueError(f"{key} failed")' in einfo.traceback
    assert after[:4] == ("after_return", "FAILURE", exc, handle.id) and after[4] is einfo


@database_broker
def test_on_retry_runs_for_the_retried_try_and_on_success_for_the_next(broker_url):
    with running_worker():
        handle = hooked.delay("retried", retry=True)
        assert handle.get(timeout=20) == "retried done"
        wait_for(lambda: len(calls["retried"]) == 6, message="the hooks did not all run")
    names = [call[0] for call in calls["retried"]]
    assert names == ["before_start", "on_retry", "after_return",
                     "before_start", "on_success", "after_return"]
    retry = calls["retried"][1]
    assert (type(retry[1]), str(retry[1])) == (ConnectionError, "again")
    assert calls["retried"][2][1] == "RETRY"


@database_broker
def test_hooks_that_raise_are_logged_and_change_no_outcome(broker_url, caplog):
    with running_worker():
        assert clumsy.delay("clumsy-ok").get(timeout=20) == "clumsy-ok"
        with pytest.raises(ValueError, match="the job's own error"):
            clumsy.delay("clumsy-bad", fail=True).get(timeout=20)
        wait_for(lambda: len(calls["clumsy-bad"]) == 1, message="after_return never ran")
    assert (runs["clumsy-ok"], runs["clumsy-bad"]) == (1, 1)
    assert calls["clumsy-ok"] == [("after_return", "SUCCESS")]
    assert calls["clumsy-bad"] == [("after_return", "FAILURE")]
    for hook in ("before_start", "on_success", "on_failure", "after_return"):
        assert f"RuntimeError: bug in {hook}" in caplog.text
    assert "Clumsy.on_success raised for job" in caplog.text


def test_class_attributes_are_the_defaults_of_the_class_options():
    assert (patient.max_retries, patient.queue, patient.autoretry_for) == (
        7, "other", (ConnectionError,))
    assert (impatient.max_retries, impatient.queue) == (None, "default")
    assert isinstance(patient, Patient) and patient.hooks == frozenset()


def test_base_must_be_a_job_class():
    with pytest.raises(ConfigurationError, match="base must be a subclass of jobs.Job"):
        job(base=object)(lambda: None)


# The handle --------------------------------------------------------------------------------


@job
def double(x):
    return 2 * x


@job
def wait_for_double(x, allow):
    return double.delay(x).get(timeout=20, disable_sync_subtasks=not allow)


def test_asyncresult_is_the_handle_with_celerys_names(db):
    handle = AsyncResult("some-id")
    assert isinstance(handle, JobResult) and AsyncResult is JobResult
    assert (handle.task_id, handle.state, handle.info) == ("some-id", "PENDING", None)


@database_broker
def test_get_inside_a_job_raises_unless_allowed(broker_url):
    with running_worker(pool="threads", concurrency=2):
        refused = wait_for_double.delay(3, allow=False)
        with pytest.raises(RuntimeError, match="Never call JobResult.get"):
            refused.get(timeout=20)
        assert wait_for_double.delay(3, allow=True).get(timeout=20) == 6


# send_task ---------------------------------------------------------------------------------


def test_send_task_sends_a_job_defined_elsewhere_by_name(jobs_captured):
    handle = send_task("billing.jobs.charge", args=(42,), kwargs={"currency": "EUR"},
                       queue="other", priority=3, countdown=60)
    (message,) = jobs_captured.messages
    assert (message.id, message.name, message.args, message.kwargs, message.queue,
            message.priority) == (handle.id, "billing.jobs.charge", (42,), {"currency": "EUR"},
                                  "other", 3)
    assert message.eta is not None and isinstance(handle, JobResult)


def test_send_task_sends_even_in_eager_mode(jobs_eager, jobs_captured):
    send_task("billing.jobs.charge", args=(1,))
    assert jobs_captured.names() == ["billing.jobs.charge"]


def test_send_task_checks_a_known_jobs_arguments_and_options():
    with pytest.raises(TypeError, match="double"):
        send_task(double.name, args=(1, 2))
    with pytest.raises(TypeError, match="unknown option"):
        send_task("billing.jobs.charge", args=(1,), bogus=True)


@database_broker
def test_send_task_runs_a_registered_job_on_the_worker(broker_url):
    with running_worker():
        assert send_task(double.name, args=(21,)).get(timeout=20) == 42


# Progress ----------------------------------------------------------------------------------

gates: dict[str, threading.Event] = defaultdict(threading.Event)


@job(bind=True)
def in_steps(self, key, total):
    for i in range(total):
        self.update_state(state="PROGRESS", meta={"current": i, "total": total})
        gates[f"{key}-{i}"].wait(20)
    return total


@database_broker
def test_update_state_reports_progress_while_the_job_runs(broker_url):
    with running_worker():
        handle = in_steps.delay("steps", 3)
        wait_for(lambda: handle.state == "PROGRESS", message="no progress reported")
        assert handle.info == {"current": 0, "total": 3}
        assert JobRecord.objects.running().filter(job_id=handle.id).exists()
        running = snapshot()["running"]
        assert [(job["job_id"], job["state"], job["progress"]) for job in running] == [
            (handle.id, "PROGRESS", {"current": 0, "total": 3, "percent": 0.0})]
        gates["steps-0"].set()
        wait_for(lambda: JobResult(handle.id).info == {"current": 1, "total": 3},
                 message="the progress did not move on")
        gates["steps-1"].set()
        gates["steps-2"].set()
        assert handle.get(timeout=20) == 3
    assert (handle.state, handle.info) == ("SUCCESS", 3)
    assert snapshot()["totals"]["running"] == 0


@database_broker
def test_revoking_a_job_in_progress_without_terminate_lets_it_finish(broker_url):
    with running_worker():
        handle = in_steps.delay("revoked", 1)
        wait_for(lambda: handle.state == "PROGRESS", message="no progress reported")
        handle.revoke()
        assert JobResult(handle.id).state == "PROGRESS"
        gates["revoked-0"].set()
        assert handle.get(timeout=20) == 1


def test_update_state_takes_celerys_task_id(db):
    in_steps.update_state(task_id="elsewhere", state="PROGRESS", meta={"current": 5, "total": 9})
    assert JobResult("elsewhere").info == {"current": 5, "total": 9}


# The seam: middleware that only some jobs need ------------------------------------------------

seen: list = []


class OnlyHooked(Middleware):
    """Watches only the jobs of task classes that override a hook."""

    def applies_to(self, job):
        return bool(job.hooks)

    def started(self, execution):
        seen.append(execution.job.name)


@database_broker
def test_a_middleware_is_left_out_for_the_jobs_it_does_not_apply_to(broker_url, settings):
    settings.JOBS = {**settings.JOBS, "MIDDLEWARE": [
        *DEFAULT_MIDDLEWARE, f"{__name__}.OnlyHooked"]}
    with running_worker():
        assert double.delay(1).get(timeout=20) == 2
        assert hooked.delay("seam").get(timeout=20) == "seam done"
    assert seen == [hooked.name]
    assert not any(isinstance(m, Hooks) for m in stack().for_job(double))


# In the admin ------------------------------------------------------------------------------------


def test_the_running_filter_lists_started_jobs_and_jobs_in_custom_states(admin_client):
    for state in ("PENDING", "RETRY", "STARTED", "PROGRESS", "UPLOADING", "SUCCESS", "FAILURE"):
        factories.record(job_id=f"in-{state}", state=state)

    response = admin_client.get(reverse("admin:jobs_jobrecord_changelist"), {"state": "running"})

    listed = sorted(row.job_id for row in response.context["cl"].result_list)
    assert listed == ["in-PROGRESS", "in-STARTED", "in-UPLOADING"]


def test_a_running_jobs_page_shows_its_progress_and_polls_it(admin_client, staff_client):
    row = factories.record(state="PROGRESS", meta={"current": 3, "total": 12, "file": "a.csv"})
    state_url = reverse("admin:jobs_jobrecord_state", args=[row.pk])

    page = admin_client.get(reverse("admin:jobs_jobrecord_change", args=[row.pk])).text
    assert f'data-url="{state_url}"' in page and "3 / 12 (25.0 %)" in page
    assert admin_client.get(state_url).json() == {
        "state": "PROGRESS", "style": "active", "ready": False,
        "progress": {"current": 3, "total": 12, "percent": 25.0}}
    assert staff_client().get(state_url).status_code == 403
