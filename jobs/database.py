"""Whether the database can be reached, as one process sees it: for workers and schedulers.

A long-running process meets a database outage (a restart, a failover, a cut network) as
errors from whatever touches the database next: a job's STARTED write, a heartbeat, a
scheduler tick. Each reports its error here (:meth:`Database.failed`, or
:meth:`Database.reported` for an error a prefork child sent back). One cheap query on a
fresh connection tells a connection that merely died (the server restarted since it was
opened: the fresh one replaces it) from a database that can't be reached. While it can't,
the process does nothing that needs it (a worker takes no jobs, a scheduler sends nothing)
and calls :meth:`Database.available` as it waits, which probes again once a second until the
database answers. The log says once that it went away and once that it is back.

One instance per process, :data:`database`, shared by its threads (a worker's main thread
and an embedded scheduler's): a probe repairs the connection of the thread that makes it;
another thread replaces its own when it fails next.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from django.db import DatabaseError, InterfaceError, OperationalError, connections, router
from django.utils import timezone

from jobs.compat.django import in_atomic_block

logger = logging.getLogger("jobs.database")

#: Errors that can mean the database is out of reach (rather than a statement being wrong).
ERRORS = (OperationalError, InterfaceError)
#: Seconds between two probes while the database is unreachable, and how long a probe that
#: found it reachable is trusted before another error is worth a probe of its own.
PROBE_EVERY = 1.0


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from (``raise ... from``), is one of
    :data:`ERRORS`."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ERRORS):
            return True
        seen.add(id(exc))
        exc = exc.__cause__
    return False


class Database:
    """The process's view of its database: reachable, or down since when."""

    def __init__(self, alias: str | None = None) -> None:
        self._alias = alias  # None: the database that job results are written to
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time it was found unreachable
        self._lost_at: datetime | None = None
        self._next_probe = 0.0
        self._trusted_until = 0.0  # a probe found it reachable: errors until then need none
        #: (found unreachable, answered again) of the latest outage this process rode out.
        self.last_outage: tuple[datetime, datetime] | None = None

    @property
    def down(self) -> bool:
        """Known to be unreachable (no probe: see :meth:`available`)."""
        return self._down_since is not None

    def available(self) -> bool:
        """True unless the database is known to be unreachable. While it is, probes it (at
        most once every PROBE_EVERY seconds, on this thread's connection) and notes its
        return."""
        if self._down_since is None:
            return True
        with self._lock:
            now = time.monotonic()
            if self._down_since is None:
                return True
            if now < self._next_probe:
                return False
            self._next_probe = now + PROBE_EVERY
            if not self._probe():
                return False
            waited, self._down_since = now - self._down_since, None
            self.last_outage = (self._lost_at, timezone.now())
            self._trusted_until = now + PROBE_EVERY
        logger.warning("Database back after %.1f s; resuming", waited)
        return True

    def failed(self, exc: BaseException) -> bool:
        """A statement on this thread failed with ``exc``. True if it is a connection-level
        error, now handled: this thread's connection is dropped (the next statement opens a
        fresh one) and the database probed, marked unreachable if it doesn't answer. False
        for any other error, which the caller reports as usual."""
        if not is_connection_error(exc):
            return False
        self._close()
        self.reported(f"{type(exc).__name__}: {exc}")
        return True

    def reported(self, reason: str) -> bool:
        """A connection-level error happened (on this thread, or in a child process that
        sent back ``reason``). Probes the database unless a probe just found it reachable;
        returns whether it is unreachable."""
        with self._lock:
            now = time.monotonic()
            if self._down_since is not None:
                return True
            if now < self._trusted_until or self._probe():
                self._trusted_until = max(self._trusted_until, now + PROBE_EVERY)
                return False
            self._down_since, self._lost_at = now, timezone.now()
            self._next_probe = now + PROBE_EVERY
        logger.warning("Database unreachable (%s); pausing until it is back, checking every "
                       "%.0f s", _one_line(reason), PROBE_EVERY)
        return True

    def _connection(self):
        if self._alias is None:
            from jobs.models import JobRecord

            self._alias = router.db_for_write(JobRecord)
        return connections[self._alias]

    def _close(self) -> None:
        """Drop this thread's connection (unless a transaction holds it): after a
        connection-level error it is likely dead, and a probe must connect afresh."""
        conn = self._connection()
        if conn.connection is None or in_atomic_block(conn):
            return
        try:
            conn.close()  # which forgets the connection even when closing it fails
        except DatabaseError:
            pass

    def _probe(self) -> bool:
        """One query on a fresh connection of this thread: does the database answer?"""
        conn = self._connection()
        if in_atomic_block(conn):  # a transaction holds it: can't tell; the caller's error
            return True  # goes on as any other
        self._close()
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except DatabaseError:
            self._close()
            return False


def _one_line(text: str) -> str:
    return " ".join(text.split())


#: This process's database, as its worker or scheduler sees it.
database = Database()
