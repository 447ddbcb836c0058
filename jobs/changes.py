"""Noticing that another connection committed to the database, where nothing notifies us.

SQLite can't wake another process, but each connection can ask, for a few microseconds,
whether anyone else has committed to the file since it last asked (``PRAGMA data_version``,
read from the WAL index in shared memory, without touching a table). A waiter that checks
it every fraction of a millisecond learns of a commit about as soon as a notification would
have told it, and reads the table only then: the worker waiting for messages, and a caller
waiting for a job's result (``JobResult.get()``), whose reads through the ORM cost a hundred
times more than the check.
"""

from __future__ import annotations

import sqlite3
from time import monotonic, sleep

from django.db import DatabaseError

from jobs.compat.django import driver_connection


def watchable(connection) -> bool:
    """Whether :class:`Changes` can watch ``connection``'s database (SQLite)."""
    return connection.vendor == "sqlite"


class Changes:
    """Commits of other connections to the database of ``connection`` (a Django connection
    wrapper; used by the thread that owns it, outside a transaction, whose snapshot would
    never change)."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self._seen = self._version()

    def changed(self) -> bool:
        """Whether another connection committed since the last call (or since made)."""
        version = self._version()
        if version == self._seen:
            return False
        self._seen = version
        return True

    def wait(self, seconds: float, step: float) -> bool:
        """Check every ``step`` seconds for up to ``seconds``; True as soon as another
        connection has committed, False if none did."""
        deadline = monotonic() + seconds
        while (left := deadline - monotonic()) > 0:
            sleep(min(step, left))
            if self.changed():
                return True
        return False

    def _version(self) -> int | None:
        try:
            # The driver's own call: through Django's cursor the check cost ten times more.
            return driver_connection(self.connection).execute("PRAGMA data_version").fetchone()[0]
        except (DatabaseError, sqlite3.Error):
            return None  # the waiter's next read of the table reports the error
