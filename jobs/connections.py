"""Database connections around jobs, the way Django's request cycle treats them.

A worker keeps its connections across jobs (reconnecting for every job is what makes some
workers slow), closing only those that are broken or older than CONN_MAX_AGE. With
CONN_MAX_AGE = 0 (Django's default, "close at the end of each request") a worker still
keeps the connection between jobs, but drops it as soon as it is found unusable.
"""

import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, reset_queries

from jobs.compat.django import (
    abandon_transaction,
    check_health_before_next_use,
    clear_errors,
    errors_occurred,
    in_atomic_block,
    initialized_connections,
    is_usable,
    past_max_age,
)

#: With CONN_HEALTH_CHECKS, a connection idle this long is checked before its next job. A
#: worker busy with one job after another skips the check, as a request cycle that never
#: ends would: a connection that died meanwhile is replaced on its first failed statement
#: (``once_more_if_disconnected``), which is the job's first write.
IDLE_BEFORE_CHECK = 1.0

_last_job_end = 0.0


def before_job() -> None:
    if settings.DEBUG:  # Django keeps the queries of the process then (9,000 at most)
        reset_queries()
    if time.monotonic() - _last_job_end > IDLE_BEFORE_CHECK:
        for conn in initialized_connections():
            check_health_before_next_use(conn)


def after_job() -> None:
    global _last_job_end
    _recycle()
    _last_job_end = time.monotonic()


def _recycle() -> None:
    for conn in initialized_connections():
        if conn.connection is None:
            continue
        if in_atomic_block(conn):
            # A job left a transaction open; it will never be committed by anyone.
            abandon_transaction(conn)
        # CONN_MAX_AGE = 0 keeps the connection (see above); a positive age ends it.
        if conn.settings_dict.get("CONN_MAX_AGE") and past_max_age(conn):
            conn.close()  # a new connection starts without errors
        elif errors_occurred(conn):
            if not is_usable(conn):
                conn.close()
            clear_errors(conn)


def close_all() -> None:
    """Close every connection: before forking, so no child shares a socket with us."""
    connections.close_all()


def once_more_if_disconnected(func, *args, **kwargs):
    """Call ``func``; if the database connection turns out dead (the server restarted, a
    proxy dropped it), close it and call ``func`` once more on a fresh one."""
    try:
        return func(*args, **kwargs)
    except (InterfaceError, OperationalError):
        for conn in initialized_connections():
            if conn.connection is not None and not in_atomic_block(conn) and not is_usable(conn):
                conn.close()
        return func(*args, **kwargs)
