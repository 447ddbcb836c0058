"""The contract with Django's Tasks API (:mod:`jobs.compat.tasks`): the fields, hooks and the
one private name jobs uses exist in the installed API, as used. A release that changes one
fails here, naming it."""

from __future__ import annotations

import dataclasses
import inspect

from django.dispatch import Signal

from jobs.compat import tasks as api

RESULT_FIELDS = {"task", "id", "status", "enqueued_at", "started_at", "finished_at",
                 "last_attempted_at", "args", "kwargs", "backend", "errors", "worker_ids"}


def test_a_task_result_has_the_fields_the_backend_fills_and_a_private_return_value():
    fields = {f.name: f for f in dataclasses.fields(api.TaskResult)}
    assert RESULT_FIELDS <= {name for name, f in fields.items() if f.init}
    assert not fields["_return_value"].init  # set by set_return_value, as Django's backends do


def test_a_task_error_is_its_exception_class_path_and_traceback():
    assert {f.name for f in dataclasses.fields(api.TaskError)} == {"exception_class_path",
                                                                    "traceback"}


def test_the_statuses_are_the_four_the_backend_maps_to():
    assert set(api.TaskResultStatus.values) == {"READY", "RUNNING", "SUCCESSFUL", "FAILED"}


def test_the_base_backend_has_the_hooks_the_backend_overrides():
    base = api.BaseTaskBackend
    for flag in ("supports_defer", "supports_async_task", "supports_get_result",
                 "supports_priority"):
        assert hasattr(base, flag), flag
    assert str(inspect.signature(base.__init__)) == "(self, alias: str, params: dict) -> None"
    assert list(inspect.signature(base.validate_task).parameters) == ["self", "task"]
    assert list(inspect.signature(base.enqueue).parameters) == ["self", "task", "args", "kwargs"]
    assert list(inspect.signature(base.get_result).parameters) == ["self", "result_id"]
    assert "kwargs" in inspect.signature(base.check).parameters


def test_the_signals_are_signals_and_the_priorities_span_minus_100_to_100():
    assert all(isinstance(s, Signal)
               for s in (api.task_enqueued, api.task_started, api.task_finished))
    assert (api.TASK_MIN_PRIORITY, api.TASK_MAX_PRIORITY) == (-100, 100)
