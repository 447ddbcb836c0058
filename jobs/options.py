"""A job's options, typed and checked once, where ``@job`` is written.

:class:`JobOptions` is what ``@job(...)`` accepts; a bad value is a
:class:`~jobs.exceptions.ConfigurationError` when the module is imported, not a surprise in a
worker. The checks of a queue name and a priority live here too, for every place that takes
one (``apply_async``, routes, periodic tasks and their admin form).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from jobs import compression as compressions, rates
from jobs.exceptions import ConfigurationError

QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
MAX_PRIORITY = 255

#: What ``apply_async`` (and ``delay_many``) take besides the arguments.
APPLY_OPTIONS = frozenset({
    "countdown", "eta", "expires", "queue", "priority", "headers", "task_id", "job_id",
    "time_limit", "soft_time_limit", "serializer", "compression", "on_commit", "retry",
    "retry_policy", "ignore_result", "retries", "parent_id", "root_id", "group_id",
    # workflows (jobs.canvas), in Celery's names; embed: all of them as a message carries them
    "link", "link_error", "chain", "chord", "group_index", "embed",
})

#: The options that add a workflow to a message (its body's embed).
EMBED_OPTIONS = frozenset({"link", "link_error", "chain", "chord", "embed"})


class _FromSettings:
    """An option left out of ``@job`` whose default is a setting, where None is a value of
    its own (``max_retries=None``: retry forever)."""

    def __repr__(self) -> str:
        return "FROM_SETTINGS"


FROM_SETTINGS = _FromSettings()


def queue_problem(queue) -> str | None:
    """Why ``queue`` can't name a queue, or None."""
    if isinstance(queue, str) and QUEUE_NAME.match(queue):
        return None
    return (f"queue={queue!r} is not a valid queue name (1 to 200 letters, digits and "
            "'_.:-')")


def priority_problem(priority) -> str | None:
    """Why ``priority`` is not a priority (None, or 0..255), or None."""
    if priority is None or (isinstance(priority, int) and not isinstance(priority, bool)
                            and 0 <= priority <= MAX_PRIORITY):
        return None
    return f"priority={priority!r} must be 0..{MAX_PRIORITY}"


@dataclass(frozen=True, slots=True)
class JobOptions:
    """The options of one job, with their defaults (None: take the JOBS setting)."""

    name: str | None = None
    bind: bool = False
    queue: str | None = None
    priority: int | None = None
    serializer: str | None = None
    compression: str | None = None
    max_retries: int | None | _FromSettings = FROM_SETTINGS  # None: forever
    default_retry_delay: float | None = None
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict | None = None
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    time_limit: float | None = None
    soft_time_limit: float | None = None
    acks_late: bool | None = None
    reject_on_worker_lost: bool | None = None
    ignore_result: bool | None = None
    track_started: bool | None = None
    expires: float | datetime | None = None
    rate_limit: str | float | None = None  # starts per second/minute/hour in each worker
    global_rate_limit: str | float | None = None  # ... across every worker (jobs.middleware.rate_limits)
    typing: bool = True
    unique: bool = False
    unique_for: float | None = None
    unique_key: Callable[..., Any] | None = None

    @classmethod
    def of(cls, func: Callable, options: dict) -> JobOptions:
        """The options ``@job(**options)`` gives ``func``; raises ConfigurationError."""
        unknown = set(options) - NAMES
        if unknown:
            raise ConfigurationError(
                f"@job on {func.__module__}.{func.__qualname__}: unknown option(s) "
                f"{', '.join(sorted(unknown))}. Known options: {', '.join(sorted(NAMES))}."
            )
        made = cls(**options)
        made._check(f"@job {made.name or f'{func.__module__}.{func.__qualname__}'!r}")
        return made

    def _check(self, where: str) -> None:
        def fail(problem: str):
            raise ConfigurationError(f"{where}: {problem}.")

        if self.queue is not None and queue_problem(self.queue):
            fail(queue_problem(self.queue))
        for option in ("autoretry_for", "dont_autoretry_for"):
            value = getattr(self, option)
            value = (value,) if isinstance(value, type) else tuple(value)
            if not all(isinstance(t, type) and issubclass(t, BaseException) for t in value):
                fail(f"{option} must be a tuple of exception classes")
            object.__setattr__(self, option, value)
        for option in ("time_limit", "soft_time_limit", "max_retries", "default_retry_delay"):
            value = getattr(self, option)
            if value is None or value is FROM_SETTINGS:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                fail(f"{option}={value!r} must be a positive number")
        for option in ("rate_limit", "global_rate_limit"):
            reason = rates.problem(getattr(self, option))
            if reason:
                fail(f"{option}: {reason}")
        if priority_problem(self.priority):
            fail(priority_problem(self.priority))
        if self.compression is not None and not compressions.known(self.compression):
            fail(f"compression={self.compression!r} is not available; use one of "
                 f"{', '.join(compressions.names())}")
        self._check_unique(fail)

    def _check_unique(self, fail) -> None:
        """``unique_for`` or ``unique_key`` imply ``unique=True``."""
        if not isinstance(self.unique, bool):
            fail(f"unique={self.unique!r} must be True or False")
        limit = self.unique_for
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                                  or not 0 < limit < float("inf")):
            fail(f"unique_for={limit!r} must be a positive number of seconds")
        if self.unique_key is not None and not callable(self.unique_key):
            fail("unique_key must be a callable taking the job's arguments")
        if limit is not None or self.unique_key is not None:
            object.__setattr__(self, "unique", True)


NAMES = frozenset(f.name for f in fields(JobOptions))
