"""Waking consumers of the ``django://`` transport: LISTEN on PostgreSQL, a plain sleep elsewhere."""

from __future__ import annotations

import logging
from time import monotonic, sleep

from django.db import connections

from jobs.compat.django import connection_params
from jobs.transport.table import NOTIFY_CHANNEL

logger = logging.getLogger("jobs.transport")

#: Seconds to wait before trying to LISTEN again after a failure.
RETRY_AFTER = 30.0


class Listener:
    """Waits until a message may be ready: a notification arrives, or the time is up.

    On PostgreSQL it holds its own connection, LISTENing on :data:`NOTIFY_CHANNEL`, opened on
    first use with the settings of the Django connection ``alias``. Elsewhere, or while that
    connection can't be had, it sleeps. Waking is only a hint: the caller polls either way,
    since a notification can be missed and a delayed message becomes due without one.
    """

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self._pg = None
        self._retry_at = 0.0

    def wait(self, seconds: float) -> None:
        """Return after ``seconds``, or sooner when a message was published."""
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
