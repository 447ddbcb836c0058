"""The floor under a prefork worker's memory: a process tree shaped like ``jobs_worker -c 2
-P prefork`` (a parent and two forked children) that loads what a worker of the bench project
can't do without, then does nothing.

    python -m bench.floor django|worker

``django``: ``django.setup()`` with ``bench.settings``, psycopg, redis-py and kombu with its
Redis transport, a first query and a first broker connection (closed before forking, as the
worker closes them). ``worker``: that, and the jobs worker's own modules and middleware.
Objects are collected and frozen before forking, as the prefork pool does. The parent prints
``ready`` once both children exist; ``bench/memory.py`` measures the tree as it measures a
worker's, so what a worker holds above this floor is what running it costs.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import time

#: What ``worker`` adds: the modules ``manage.py jobs_worker -P prefork`` loads to run.
WORKER_MODULES = ("jobs.management.commands.jobs_worker", "jobs.worker.worker",
                  "jobs.worker.pools.prefork", "jobs.execution")


def load_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    import kombu
    import kombu.transport.redis  # noqa: F401
    import psycopg  # noqa: F401
    import redis  # noqa: F401
    from django.conf import settings
    from django.db import connections

    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
    broker = kombu.Connection(settings.BROKER_URL,
                              transport_options=settings.JOBS["BROKER_TRANSPORT_OPTIONS"])
    broker.ensure_connection(max_retries=0)
    broker.channel()
    broker.release()
    connections.close_all()


def load_worker() -> None:
    for name in WORKER_MODULES:
        importlib.import_module(name)
    from jobs.middleware import stack

    stack()


def main(level: str) -> None:
    load_django()
    if level == "worker":
        load_worker()
    gc.collect()
    gc.freeze()
    for _ in range(2):
        if os.fork() == 0:
            while True:
                time.sleep(3600)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("django", "worker"):
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1])
