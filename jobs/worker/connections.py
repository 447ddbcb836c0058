"""Database connections around jobs, the way Django's request cycle treats them.

A worker keeps its connections across jobs (reconnecting for every job is what makes some
workers slow), closing only those that are broken or older than CONN_MAX_AGE. With
CONN_MAX_AGE = 0 (Django's default, "close at the end of each request") a worker still
keeps the connection between jobs, but drops it as soon as it is found unusable.
"""

from django.db import InterfaceError, OperationalError, connections, reset_queries


def before_job() -> None:
    reset_queries()  # with DEBUG on, Django keeps every query of the process otherwise


def after_job() -> None:
    _recycle()


def _recycle() -> None:
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.in_atomic_block:
            # A job left a transaction open; it will never be committed by anyone.
            conn.rollback()
            conn.in_atomic_block = False
            conn.savepoint_ids = []
            conn.needs_rollback = False
        if conn.settings_dict.get("CONN_MAX_AGE") == 0:
            if conn.errors_occurred and not conn.is_usable():
                conn.close()
            conn.errors_occurred = False
        else:
            conn.close_if_unusable_or_obsolete()


def close_all() -> None:
    """Close every connection: before forking, so no child shares a socket with us."""
    connections.close_all()


def once_more_if_disconnected(func, *args, **kwargs):
    """Call ``func``; if the database connection turns out dead (the server restarted, a
    proxy dropped it), close it and call ``func`` once more on a fresh one."""
    try:
        return func(*args, **kwargs)
    except (InterfaceError, OperationalError):
        for conn in connections.all(initialized_only=True):
            if conn.connection is not None and not conn.in_atomic_block and not conn.is_usable():
                conn.close()
        return func(*args, **kwargs)
