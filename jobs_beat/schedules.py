"""When periodic jobs are due: intervals, crontabs and clocked times. Pure time math.

Nothing here reads the database. A schedule answers ``next_run(after)``, the first due time
strictly after an aware datetime, and the two questions the scheduler asks around it: the
first run of a new task (``first_run``) and the run after one it fired (``after_run``).

Crontab times are wall-clock times in the schedule's time zone. Where daylight saving time
moves the clocks:

* a time the clocks skip (02:30 when they jump from 02:00 to 03:00) runs once, moved on by
  the length of the gap: at 03:30 summer time;
* a time the clocks repeat (02:30 when they go back from 03:00 to 02:00) runs once, at its
  first occurrence. Schedules that run every hour (hour ``*``) run in the repeated hour too,
  so that "every 15 minutes" stays every 15 minutes of real time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

__all__ = ["InvalidSchedule", "Schedule", "clocked", "crontab", "interval"]


class InvalidSchedule(ValueError):
    """A schedule that can't work; ``errors`` maps each bad field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


def aware(value: datetime, what: str = "after") -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what}={value!r} is naive; pass an aware datetime")
    return value


def default_zone() -> ZoneInfo:
    """The project's TIME_ZONE (UTC when Django isn't configured)."""
    from django.conf import settings

    name = getattr(settings, "TIME_ZONE", None) if settings.configured else None
    return zone(name or "UTC")


def zone(name: str | ZoneInfo) -> ZoneInfo:
    if isinstance(name, ZoneInfo):
        return name
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule({"timezone": f"{name!r} is not a known time zone"}) from None


class Schedule:
    """The base of every schedule: ``next_run(after)`` and what follows from it."""

    def next_run(self, after: datetime) -> datetime | None:
        """The first due time strictly after ``after``, or None if there is none."""
        raise NotImplementedError

    def first_run(self, now: datetime, start: datetime | None = None) -> datetime | None:
        """The first due time of a task planned at ``now`` that may not start before ``start``."""
        if start is not None and start > now:
            return self.next_run(start - timedelta(microseconds=1))
        return self.next_run(now)

    def after_run(self, due: datetime, now: datetime) -> datetime | None:
        """The due time after ``due`` was run at ``now``; due times missed in between are
        not run (see :func:`settle`)."""
        return self.next_run(max(due, now))

    def describe(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.describe()


# Intervals -------------------------------------------------------------------------------


class interval(Schedule):
    """Every ``every`` of real time: ``interval(timedelta(seconds=10))``, ``interval(minutes=5)``.

    A ``timedelta`` or a number of seconds in ``JOBS_BEAT_SCHEDULE`` means the same.
    """

    def __init__(self, every: timedelta | float | None = None, *, days: float = 0,
                 hours: float = 0, minutes: float = 0, seconds: float = 0) -> None:
        if every is None:
            every = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        elif isinstance(every, (int, float)) and not isinstance(every, bool):
            every = timedelta(seconds=every)
        if not isinstance(every, timedelta):
            raise TypeError(f"interval: every={every!r} must be a timedelta or seconds")
        if every <= timedelta(0):
            raise InvalidSchedule({"every": f"{every} is not a positive interval"})
        self.every = every

    def next_run(self, after: datetime) -> datetime:
        return aware(after) + self.every

    def first_run(self, now: datetime, start: datetime | None = None) -> datetime:
        """One interval from ``now``; with ``start``: ``start``, then every interval after it."""
        if start is None:
            return aware(now, "now") + self.every
        if start > now:
            return start
        return self._on_grid(start, now)

    def after_run(self, due: datetime, now: datetime) -> datetime:
        """The first time after ``now`` on the grid of ``due`` + k intervals (no drift)."""
        return self._on_grid(due, now)

    def _on_grid(self, anchor: datetime, now: datetime) -> datetime:
        if now < anchor:
            return anchor + self.every
        return anchor + ((now - anchor) // self.every + 1) * self.every

    def describe(self) -> str:
        return "every " + _duration(self.every)

    def __eq__(self, other) -> bool:
        return isinstance(other, interval) and other.every == self.every

    def __hash__(self) -> int:
        return hash(("interval", self.every))

    def __repr__(self) -> str:
        return f"<interval {_duration(self.every)}>"


def _duration(every: timedelta) -> str:
    seconds = every.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} seconds"


# Clocked ---------------------------------------------------------------------------------


class clocked(Schedule):
    """Once, at an aware date-time."""

    def __init__(self, at: datetime) -> None:
        self.at = aware(at, "at")

    def next_run(self, after: datetime) -> datetime | None:
        return self.at if self.at > aware(after) else None

    def first_run(self, now: datetime, start: datetime | None = None) -> datetime:
        # A clocked task planned after its time still runs once (late, see settle()).
        return self.at

    def after_run(self, due: datetime, now: datetime) -> None:
        return None

    def describe(self) -> str:
        return f"once, at {self.at.isoformat(' ', 'seconds')}"

    def __eq__(self, other) -> bool:
        return isinstance(other, clocked) and other.at == self.at

    def __hash__(self) -> int:
        return hash(("clocked", self.at))

    def __repr__(self) -> str:
        return f"<clocked {self.at.isoformat()}>"


# Crontabs --------------------------------------------------------------------------------

#: The fields in the order of Celery's ``crontab(...)`` arguments.
FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
#: The same fields in the order of a cron line.
CRON_ORDER = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
ALLOWED = {
    "minute": "0-59",
    "hour": "0-23",
    "day_of_week": "0-6 or sun-sat, Sunday = 0",
    "day_of_month": "1-31",
    "month_of_year": "1-12 or jan-dec",
}
_FULL_NAMES = {
    full: full[:3] for full in (
        "sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
        "january", "february", "march", "april", "june", "july", "august", "september",
        "october", "november", "december",
    )
}
_WORD = re.compile(r"[a-z]+")
#: A point from which "does this crontab ever match?" is asked.
_PROBE = datetime(2000, 1, 1)


class crontab(Schedule):
    """Celery's crontab: ``crontab(minute="*/15")``, ``crontab(hour=7, minute=30,
    day_of_week=1)``, or a cron line: ``crontab("*/5 * * * *")``.

    Fields take what cron takes (numbers, ``*``, ``a-b``, ``*/n``, ``a-b/n``, lists; day and
    month names). Sunday is 0. When both ``day_of_month`` and ``day_of_week`` are
    restricted, a day must match both, as in Celery (classic cron takes either).
    ``tz`` is the zone the times are in (default: the project's TIME_ZONE).
    """

    def __init__(self, minute="*", hour="*", day_of_week="*", day_of_month="*",
                 month_of_year="*", *, tz: str | ZoneInfo | None = None) -> None:
        given = dict(zip(FIELDS, (minute, hour, day_of_week, day_of_month, month_of_year), strict=True))
        if isinstance(minute, str) and len(minute.split()) > 1:
            if any(given[name] != "*" for name in FIELDS[1:]):
                raise TypeError("crontab(): pass a cron line alone, or the fields one by one")
            given = _split_line(minute)
        fields = {name: _normalize(name, value) for name, value in given.items()}
        errors = field_errors(fields)
        if errors:
            raise InvalidSchedule(errors)
        self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year = (
            fields[name] for name in FIELDS)
        self._zone = zone(tz) if tz is not None else None
        self.expression = " ".join(fields[name] for name in CRON_ORDER)
        _check_occurs(self.expression)

    @classmethod
    def from_string(cls, line: str, tz: str | ZoneInfo | None = None) -> crontab:
        """A crontab from a five-field cron line: minute hour day-of-month month day-of-week."""
        return cls(**_split_line(line), tz=tz)

    @property
    def tz(self) -> ZoneInfo:
        return self._zone or default_zone()

    @property
    def fields(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FIELDS}

    def next_run(self, after: datetime) -> datetime:
        """The first time after ``after`` that the crontab names, in its time zone."""
        tz = self.tz
        after = aware(after).astimezone(UTC)
        wall = after.astimezone(tz)
        naive = wall.replace(tzinfo=None, fold=0)
        hourly = self.hour == "*"
        best = self._first_after(naive, after, tz, hourly)
        if hourly and wall.fold == 0 and _repeated(naive, tz):
            # ``after`` is in the first pass of a repeated hour: the second pass of an earlier
            # wall-clock time can come before the next time in the first pass.
            again = self._second_pass(naive, tz)
            if again is not None and again > after:
                best = min(best, again)
        return best.astimezone(tz)

    def _first_after(self, naive: datetime, after: datetime, tz: ZoneInfo,
                     hourly: bool) -> datetime:
        times = croniter(self.expression, naive, day_or=False)
        # Times skipped here are the rest of a repeated hour whose first pass is over: at
        # most one per minute of it.
        for _ in range(24 * 60):
            candidate = times.get_next(datetime)
            for instant in _instants(candidate, tz, hourly):
                if instant > after:
                    return instant
        raise RuntimeError(f"crontab {self.expression!r}: no time after {after.isoformat()}")

    def _second_pass(self, naive: datetime, tz: ZoneInfo) -> datetime | None:
        first = naive.replace(tzinfo=tz, fold=0).utcoffset()
        second = naive.replace(tzinfo=tz, fold=1).utcoffset()
        start = naive - (first - second) - timedelta(seconds=1)
        times = croniter(self.expression, start, day_or=False)
        while (candidate := times.get_next(datetime)) <= naive:
            if _repeated(candidate, tz):
                return candidate.replace(tzinfo=tz, fold=1).astimezone(UTC)
        return None

    def describe(self) -> str:
        """In words ("At 07:30, only on Monday (Europe/Berlin)") with cron-descriptor when it
        is installed; the cron line otherwise."""
        return f"{describe_cron(self.expression)} ({self.tz.key})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, crontab) and other.expression == self.expression
                and other.tz == self.tz)

    def __hash__(self) -> int:
        return hash(("crontab", self.expression, self.tz.key))

    def __repr__(self) -> str:
        return f"<crontab {self.expression} ({self.tz.key})>"


def field_errors(fields: dict[str, str]) -> dict[str, str]:
    """What is wrong with each bad crontab field, checked one at a time with croniter."""
    errors = {}
    for name, value in fields.items():
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            errors[name] = _bad(name, value)
            continue
        probe = {other: "*" for other in CRON_ORDER}
        probe[name] = value
        try:
            croniter(" ".join(probe[f] for f in CRON_ORDER), _PROBE, day_or=False).get_next()
        except (CroniterError, ValueError, KeyError, IndexError):
            errors[name] = _bad(name, value)
    return errors


def _bad(name: str, value) -> str:
    label = name.replace("_", " ")
    return (f"{value!r} is not a valid {label}: use {ALLOWED[name]}, *, */n, a-b, a-b/n "
            "or a comma-separated list of these")


def _check_occurs(expression: str) -> None:
    try:
        croniter(expression, _PROBE, day_or=False).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidSchedule({
            "day_of_month": f"the crontab {expression!r} names no date that exists "
                            "(such as 30 February)",
        }) from None


def _split_line(line: str) -> dict[str, str]:
    parts = str(line).split()
    if len(parts) != 5:
        raise InvalidSchedule({"minute": f"{line!r} is not a cron line of five fields "
                                         "(minute hour day-of-month month day-of-week)"})
    return dict(zip(CRON_ORDER, parts, strict=True))


def _normalize(name: str, value) -> str:
    if isinstance(value, bool):
        return repr(value)  # rejected by field_errors
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset, range)):
        return ",".join(str(v) for v in sorted(value))
    if not isinstance(value, str):
        return repr(value)
    value = value.strip().lower()
    if name in ("day_of_week", "month_of_year"):
        value = _WORD.sub(lambda m: _FULL_NAMES.get(m.group(0), m.group(0)), value)
    return value


def _offsets(naive: datetime, tz: ZoneInfo) -> tuple[timedelta, timedelta]:
    return (naive.replace(tzinfo=tz, fold=0).utcoffset(),
            naive.replace(tzinfo=tz, fold=1).utcoffset())


def _repeated(naive: datetime, tz: ZoneInfo) -> bool:
    """Does this wall-clock time happen twice (the clocks go back over it)?"""
    first, second = _offsets(naive, tz)
    return first > second


def _instants(naive: datetime, tz: ZoneInfo, hourly: bool) -> list[datetime]:
    """The moments a wall-clock time names, in UTC, earliest first.

    A skipped time resolves with the offset from before the jump (PEP 495's fold=0), which
    moves it on by the length of the gap. A repeated time is its first occurrence, and for
    an hourly schedule its second one as well.
    """
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if hourly and _repeated(naive, tz):
        return [first, naive.replace(tzinfo=tz, fold=1).astimezone(UTC)]
    return [first]


def describe_cron(expression: str) -> str:
    try:
        from cron_descriptor import ExpressionDescriptor
    except ImportError:
        return expression
    try:
        text = ExpressionDescriptor(expression, use_24hour_time_format=True,
                                    locale_code="en_US").get_description()
    except Exception:  # an expression croniter takes but cron-descriptor doesn't know
        return expression
    # cron-descriptor words classic cron's either-day rule; ours needs both days to match.
    return text.replace(", or on ", ", only on ")
