"""The systems compared, each behind the same small interface.

A :class:`Peer` is one library in one configuration (``jobs`` with results in the ORM, Celery
with results off, ...): it enqueues from the bench process, names the command that starts its
worker, counts the results it stored, and purges what it left. The figures in
:mod:`bench.figures` drive every peer the same way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
FIGURES = ("enqueue", "drain", "roundtrip", "scale", "chord")


class Peer:
    #: Short stable name of this configuration (the ratios refer to it).
    key: str = ""
    #: Row label in the table.
    label: str = ""
    #: The library, as ``--only`` names it.
    library: str = ""
    #: Where results go: "ORM", "off", "django-db", "Redis".
    results: str = "off"
    #: Figures this configuration takes part in.
    figures: frozenset[str] = frozenset()
    #: How the bulk enqueue figure enqueues.
    bulk_method: str = ""
    #: How the second bulk figure enqueues, for a peer that has one (the raw client on
    #: Redis: one command per message, pipelined), or "".
    bulk_each_method: str = ""
    #: Jobs per enqueue and drain, when fewer than the run's N (a slow configuration).
    n: int | None = None
    n_note: str = ""
    #: Round trips per repetition (a slow result store gets fewer).
    roundtrips: int | None = None
    #: Why round trips are slow, for the table's notes.
    roundtrip_note: str = ""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    # The worker --------------------------------------------------------------------------

    def worker_argv(self) -> list[str]:
        raise NotImplementedError

    def worker_env(self) -> dict[str, str]:
        return {}

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.ctx.env, **self.worker_env(), "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1"}

    # The client side -----------------------------------------------------------------------

    def enqueue(self, n: int) -> None:
        """``n`` no-op jobs, one call each."""
        raise NotImplementedError

    def enqueue_bulk(self, n: int) -> None:
        """``n`` no-op jobs through the library's bulk path."""
        raise NotImplementedError

    def enqueue_bulk_each(self, n: int) -> None:
        """``n`` messages, one command each, in one pipeline (``bulk_each_method``)."""
        raise NotImplementedError

    def enqueue_delayed(self, n: int, seconds: int) -> None:
        raise NotImplementedError

    def send_mark(self, key: str) -> None:
        """Enqueue a job that stamps ``key`` (see :mod:`bench.marks`) when it runs."""
        raise NotImplementedError

    def round_trip(self) -> None:
        """Enqueue one job and wait for its result, as a caller would."""
        raise NotImplementedError

    def chord(self, n: int) -> None:
        """A chord of ``n`` no-op jobs and a body counting them; wait for the body's result."""
        raise NotImplementedError

    def stored_results(self) -> int | None:
        """Successful results stored so far; None when results are off."""
        return None

    def purge(self) -> None:
        """Remove this peer's messages and results (no worker is running)."""
        self.ctx.purge_broker()

    @property
    def queue(self) -> str:
        return f"{self.ctx.prefix}-{self.library}"


def python() -> str:
    return sys.executable


def truncate(table: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f'TRUNCATE "{table}"')
        else:
            cursor.execute(f'DELETE FROM "{table}"')
