"""The tasks of the benchmark for django-tasks-db (Django's Tasks API, results in the
database): run by its own worker, ``manage.py db_worker --backend bench-db``."""

from __future__ import annotations

import os

try:
    from django.tasks import task  # Django 6
except ImportError:
    from django_tasks import task  # the backport, on Django 5.2

from bench import marks

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
QUEUE = os.environ.get("BENCH_DTDB_QUEUE", f"{PREFIX}-django-tasks")
BACKEND = "bench-db"  # bench/settings.py's TASKS alias


@task(backend=BACKEND, queue_name=QUEUE)
def noop():
    return None


@task(backend=BACKEND, queue_name=QUEUE)
def mark(key: str):
    marks.stamp(key)
