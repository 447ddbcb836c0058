"""``JOBS_BEAT_SCHEDULE``: periodic tasks declared in settings, synced into the database.

The entries have Celery's beat_schedule form::

    JOBS_BEAT_SCHEDULE = {
        "add-every-10s": {"task": "app.jobs.add", "schedule": timedelta(seconds=10),
                          "args": (16, 16)},
        "weekly-report": {"task": "app.jobs.report",
                          "schedule": crontab(hour=7, minute=30, day_of_week=1),
                          "options": {"queue": "reports", "expires": 3600}},
    }

``schedule`` is a timedelta or a number of seconds, a :class:`~jobs_beat.crontab` or a cron
line, or a datetime (one run). When a scheduler starts, each entry becomes (or updates) the
periodic task of the same name; tasks that came from entries since removed are deleted.
Whether a task is enabled is left as the admin set it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from jobs.options import priority_problem, queue_problem
from jobs_beat import schedules
from jobs_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    MissedRuns,
    PeriodicTask,
)

logger = logging.getLogger("jobs.beat")

ENTRY_KEYS = ("task", "schedule", "args", "kwargs", "options", "description", "missed_runs",
              "one_off")
OPTION_KEYS = ("queue", "priority", "expires")


class EntryError(ValueError):
    """A bad JOBS_BEAT_SCHEDULE entry; ``id`` is the system check's."""

    def __init__(self, id: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.id, self.hint = id, hint


@dataclass(frozen=True)
class Entry:
    name: str
    task: str
    schedule: schedules.Schedule
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    queue: str = ""
    priority: int | None = None
    expire_seconds: int | None = None
    description: str = ""
    missed_runs: str = MissedRuns.RUN_ONCE
    one_off: bool = False


def configured() -> dict:
    return getattr(settings, "JOBS_BEAT_SCHEDULE", None) or {}


def parse_entry(name, spec) -> Entry:
    """An :class:`Entry` from one item of the setting, or EntryError saying what is wrong."""
    where = f"JOBS_BEAT_SCHEDULE[{name!r}]"
    if not isinstance(name, str) or not name or len(name) > 200:
        raise EntryError("jobs_beat.E002", f"{where}: the name must be a string of 1-200 "
                                           "characters.")
    if not isinstance(spec, dict) or not isinstance(spec.get("task"), str) or not spec["task"]:
        raise EntryError("jobs_beat.E002", f"{where} must be a dict with a 'task' (a job name).",
                         "For example {'task': 'myapp.jobs.add', 'schedule': timedelta(seconds=10)}.")
    unknown = sorted(set(spec) - set(ENTRY_KEYS))
    if unknown:
        raise EntryError("jobs_beat.E005", f"{where} has unknown key(s): {', '.join(unknown)}.",
                         f"Known keys: {', '.join(ENTRY_KEYS)}.")
    args, kwargs = _arguments(where, spec)
    queue, priority, expires = _options(where, spec.get("options") or {})
    missed = spec.get("missed_runs", MissedRuns.RUN_ONCE)
    if missed not in MissedRuns.values:
        raise EntryError("jobs_beat.E007", f"{where}: missed_runs={missed!r} is not a policy.",
                         f"Use one of: {', '.join(MissedRuns.values)}.")
    return Entry(
        name=name, task=spec["task"], schedule=to_schedule(where, spec.get("schedule")),
        args=args, kwargs=kwargs, queue=queue, priority=priority, expire_seconds=expires,
        description=str(spec.get("description") or ""), missed_runs=missed,
        one_off=bool(spec.get("one_off", False)),
    )


def to_schedule(where: str, value) -> schedules.Schedule:
    """The schedule an entry's ``schedule`` value means."""
    try:
        if isinstance(value, schedules.Schedule):
            schedule = value
        elif isinstance(value, timedelta) or (isinstance(value, (int, float))
                                              and not isinstance(value, bool)):
            schedule = schedules.interval(value)
        elif isinstance(value, str):
            schedule = schedules.crontab.from_string(value)
        elif isinstance(value, datetime):
            schedule = schedules.clocked(value)
        else:
            raise EntryError(
                "jobs_beat.E003", f"{where}: schedule={value!r} is not a schedule.",
                "Use a timedelta or seconds, crontab(...) or a cron line such as "
                "'*/5 * * * *', or a datetime for one run.")
        if isinstance(schedule, schedules.interval):
            IntervalSchedule.from_timedelta(schedule.every)
    except (schedules.InvalidSchedule, ValueError, TypeError) as exc:
        if isinstance(exc, EntryError):
            raise
        raise EntryError("jobs_beat.E003", f"{where}: bad schedule: {exc}.") from None
    return schedule


def _arguments(where: str, spec: dict) -> tuple[list, dict]:
    args, kwargs = spec.get("args", ()), spec.get("kwargs", {})
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise EntryError("jobs_beat.E004", f"{where}: args must be a list or tuple and kwargs "
                                           "a dict.")
    try:
        json.dumps([list(args), kwargs])
    except (TypeError, ValueError) as exc:
        raise EntryError("jobs_beat.E004", f"{where}: args and kwargs must be JSON values "
                                           f"(they are stored in the database): {exc}.") from None
    return list(args), dict(kwargs)


def _options(where: str, options) -> tuple[str, int | None, int | None]:
    if not isinstance(options, dict):
        raise EntryError("jobs_beat.E006", f"{where}: options must be a dict.")
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise EntryError("jobs_beat.E006", f"{where}: unknown option(s): {', '.join(unknown)}.",
                         f"Known options: {', '.join(OPTION_KEYS)}.")
    queue, priority = options.get("queue") or "", options.get("priority")
    problem = (queue and queue_problem(queue)) or priority_problem(priority)
    if problem:
        raise EntryError("jobs_beat.E006", f"{where}: {problem}.")
    expires = options.get("expires")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))
                                or expires < 1):
        raise EntryError("jobs_beat.E006",
                         f"{where}: expires={expires!r} must be a number of seconds (at least 1).")
    return queue, priority, int(expires) if expires is not None else None


# Syncing -------------------------------------------------------------------------------------


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def sync_schedule(setting: dict | None = None) -> SyncReport:
    """Make the periodic tasks match ``JOBS_BEAT_SCHEDULE`` (or ``setting``)."""
    setting = configured() if setting is None else setting
    entries = [parse_entry(name, spec) for name, spec in setting.items()]
    report = SyncReport()
    with transaction.atomic():
        for entry in entries:
            _sync_entry(entry, report)
        stale = PeriodicTask.objects.filter(from_settings=True).exclude(
            name__in=[e.name for e in entries])
        report.removed = sorted(stale.values_list("name", flat=True))
        stale.delete()
    for what, names in (("added", report.created), ("updated", report.updated),
                        ("removed", report.removed)):
        if names:
            logger.info("JOBS_BEAT_SCHEDULE: %s %s", what, ", ".join(names))
    return report


def _sync_entry(entry: Entry, report: SyncReport) -> None:
    values = {
        "task": entry.task, "args": entry.args, "kwargs": entry.kwargs, "queue": entry.queue,
        "priority": entry.priority, "expire_seconds": entry.expire_seconds,
        "description": entry.description, "missed_runs": entry.missed_runs,
        "one_off": entry.one_off, "from_settings": True, **_schedule_row(entry.schedule),
    }
    task = PeriodicTask.objects.filter(name=entry.name).first()
    if task is None:
        try:
            with transaction.atomic():
                PeriodicTask(name=entry.name, **values).save()
            report.created.append(entry.name)
            return
        except IntegrityError:  # another scheduler starting at the same time made it
            task = PeriodicTask.objects.get(name=entry.name)
    changed = [key for key, value in values.items() if getattr(task, key) != value]
    if changed:
        for key in changed:
            setattr(task, key, values[key])
        task.save()
        report.updated.append(entry.name)


def _schedule_row(schedule: schedules.Schedule) -> dict:
    row = {"interval": None, "crontab": None, "clocked": None}
    if isinstance(schedule, schedules.interval):
        every, period = IntervalSchedule.from_timedelta(schedule.every)
        row["interval"] = _get_or_create(IntervalSchedule, every=every, period=period)
    elif isinstance(schedule, schedules.crontab):
        row["crontab"] = _get_or_create(CrontabSchedule, timezone=schedule.tz.key,
                                        **schedule.fields)
    elif isinstance(schedule, schedules.clocked):
        row["clocked"] = (ClockedSchedule.objects.filter(clocked_time=schedule.at).first()
                          or ClockedSchedule.objects.create(clocked_time=schedule.at))
    else:
        raise TypeError(f"{schedule!r} can't be stored")
    return row


def _get_or_create(model, **fields):
    try:
        with transaction.atomic():
            return model.objects.get_or_create(**fields)[0]
    except IntegrityError:
        return model.objects.get(**fields)
