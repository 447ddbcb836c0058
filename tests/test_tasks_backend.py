"""Django's Tasks API on ``jobs.backends.JobsBackend``: ``@task`` functions (tests/jobs_app/
tasks.py) enqueued here and run by a worker in this process (the broker of the settings,
``django://`` unless told otherwise). Every broker, with real workers: test_tasks_e2e.py."""

from __future__ import annotations

import asyncio
import io
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connections, transaction
from django.utils import timezone

from jobs.compat.tasks import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from jobs.models import JobRecord
from jobs.testing import running_worker
from tests.conftest import wait_for
from tests.jobs_app import jobs as testjobs, tasks

pytestmark = pytest.mark.django_db(transaction=True)


def finished(result, timeout: float = 20):
    """``result`` refreshed until its task has finished (woken by task_finished)."""
    done = threading.Event()

    def on_finished(sender, task_result, **kwargs):
        if task_result.id == result.id:
            done.set()

    task_finished.connect(on_finished, weak=False)
    try:
        result.refresh()
        if not result.is_finished:
            assert done.wait(timeout), f"task {result.id} did not finish"
    finally:
        task_finished.disconnect(on_finished)
    result.refresh()
    return result


def test_the_backend_says_what_it_can_do():
    backend = task_backends["default"]
    assert (backend.supports_defer, backend.supports_async_task, backend.supports_get_result,
            backend.supports_priority) == (True, True, True, True)


def test_an_enqueued_task_is_ready_and_found_from_its_id_before_a_worker_starts_it():
    result = tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    found = tasks.add.get_result(result.id)
    assert (found.id, found.status, found.args, found.kwargs) == (result.id, "READY", [2, 3], {})
    assert found.enqueued_at == result.enqueued_at and found.started_at is None
    assert found.backend == "default" and found.task.func is tasks.add.func


def test_a_task_runs_on_the_worker_and_its_result_is_read_back():
    with running_worker():
        result = finished(tasks.add.enqueue(2, 3))
    assert (result.status, result.return_value, result.errors) == ("SUCCESSFUL", 5, [])
    assert result.started_at <= result.finished_at and result.worker_ids[0].startswith("jobs@")
    again = default_task_backend.get_result(result.id)
    assert (again.status, again.return_value, again.attempts) == ("SUCCESSFUL", 5, 1)


def test_an_async_task_runs_and_is_enqueued_and_read_from_async_code():
    async def from_a_view():
        result = await tasks.async_add.aenqueue(20, 22)
        try:
            return await tasks.async_add.aget_result(result.id)
        finally:  # the connection of the thread that ran the ORM for it
            await sync_to_async(connections.close_all, thread_sensitive=True)()

    with running_worker():
        result = asyncio.run(from_a_view())
        # Read back as it was then: waiting, or already taken by the worker (which, on SQLite
        # too, notices a new job within milliseconds).
        assert result.status in ("READY", "RUNNING", "SUCCESSFUL")
        assert finished(result).return_value == 42


def test_a_task_is_running_while_it_runs():
    with running_worker():
        result = tasks.pause.enqueue(1)
        wait_for(lambda: tasks.pause.get_result(result.id).status == "RUNNING",
                 message="the task was never seen RUNNING")
        running = tasks.pause.get_result(result.id)
        assert running.started_at is not None and running.finished_at is None
        assert not running.is_finished
        assert finished(result).return_value == 1


def test_a_task_taking_the_context_sees_its_own_result_and_attempt():
    with running_worker():
        result = finished(tasks.who_runs_me.enqueue(7))
    value = result.return_value
    assert (value["id"], value["attempt"], value["x"]) == (result.id, 1, 7)
    assert value["worker_ids"][0].startswith("jobs@")


def test_a_failed_task_has_its_exception_class_and_traceback():
    with running_worker():
        result = finished(tasks.fail.enqueue("bad input"))
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class is ValueError
    assert "raise ValueError(message)" in error.traceback and "bad input" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value


def test_the_backend_options_retry_a_task_until_it_succeeds():
    with running_worker():
        result = finished(tasks.fails_until.enqueue(3))
    assert (result.status, result.return_value, result.attempts) == ("SUCCESSFUL", 3, 3)
    assert JobRecord.objects.get(job_id=result.id).name == "retrying:tests.jobs_app.tasks.fails_until"


def test_a_task_retried_out_of_its_retries_fails_with_its_exception():
    with running_worker():
        result = finished(tasks.fails_until.enqueue(10))  # 1 try + max_retries=2
    assert (result.status, result.attempts) == ("FAILED", 3)
    assert result.errors[0].exception_class is ValueError
    assert "attempt 3 failed" in result.errors[0].traceback


def test_signals_go_out_at_enqueue_at_start_and_at_the_end():
    seen = []

    def note(signal_name):
        def receiver(sender, task_result, **kwargs):
            seen.append((signal_name, task_result.id, task_result.status, sender))
        return receiver

    receivers = {task_enqueued: note("enqueued"), task_started: note("started"),
                 task_finished: note("finished")}
    for signal, receiver in receivers.items():
        signal.connect(receiver, weak=False)
    try:
        with running_worker():
            result = finished(tasks.add.enqueue(1, 1))
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)
    backend = type(task_backends["default"])
    assert [s for s in seen if s[1] == result.id] == [
        ("enqueued", result.id, "READY", backend), ("started", result.id, "RUNNING", backend),
        ("finished", result.id, "SUCCESSFUL", backend)]


def test_a_receiver_that_raises_changes_nothing(caplog):
    def broken(**kwargs):
        raise RuntimeError("receiver broke")

    for signal in (task_enqueued, task_started, task_finished):
        signal.connect(broken)
    try:
        with running_worker():
            result = finished(tasks.add.enqueue(2, 2))
    finally:
        for signal in (task_enqueued, task_started, task_finished):
            signal.disconnect(broken)
    assert (result.status, result.return_value) == ("SUCCESSFUL", 4)
    assert "receiver broke" in caplog.text


def test_inside_a_transaction_the_task_is_enqueued_at_the_commit():
    seen = []
    task_enqueued.connect(lambda task_result, **kw: seen.append(task_result.id), weak=False,
                          dispatch_uid="at-commit")
    try:
        with transaction.atomic():
            result = tasks.add.enqueue(1, 2)
            assert result.id not in seen
        assert result.id in seen
    finally:
        task_enqueued.disconnect(dispatch_uid="at-commit")


def test_a_task_enqueued_in_a_rolled_back_transaction_never_existed():
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.add.enqueue(1, 2)
        raise RuntimeError("roll back")
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(result.id)


def test_run_after_holds_the_task_until_then():
    later = timezone.now() + timedelta(seconds=1.5)
    with running_worker():
        result = tasks.started_at.using(run_after=later).enqueue("late")
        result = finished(result)
    assert result.status == "SUCCESSFUL" and result.started_at >= later


def test_a_task_and_a_job_share_a_queue_and_a_worker():
    with running_worker(queues=["default"]):
        result = tasks.add.enqueue(1, 2)
        assert testjobs.add_untracked.delay(3, 4).get(timeout=20) == 7
        assert finished(result).return_value == 3


def test_queue_name_sends_the_task_to_that_queue():
    with running_worker(queues=["other"]):
        result = finished(tasks.on_other_queue.enqueue(21))
    assert result.return_value == 42
    assert JobRecord.objects.get(job_id=result.id).queue == "other"


def test_arguments_that_dont_fit_the_function_fail_at_enqueue():
    with pytest.raises(TypeError, match="tests.jobs_app.tasks.add"):
        tasks.add.enqueue(1)
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        tasks.who_runs_me.enqueue()


def test_a_value_json_cant_carry_fails_at_enqueue():
    with pytest.raises(Exception, match="(?i)serializ|json"):
        tasks.add.enqueue(object(), 1)


def test_an_unknown_id_or_a_plain_jobs_id_has_no_task_result():
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("no-such-id")
    handle = testjobs.add_untracked.delay(1, 1)
    JobRecord.objects.create(job_id=handle.id, name=testjobs.add_untracked.name)
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(handle.id)


def test_a_priority_out_of_range_or_a_bad_queue_name_is_refused():
    with pytest.raises(InvalidTask):
        tasks.add.using(priority=101)
    with pytest.raises(InvalidTask, match="not a valid queue name"):
        tasks.add.using(queue_name="bad queue")


def test_check_refuses_an_unknown_option(settings):
    settings.TASKS = {**settings.TASKS, "typo": {
        "BACKEND": "jobs.backends.JobsBackend", "OPTIONS": {"max_retrys": 3}}}
    with pytest.raises(SystemCheckError, match=r"(?s)jobs.E050.*max_retrys"):
        call_command("check")


def test_check_refuses_a_bad_option_value(settings):
    settings.TASKS = {**settings.TASKS, "bad": {
        "BACKEND": "jobs.backends.JobsBackend", "OPTIONS": {"time_limit": -1}}}
    with pytest.raises(SystemCheckError, match=r"(?s)jobs.E050.*time_limit"):
        call_command("check")


def test_check_warns_when_the_task_signals_middleware_is_left_out(settings):
    from jobs.conf import DEFAULT_MIDDLEWARE

    settings.JOBS = {**settings.JOBS, "MIDDLEWARE": [
        m for m in DEFAULT_MIDDLEWARE if not m.endswith("TaskSignals")]}
    out = io.StringIO()
    call_command("check", stdout=out, stderr=out)
    assert "jobs.W050" in out.getvalue()


def test_jobs_checks_the_backend_where_django_tasks_is_not_an_installed_app(settings, monkeypatch):
    from jobs import checks
    from jobs.compat import tasks as tasks_api

    settings.TASKS = {**settings.TASKS, "typo": {
        "BACKEND": "jobs.backends.JobsBackend", "OPTIONS": {"max_retrys": 3}}}
    assert checks.check_task_backends() == []  # django_tasks' own check reports it here
    monkeypatch.setattr(tasks_api, "backends_are_checked", lambda: False)
    assert [m.id for m in checks.check_task_backends()] == ["jobs.E050"]


def test_a_revoked_task_never_runs_and_has_failed():
    from jobs import JobResult

    result = tasks.add.enqueue(1, 1)
    JobResult(result.id).revoke()
    with running_worker():
        result = finished(result)
    assert result.status == "FAILED"
    assert result.errors[0].exception_class_path == "jobs.exceptions.JobRevoked"
