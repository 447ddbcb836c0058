"""Task classes: a ``Job`` subclass, given to ``@job(base=...)``, with Celery's hooks.

A Celery task class overrides ``before_start``, ``on_success``, ``on_failure``,
``on_retry`` and ``after_return``; the same class, based on :class:`jobs.Job`, works here.
The hooks run where the job runs, called by :class:`jobs.middleware.hooks.Hooks`:
``before_start`` just before the function, the others once the outcome is recorded, as in
Celery. They watch and never steer: one that raises is logged, and the outcome stands.

Class attributes named like ``@job`` options (``max_retries = 5``, ``autoretry_for = ...``,
``queue = "emails"``) are defaults for every job of the class, as Celery's are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HOOKS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


@dataclass(frozen=True, slots=True)
class ExceptionInfo:
    """What ``on_failure``, ``on_retry`` and ``after_return`` get as ``einfo``: the
    exception, its class, and its formatted traceback (as Celery's ``einfo`` has them)."""

    exception: BaseException | None
    traceback: str = ""

    @property
    def type(self) -> type[BaseException] | None:
        return type(self.exception) if self.exception is not None else None

    def __str__(self) -> str:
        return self.traceback


class JobHooks:
    """The hooks of a task class, each doing nothing here: override the ones you need.
    ``hooks`` names the ones a class overrides (empty for a plain job: it costs nothing)."""

    hooks: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.hooks = frozenset(name for name in HOOKS
                              if getattr(cls, name) is not getattr(JobHooks, name))

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        """The job is about to run."""

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None:
        """The job returned ``retval`` (recorded SUCCESS)."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                   einfo: ExceptionInfo) -> None:
        """The job raised ``exc`` (recorded FAILURE)."""

    def on_retry(self, exc: BaseException | None, task_id: str, args: tuple, kwargs: dict,
                 einfo: ExceptionInfo) -> None:
        """The job is to be retried (recorded RETRY); ``exc`` is what ``retry()`` was given."""

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple, kwargs: dict,
                     einfo: ExceptionInfo | None) -> None:
        """After the hooks above, whatever the outcome: ``status`` is the state recorded,
        ``retval`` the value or the exception."""


def class_options(cls: type, names) -> dict:
    """Options set as class attributes of a task class and its bases (a job's own name
    can't be one: every job of the class would have it)."""
    from jobs.job import Job

    found: dict = {}
    for klass in reversed(cls.__mro__):
        if not issubclass(Job, klass):  # the task class and its own bases, not Job's
            found.update((name, value) for name, value in vars(klass).items()
                         if name in names and name != "name")
    return found
