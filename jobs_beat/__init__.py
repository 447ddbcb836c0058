"""Periodic jobs: schedules kept in the ORM, edited in the admin, sent by ``jobs_beat``.

    from datetime import timedelta
    from jobs_beat import crontab

    JOBS_BEAT_SCHEDULE = {
        "add-every-10s": {"task": "myapp.jobs.add", "schedule": timedelta(seconds=10),
                          "args": (16, 16)},
        "weekly-report": {"task": "myapp.jobs.report",
                          "schedule": crontab(hour=7, minute=30, day_of_week=1)},
    }

    crontab(minute="*/15").next_run(after=some_aware_datetime)   # the next aware datetime
"""

from jobs_beat.schedules import InvalidSchedule, Schedule, clocked, crontab, interval

__all__ = ["InvalidSchedule", "Schedule", "clocked", "crontab", "interval"]
