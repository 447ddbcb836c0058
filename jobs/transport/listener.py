"""Waking consumers of the ``django://`` transport: LISTEN on PostgreSQL, a watch of the
database's commits on SQLite (:mod:`jobs.changes`), a plain sleep elsewhere."""

from __future__ import annotations

import logging
from time import monotonic, sleep

from django.db import connections

from jobs.changes import Changes, watchable
from jobs.compat.django import connection_params, in_atomic_block
from jobs.transport.table import NOTIFY_CHANNEL

logger = logging.getLogger("jobs.transport")

#: Seconds to wait before trying to LISTEN again after a failure.
RETRY_AFTER = 30.0
#: SQLite: seconds between two checks for a commit while the consumer is busy (it received
#: a message in the last BUSY_FOR seconds): a consumer taking one job after another, each
#: sent when the previous one's result arrived, claims each within this much of its commit.
BUSY_STEP = 0.00025
BUSY_FOR = 1.0
#: SQLite: seconds between two checks once the consumer has had no message for BUSY_FOR,
#: whatever else the database is doing (the project's own writes): an idle worker makes 200
#: checks a second, each a few microseconds.
IDLE_STEP = 0.005


class Listener:
    """Waits until a message may be ready: a notification arrives, or the time is up.

    On PostgreSQL it holds its own connection, LISTENing on :data:`NOTIFY_CHANNEL`, opened on
    first use with the settings of the Django connection ``alias``. On SQLite it returns when
    another connection commits (a message published, a lease released, a result written:
    anything), checked every :data:`BUSY_STEP` or :data:`IDLE_STEP`, on the thread's own
    Django connection. Elsewhere, or while that can't be had, it sleeps. Waking is only a
    hint: the caller polls either way, since a notification can be missed and a delayed
    message becomes due without one.
    """

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self._pg = None
        self._retry_at = 0.0
        self._changes: Changes | None = None

    def wait(self, seconds: float, busy: bool = False) -> None:
        """Return after ``seconds``, or sooner when a message was published. ``busy``: the
        consumer received a message lately (on SQLite, check for one more often)."""
        if self._watch(seconds, busy):
            return
        pg = self._connection()
        if pg is None:
            sleep(seconds)
            return
        import psycopg

        try:
            for _ in pg.notifies(timeout=seconds, stop_after=1):
                pass
        except psycopg.Error as exc:
            self._give_up(exc)
            sleep(seconds)

    def close(self) -> None:
        """Close the LISTEN connection, if one is open."""
        pg, self._pg = self._pg, None
        if pg is not None:
            pg.close()  # psycopg's close never raises

    def _watch(self, seconds: float, busy: bool) -> bool:
        """On SQLite, wait for a commit of another connection (or ``seconds``); False
        elsewhere, having waited for nothing."""
        connection = connections[self.alias]
        if not watchable(connection) or in_atomic_block(connection):
            return False
        if self._changes is None or self._changes.connection is not connection:
            self._changes = Changes(connection)  # from now: the caller has just polled
        self._changes.wait(seconds, BUSY_STEP if busy else IDLE_STEP)
        return True

    def _connection(self):
        if self._pg is not None or monotonic() < self._retry_at:
            return self._pg
        django_connection = connections[self.alias]
        if django_connection.vendor != "postgresql":
            self._retry_at = float("inf")
            return None
        try:
            import psycopg
        except ImportError as exc:  # Django runs on psycopg2 here: poll
            self._give_up(exc)
            return None
        try:
            params = connection_params(django_connection)
            self._pg = psycopg.connect(**params, autocommit=True)
            self._pg.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error as exc:
            self._give_up(exc)
        return self._pg

    def _give_up(self, exc: Exception) -> None:
        logger.warning("django:// transport: LISTEN unavailable, polling (%s)", exc)
        self.close()
        self._retry_at = monotonic() + RETRY_AFTER
