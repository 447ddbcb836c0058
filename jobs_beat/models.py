"""Periodic tasks and their schedules, kept in the ORM and edited in the admin.

A :class:`PeriodicTask` names a job, its arguments and one schedule: an interval, a crontab
or a clocked time. ``next_run_at`` (indexed) is when it is due; the scheduler keeps it, and
``plan`` records what it was computed from, so a schedule changed behind the model's back
(``QuerySet.update()``, another program) is noticed and planned again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from functools import lru_cache

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from jobs_beat import missed_runs, schedules


def default_timezone_name() -> str:
    """The default zone of a new crontab: the project's TIME_ZONE."""
    return schedules.default_zone().key


def validate_timezone(value: str) -> None:
    try:
        schedules.zone(value)
    except schedules.InvalidSchedule:
        raise ValidationError(f"{value!r} is not a known time zone.") from None


class Period(models.TextChoices):
    DAYS = "days", "days"
    HOURS = "hours", "hours"
    MINUTES = "minutes", "minutes"
    SECONDS = "seconds", "seconds"


class IntervalSchedule(models.Model):
    """Every N seconds, minutes, hours or days of real time."""

    every = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    period = models.CharField(max_length=10, choices=Period.choices)

    class Meta:
        verbose_name = "interval"
        ordering = ["period", "every"]
        constraints = [
            models.UniqueConstraint(fields=["every", "period"], name="jobs_beat_interval_unique"),
            models.CheckConstraint(condition=models.Q(every__gte=1),
                                   name="jobs_beat_interval_positive"),
        ]

    def __str__(self) -> str:
        return self.schedule.describe()

    @property
    def schedule(self) -> schedules.interval:
        return schedules.interval(timedelta(**{self.period: self.every}))

    def key(self) -> tuple:
        return ("interval", int(self.every), str(self.period))

    @classmethod
    def from_timedelta(cls, every: timedelta) -> tuple[int, str]:
        """(every, period) in the largest unit that holds ``every`` exactly."""
        seconds = every.total_seconds()
        if seconds < 1 or seconds != int(seconds):
            raise ValueError(f"an interval must be a whole number of seconds, not {every}")
        for period, size in ((Period.DAYS, 86400), (Period.HOURS, 3600),
                             (Period.MINUTES, 60), (Period.SECONDS, 1)):
            if seconds % size == 0:
                return int(seconds // size), period
        raise AssertionError("unreachable")


class CrontabSchedule(models.Model):
    """Celery's crontab fields, and the time zone its times are in."""

    minute = models.CharField(max_length=240, default="*")
    hour = models.CharField(max_length=96, default="*")
    day_of_week = models.CharField(max_length=64, default="*",
                                   help_text="0-6 or sun-sat; Sunday is 0.")
    day_of_month = models.CharField(max_length=124, default="*")
    month_of_year = models.CharField(max_length=64, default="*")
    timezone = models.CharField(max_length=63, default=default_timezone_name,
                                validators=[validate_timezone])

    class Meta:
        verbose_name = "crontab"
        ordering = ["month_of_year", "day_of_month", "day_of_week", "hour", "minute", "timezone"]
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "hour", "day_of_week", "day_of_month", "month_of_year",
                        "timezone"],
                name="jobs_beat_crontab_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.expression} ({self.timezone})"

    @property
    def expression(self) -> str:
        return " ".join(str(getattr(self, name)) for name in schedules.CRON_ORDER)

    @property
    def schedule(self) -> schedules.crontab:
        return _crontab(*(str(getattr(self, name)) for name in schedules.FIELDS),
                        str(self.timezone))

    def key(self) -> tuple:
        return ("crontab", *(str(getattr(self, name)) for name in schedules.FIELDS),
                str(self.timezone))

    def clean(self) -> None:
        try:
            normalized = self.schedule
        except schedules.InvalidSchedule as exc:
            raise ValidationError(exc.errors) from None
        for name in schedules.FIELDS:  # "Monday" is stored as "mon", " 5" as "5"
            setattr(self, name, getattr(normalized, name))

    def save(self, *args, **kwargs) -> None:
        _ = self.schedule  # a crontab that can't work is refused here, naming the field
        super().save(*args, **kwargs)


@lru_cache(maxsize=4096)
def _crontab(*fields: str) -> schedules.crontab:
    # Parsing and checking a crontab takes a millisecond; many tasks share a few crontabs.
    *values, tz = fields
    return schedules.crontab(*values, tz=tz)


class ClockedSchedule(models.Model):
    """A single run at a date-time."""

    clocked_time = models.DateTimeField("run at")

    class Meta:
        verbose_name = "clocked time"
        ordering = ["clocked_time"]

    def __str__(self) -> str:
        return self.schedule.describe()

    @property
    def schedule(self) -> schedules.clocked:
        return schedules.clocked(self.clocked_time)

    def key(self) -> tuple:
        return ("clocked", _timestamp(self.clocked_time))


class MissedRuns(models.TextChoices):
    RUN_ONCE = missed_runs.RUN_ONCE, "Run once to catch up"
    SKIP = missed_runs.SKIP, "Skip them"


class PeriodicTaskQuerySet(models.QuerySet):
    def enabled(self):
        return self.filter(enabled=True)

    def due(self, now: datetime):
        """Enabled tasks whose next run is at or before ``now`` (an index range scan)."""
        return self.filter(enabled=True, next_run_at__lte=now).order_by("next_run_at", "pk")

    def with_schedules(self):
        return self.select_related("interval", "crontab", "clocked")


#: Fields only the scheduler writes; ``save()`` leaves them alone so that an admin edit
#: never undoes a run recorded meanwhile.
SCHEDULER_FIELDS = ("next_run_at", "plan", "last_run_at", "total_run_count", "last_job_id")

#: The values the plan is computed from, as ``values_list()`` names them.
PLAN_FIELDS = (
    "enabled", "start_time", "interval__every", "interval__period", "crontab__minute",
    "crontab__hour", "crontab__day_of_week", "crontab__day_of_month", "crontab__month_of_year",
    "crontab__timezone", "clocked__clocked_time",
)


class PeriodicTask(models.Model):
    """A job sent on a schedule."""

    name = models.CharField(max_length=200, unique=True)
    task = models.CharField("job", max_length=255,
                            help_text="The registered name of the job, e.g. myapp.jobs.report.")
    interval = models.ForeignKey(IntervalSchedule, on_delete=models.PROTECT, null=True,
                                 blank=True)
    crontab = models.ForeignKey(CrontabSchedule, on_delete=models.PROTECT, null=True,
                                blank=True)
    clocked = models.ForeignKey(ClockedSchedule, on_delete=models.PROTECT, null=True,
                                blank=True)
    args = models.JSONField(default=list, blank=True, encoder=DjangoJSONEncoder,
                            help_text='A JSON list, e.g. [16, 16].')
    kwargs = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder,
                              help_text='A JSON object, e.g. {"user_id": 42}.')
    queue = models.CharField(max_length=200, blank=True,
                             help_text="Blank: the job's own queue, else TASK_ROUTES, else "
                                       "the default queue.")
    priority = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(255)],
        help_text="0-255; blank: the job's own.")
    expire_seconds = models.PositiveIntegerField(
        "expires after (seconds)", null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="A run no worker has started this long after it was sent is not run.")
    enabled = models.BooleanField(default=True)
    one_off = models.BooleanField(default=False,
                                  help_text="Run once, then disable the task.")
    start_time = models.DateTimeField(null=True, blank=True,
                                      help_text="Not before this time.")
    end_time = models.DateTimeField(null=True, blank=True,
                                    help_text="Not after this time; the task then disables "
                                              "itself.")
    missed_runs = models.CharField(
        max_length=20, choices=MissedRuns.choices, default=MissedRuns.RUN_ONCE,
        help_text="When the scheduler was down at a due time: run once when it is back "
                  "(however many were missed), or skip to the next due time.")
    description = models.TextField(blank=True)
    from_settings = models.BooleanField(
        default=False, editable=False,
        help_text="Defined in JOBS_BEAT_SCHEDULE: edits here are replaced when the "
                  "scheduler starts.")
    # Kept by the scheduler.
    next_run_at = models.DateTimeField("next run", null=True, blank=True, editable=False)
    plan = models.CharField(max_length=32, blank=True, editable=False)
    last_run_at = models.DateTimeField("last run", null=True, blank=True, editable=False)
    total_run_count = models.PositiveIntegerField("total runs", default=0, editable=False)
    last_job_id = models.CharField("last job id", max_length=255, blank=True, editable=False)
    date_changed = models.DateTimeField("changed", auto_now=True)

    objects = PeriodicTaskQuerySet.as_manager()

    class Meta:
        verbose_name = "periodic task"
        ordering = ["name"]
        indexes = [
            models.Index(fields=["next_run_at"], condition=models.Q(enabled=True),
                         name="jobs_beat_task_due"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(interval__isnull=False, crontab__isnull=True, clocked__isnull=True)
                    | models.Q(interval__isnull=True, crontab__isnull=False, clocked__isnull=True)
                    | models.Q(interval__isnull=True, crontab__isnull=True, clocked__isnull=False)
                ),
                name="jobs_beat_task_one_schedule",
                violation_error_message="Choose exactly one schedule: an interval, a crontab "
                                        "or a clocked time.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    # The schedule ------------------------------------------------------------------------

    @property
    def schedule_row(self) -> IntervalSchedule | CrontabSchedule | ClockedSchedule | None:
        return self.interval or self.crontab or self.clocked

    @property
    def schedule(self) -> schedules.Schedule:
        row = self.schedule_row
        if row is None:
            raise schedules.InvalidSchedule({"interval": "the task has no schedule"})
        return row.schedule

    def describe_schedule(self) -> str:
        try:
            return self.schedule.describe()
        except (schedules.InvalidSchedule, ValueError) as exc:
            return f"invalid schedule: {exc}"

    # Planning ----------------------------------------------------------------------------

    def plan_key(self) -> str:
        row = self.schedule_row
        return plan_key(self.enabled, self.start_time, row.key() if row else None)

    def replan(self, now: datetime | None = None) -> None:
        """Compute ``next_run_at`` afresh (in memory) from the schedule, as of ``now``."""
        self.plan = self.plan_key()
        self.next_run_at = None
        if self.enabled:
            first = self.schedule.first_run(now or timezone.now(), self.start_time)
            if first is not None and (self.end_time is None or first <= self.end_time):
                self.next_run_at = first

    def save(self, *args, **kwargs) -> None:
        replanned = self.plan != self.plan_key()
        if replanned:
            self.replan()
        planned = {"next_run_at", "plan"} if replanned else set()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, *planned}
        elif not self._state.adding and not kwargs.get("force_insert"):
            skip = set(SCHEDULER_FIELDS) - planned
            kwargs["update_fields"] = [f.name for f in self._meta.concrete_fields
                                       if not f.primary_key and f.name not in skip]
        super().save(*args, **kwargs)


def plan_key(enabled: bool, start_time: datetime | None, schedule_key: tuple | None) -> str:
    """A short fingerprint of what a task's next run is computed from."""
    text = repr((bool(enabled), _timestamp(start_time), schedule_key))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def plan_key_of_values(values: tuple) -> str:
    """:func:`plan_key` from a ``values_list(*PLAN_FIELDS)`` row, without loading models."""
    (enabled, start_time, every, period, minute, hour, day_of_week, day_of_month,
     month_of_year, tz, clocked_time) = values
    if every is not None:
        key = ("interval", every, period)
    elif minute is not None:
        key = ("crontab", minute, hour, day_of_week, day_of_month, month_of_year, tz)
    elif clocked_time is not None:
        key = ("clocked", _timestamp(clocked_time))
    else:
        key = None
    return plan_key(enabled, start_time, key)


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None
