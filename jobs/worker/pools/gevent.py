"""The ``gevent`` pool: many blocking-I/O jobs at once as greenlets (``pip install
'jobs-for-django[gevent]'``, then ``manage.py jobs_worker -P gevent -c 1000``).

gevent patches the standard library (sockets, ``time.sleep``, threads, ``select``) so that a
job waiting on I/O lets the others run; ``jobs_worker`` starts itself again patched before
Django loads (``jobs_worker``'s ``BOOT``). Each greenlet has its own database
connections, as a thread has, kept from one job to the next. The pool refuses to start where a
part of the stack would block every greenlet or fail (:func:`problems`), saying which and why.
Time limits are not enforced (a greenlet, like a thread, can't be stopped from outside), and
``async def`` jobs fail with a clear error: run them on ``-P asyncio``.
"""

from __future__ import annotations

from jobs import coroutines
from jobs.exceptions import ConfigurationError
from jobs.worker.pools.threads import ThreadPool


class GeventPool(ThreadPool):
    """The ``threads`` pool, its threads greenlets once gevent has patched the process: each
    slot waits for its next job and keeps its database connections from one job to the next,
    as a thread does."""

    name = "gevent"

    def start(self) -> None:
        found = problems(self.concurrency)
        if found:
            raise ConfigurationError("The gevent pool can't start: " + " ".join(found))
        super().start()

    def _loop(self) -> None:
        coroutines.use(_refuse_coroutine)
        super()._loop()


def _refuse_coroutine(coroutine):
    coroutine.close()
    raise ConfigurationError("an async def job can't run on the gevent pool (its event loop "
                             "would hold up every greenlet): run it on a worker with "
                             "-P asyncio")


def problems(concurrency: int) -> list[str]:
    """What keeps this process from running jobs correctly under gevent, each with why."""
    try:
        from gevent import monkey
    except ImportError:
        return ["gevent is not installed (pip install 'jobs-for-django[gevent]')."]
    if not monkey.is_module_patched("socket") or not monkey.is_module_patched("threading"):
        return ["this process is not monkey-patched: start the worker with "
                "'manage.py jobs_worker -P gevent', which patches before Django loads."]
    found = []
    from django.db import connections as databases

    for alias in databases:
        found += _database_problems(databases[alias], alias, concurrency)
    return found


def _database_problems(connection, alias: str, concurrency: int) -> list[str]:
    if connection.vendor != "postgresql":
        return []
    driver = connection.Database.__name__
    if driver == "psycopg2":
        return [f"database {alias!r} uses psycopg2, whose waits block every greenlet; "
                "install psycopg 3 (pip install 'jobs-for-django[postgres]')."]
    from psycopg import waiting

    if waiting.wait is getattr(waiting, "wait_c", None):
        return [f"database {alias!r}: psycopg was imported before gevent patched the process, "
                "so its waits block every greenlet."]
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('max_connections')::int - count(*) "
                       "FROM pg_stat_activity")
        free = cursor.fetchone()[0]
    connection.close()
    if concurrency > free:
        return [f"database {alias!r}: each of the {concurrency} greenlets (-c) may hold a "
                f"PostgreSQL connection while its job runs, and the server has {free} free; "
                "lower -c or put a connection pooler (PgBouncer) in front."]
    return []

