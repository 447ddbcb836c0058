"""Django settings for the benchmark: the project's settings with the bench's database,
broker, queue and result options taken from ``BENCH_*`` environment variables.

``bench/run.py`` sets the variables and passes them on to every worker it starts, so the
driver and the workers of one run agree on names.
"""

import importlib.util
import json
import os

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, TASKS, database_from_url

DEBUG = False  # DEBUG keeps every query in memory: no worker runs like that in production

DATABASES = {
    "default": database_from_url(
        os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench")
    )
}

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
# Celery's result tables, for Celery's worker and for the driver that counts and purges them.
# Not in a jobs worker (the only process given BENCH_JOBS_IGNORE_RESULT): installed, the app
# imports Celery, about 4 MB that a jobs worker's memory figure would wrongly include.
if importlib.util.find_spec("django_celery_results") and \
        "BENCH_JOBS_IGNORE_RESULT" not in os.environ:
    INSTALLED_APPS.append("django_celery_results")
if importlib.util.find_spec("django_tasks_db"):
    # django-tasks-db, the database backend of Django's Tasks API: the peer of django://.
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {**TASKS, "bench-db": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": []}}

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/9")
PREFIX = os.environ.get("BENCH_PREFIX", "bench")
QUEUE = os.environ.get("BENCH_QUEUE", f"{PREFIX}-jobs")


def broker_transport_options(url: str = BROKER_URL) -> dict:
    """Keys of one run live under one prefix on Redis, so the run can remove them all."""
    if url.startswith("redis"):
        return {"global_keyprefix": f"{PREFIX}:"}
    return {}


JOBS = {
    "BROKER_URL": BROKER_URL,
    "BROKER_TRANSPORT_OPTIONS": broker_transport_options(),
    "TASK_DEFAULT_QUEUE": QUEUE,
    "TASK_IGNORE_RESULT": os.environ.get("BENCH_JOBS_IGNORE_RESULT") == "1",
    **json.loads(os.environ.get("BENCH_JOBS_EXTRA", "{}")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
