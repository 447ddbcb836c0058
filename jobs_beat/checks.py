"""System checks for periodic jobs: ``manage.py check`` explains a bad JOBS_BEAT_SCHEDULE."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.compatibility)
def check_beat_schedule(app_configs=None, **kwargs):
    from jobs.registry import registry
    from jobs_beat.sync import EntryError, parse_entry

    errors = []
    if not settings.USE_TZ:
        errors.append(Error(
            "jobs_beat needs USE_TZ = True: due times are moments, not wall-clock readings.",
            hint="Set USE_TZ = True (Django's default).", obj="settings.USE_TZ",
            id="jobs_beat.E008"))
    setting = getattr(settings, "JOBS_BEAT_SCHEDULE", None)
    if setting is None:
        return errors
    if not isinstance(setting, dict):
        errors.append(Error(
            "JOBS_BEAT_SCHEDULE must be a dict of task name to entry.",
            hint="JOBS_BEAT_SCHEDULE = {'add-every-10s': {'task': 'myapp.jobs.add', "
                 "'schedule': timedelta(seconds=10)}}",
            obj="settings.JOBS_BEAT_SCHEDULE", id="jobs_beat.E001"))
        return errors
    for name, spec in setting.items():
        try:
            entry = parse_entry(name, spec)
        except EntryError as exc:
            errors.append(Error(str(exc), hint=exc.hint or None,
                                obj="settings.JOBS_BEAT_SCHEDULE", id=exc.id))
            continue
        if entry.task not in registry:
            errors.append(Warning(
                f"JOBS_BEAT_SCHEDULE[{name!r}] names the job {entry.task!r}, which is not "
                "registered in this project.",
                hint="Check the name (module.function), or make sure the module that defines "
                     "it is imported (<app>/jobs.py and <app>/tasks.py are found automatically). "
                     "Workers that don't have the job store its runs as dead letters.",
                obj="settings.JOBS_BEAT_SCHEDULE", id="jobs_beat.W001"))
    return errors
