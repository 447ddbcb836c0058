"""Django's Tasks API, from wherever this Django has it: ``django.tasks`` (Django 6) or the
``django-tasks`` package that backports it to Django 5.2 (``pip install jobs-for-django[tasks]``).

Every name of that API that :mod:`jobs.backends` uses is imported here, once; the two spell
the invalid-task error differently. One private name is used, as Django's own backends use
it: a result's return value is set on ``TaskResult._return_value`` (a frozen dataclass with
no public way to set it). ``tests/test_tasks_contract.py`` checks each of them.
"""

from __future__ import annotations

from django.apps import apps

try:  # Django 6
    from django.tasks import (
        DEFAULT_TASK_BACKEND_ALIAS,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started

    PACKAGE = "django.tasks"
except ImportError:  # Django 5.2, with django-tasks
    from django_tasks import (
        DEFAULT_TASK_BACKEND_ALIAS,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
    from django_tasks.exceptions import InvalidTaskError as InvalidTask, TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started

    PACKAGE = "django_tasks"


def set_return_value(result: TaskResult, value) -> None:
    """Give ``result`` (frozen) its return value, as Django's own backends do."""
    object.__setattr__(result, "_return_value", value)


def backends_are_checked() -> bool:
    """Whether ``manage.py check`` already runs each task backend's ``check()``: Django 6
    always does; django-tasks does when it is an installed app."""
    return PACKAGE == "django.tasks" or apps.is_installed("django_tasks")


__all__ = [
    "DEFAULT_TASK_BACKEND_ALIAS", "PACKAGE", "TASK_MAX_PRIORITY", "TASK_MIN_PRIORITY",
    "BaseTaskBackend", "InvalidTask", "TaskContext", "TaskError", "TaskResult",
    "TaskResultDoesNotExist", "TaskResultStatus", "backends_are_checked",
    "default_task_backend", "set_return_value", "task", "task_backends", "task_enqueued",
    "task_finished", "task_started",
]
