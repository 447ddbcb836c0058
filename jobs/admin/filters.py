"""List filters of the jobs admin: online workers, message status, field values, date ranges.

The job results table can hold millions of rows, so no filter reads the table to find its
choices (Django's default for a plain field is a ``SELECT DISTINCT`` over all of it): states
come from :class:`States`, job names from the registry, queues from the settings and the
workers, worker names from the workers' heartbeat rows.
"""

from __future__ import annotations

from datetime import date, datetime, time

from django.contrib import admin
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from jobs.models import Message, States, Worker
from jobs.registry import registry

#: Heartbeat rows read for the queue and worker choices (the most recently seen).
RECENT_WORKERS = 200


class OnlineFilter(admin.SimpleListFilter):
    title = "online"
    parameter_name = "online"

    def lookups(self, request, model_admin):
        return (("yes", "Yes"), ("no", "No"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.online()
        if self.value() == "no":
            return queryset.exclude(pk__in=Worker.objects.online().values("pk"))
        return queryset


class ValueFilter(admin.SimpleListFilter):
    """Rows whose field ``parameter_name`` equals the chosen value.

    A value given in the URL but not among the choices (an old job name, say) still filters,
    and shows as a choice.
    """

    def values(self) -> list[str]:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        values = list(self.values())
        if self.value() and self.value() not in values:
            values.append(self.value())
        return [(value, value) for value in values]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(**{self.parameter_name: self.value()})


class StateFilter(ValueFilter):
    """A state, or ``running``: STARTED and the custom states of running jobs (PROGRESS...)."""

    title = "state"
    parameter_name = "state"
    RUNNING = "running"

    def values(self):
        return [self.RUNNING, *States.values]

    def lookups(self, request, model_admin):
        return [(value, "running (any state)" if value == self.RUNNING else label)
                for value, label in super().lookups(request, model_admin)]

    def queryset(self, request, queryset):
        if self.value() == self.RUNNING:
            return queryset.running()
        return super().queryset(request, queryset)


class JobNameFilter(ValueFilter):
    title = "job name"
    parameter_name = "name"

    def values(self):
        return registry.names()


def _recent_workers() -> list[Worker]:
    return list(Worker.objects.order_by("-last_seen").only("hostname", "queues")
                [:RECENT_WORKERS])


class QueueFilter(ValueFilter):
    title = "queue"
    parameter_name = "queue"

    def values(self):
        from jobs.admin.dashboard import known_queues

        return sorted(known_queues(_recent_workers()))


class WorkerFilter(ValueFilter):
    title = "worker"
    parameter_name = "worker"

    def values(self):
        return sorted({worker.hostname for worker in _recent_workers()})


def message_status(message: Message, now=None) -> str:
    """``leased`` (a worker holds it), ``delayed`` (not due yet) or ``ready``."""
    now = now or timezone.now()
    if message.lease_until is not None and message.lease_until >= now:
        return "leased"
    if message.visible_at > now:
        return "delayed"
    return "ready"


class MessageStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return (("ready", "Ready"), ("delayed", "Delayed"), ("leased", "Leased"))

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "leased":
            return queryset.filter(lease_until__gte=now)
        if self.value() == "delayed":
            return queryset.filter(visible_at__gt=now).exclude(lease_until__gte=now)
        if self.value() == "ready":
            return queryset.visible(now)
        return queryset


class DateRangeFilter(admin.DateFieldListFilter):
    """Django's date filter (today, past 7 days, ...) with a from–to form under its links.

    The form writes the same ``<field>__gte`` / ``<field>__lt`` parameters as the links, as
    times of the current time zone.
    """

    template = "admin/jobs/date_range_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        for key in (self.lookup_kwarg_since, self.lookup_kwarg_until):
            if key in self.used_parameters:
                self.used_parameters[key] = [_aware(value)
                                             for value in self.used_parameters[key]]
        self.hidden_fields: list[tuple[str, str]] = []

    def choices(self, changelist):
        mine = (self.lookup_kwarg_since, self.lookup_kwarg_until, f"{self.field_path}__isnull")
        self.hidden_fields = [(key, value) for key, value in changelist.params.items()
                              if key not in mine]
        yield from super().choices(changelist)

    @property
    def since_value(self) -> str:
        return _input_value(self.date_params.get(self.lookup_kwarg_since))

    @property
    def until_value(self) -> str:
        return _input_value(self.date_params.get(self.lookup_kwarg_until))


def _parse(value: str) -> datetime | None:
    try:
        parsed = parse_datetime(value) or parse_date(value)
    except ValueError:
        return None
    if isinstance(parsed, date) and not isinstance(parsed, datetime):
        parsed = datetime.combine(parsed, time())
    return parsed


def _aware(value):
    """A form's local time (``2025-01-02T10:30``) as an aware datetime; other values as given
    (Django reports a bad one as a bad filter)."""
    parsed = _parse(value) if isinstance(value, str) else None
    if parsed is None:
        return value
    return timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed


def _input_value(value: str | None) -> str:
    """A parameter's time as a ``datetime-local`` input shows it, in the current time zone."""
    parsed = _parse(value) if value else None
    if parsed is None:
        return ""
    if timezone.is_aware(parsed):
        parsed = timezone.localtime(parsed)
    return parsed.strftime("%Y-%m-%dT%H:%M")
