"""The statements of the ``django://`` transport on its table, ``jobs.models.Message``.

Each method is one short statement in autocommit (or inside the caller's transaction, when
publishing), so no transaction is held open while a consumer waits. Times come from the
Python clock: hosts that share a queue should keep their clocks in sync (NTP).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import NamedTuple

from django.db import InterfaceError, OperationalError, connections, transaction
from django.db.models import Count, Q
from django.utils import timezone

from jobs.compat.django import close_if_unusable_or_obsolete, copy_rows, in_atomic_block
from jobs.models import Message

#: PostgreSQL NOTIFY channel on which publishers wake waiting consumers.
NOTIFY_CHANNEL = "jobs_message"
#: Values each row of a multi-row INSERT binds.
_INSERTED = 6


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A row leased by a consumer, as the claim statement returned it."""

    id: int
    priority: int
    payload: str
    delivery_tag: str
    delivery_count: int
    #: As the database returned it (a string on SQLite): only compared with another row's.
    visible_at: object


class NewRow(NamedTuple):
    """A message to insert (:meth:`MessageTable.insert_many`)."""

    queue: str
    priority: int
    payload: str
    visible_at: datetime
    delivery_tag: str


#: Most rows one INSERT writes (fewer where the database takes fewer parameters).
INSERT_BATCH = 1000


class MessageTable:
    """The message rows of one database alias, through that thread's Django connection."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias

    @property
    def connection(self):
        # Looked up on every use: Django's connections are per thread.
        return connections[self.alias]

    @property
    def objects(self):
        return Message.objects.using(self.alias)

    def insert(self, queue: str, priority: int, payload: str, visible_at: datetime,
               delivery_tag: str, notify: bool) -> None:
        """Add a message; with ``notify``, wake consumers when it commits (PostgreSQL)."""
        self.insert_many([NewRow(queue, priority, payload, visible_at, delivery_tag)],
                         {queue} if notify else set())

    def insert_many(self, rows: list[NewRow], notify: set[str]) -> None:
        """Add many messages in one transaction (the caller's, if one is open), then wake
        the consumers of the queues in ``notify``, once each, when it commits (PostgreSQL).

        On PostgreSQL the rows go in one ``COPY``, several times faster than a multi-row
        INSERT of them (measured: psycopg parses a statement's placeholders in Python);
        elsewhere one multi-row INSERT per :data:`INSERT_BATCH` rows.
        """
        if not rows:
            return
        conn = self.connection
        created_at = timezone.now()
        if conn.vendor == "postgresql" and len(rows) == 1 and len(notify) <= 1:
            self._insert_one(rows[0], created_at, notify)
            return
        if conn.vendor != "postgresql" and len(rows) <= self._per_statement():
            # One statement: atomic by itself, in autocommit without Django's BEGIN and
            # COMMIT around it (on SQLite a delay() costs a third less).
            with self._errors():
                self._insert_rows(rows, created_at)
            return
        with self._errors(), transaction.atomic(using=self.alias, savepoint=False):
            if conn.vendor == "postgresql":
                copy_rows(conn, self._copy_sql(), (
                    (*row, created_at, "", 0) for row in rows))
                with conn.cursor() as cursor:
                    for queue in sorted(notify):
                        cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, queue])
            else:
                self._insert_rows(rows, created_at)

    def _insert_one(self, row: NewRow, created_at: datetime, notify: set[str]) -> None:
        """One message (a ``delay()``) on PostgreSQL: its INSERT and NOTIFY in one statement,
        one round trip and one commit (its own, or the caller's transaction's)."""
        sql = self._insert_sql(1)
        params = [row.queue, row.priority, row.payload, self._dt(row.visible_at),
                  row.delivery_tag, self._dt(created_at)]
        if notify:
            sql = f"WITH inserted AS ({sql} RETURNING 1) SELECT pg_notify(%s, %s) FROM inserted"
            params += [NOTIFY_CHANNEL, next(iter(notify))]
        with self._errors(), self.connection.cursor() as cursor:
            cursor.execute(sql, params)

    def _per_statement(self) -> int:
        """Rows per INSERT (not PostgreSQL): at most as many as take the parameters the
        database allows (SQLite, as Django declares it: 999)."""
        limit = self.connection.features.max_query_params
        return min(INSERT_BATCH, limit // _INSERTED) if limit else INSERT_BATCH

    def _insert_rows(self, rows: list[NewRow], created_at: datetime) -> None:
        conn = self.connection
        per_statement = self._per_statement()
        created_at = self._dt(created_at)
        # Adapted once per value: the rows of a bulk call share theirs.
        adapted: dict[datetime, object] = {}
        with conn.cursor() as cursor:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start:start + per_statement]
                values = []
                for row in chunk:
                    visible_at = adapted.get(row.visible_at)
                    if visible_at is None:
                        visible_at = adapted[row.visible_at] = self._dt(row.visible_at)
                    values += (row.queue, row.priority, row.payload, visible_at,
                               row.delivery_tag, created_at)
                cursor.execute(self._insert_sql(len(chunk)), values)

    def _columns(self) -> str:
        names = self._names()
        return ", ".join(names[key] for key in (
            "queue", "priority", "payload", "visible", "tag", "created", "owner", "count"))

    def _copy_sql(self) -> str:
        return f"COPY {self._names()['t']} ({self._columns()}) FROM STDIN"

    def _insert_sql(self, count: int) -> str:
        # The columns Django would fill with their defaults are written as literals.
        row = "(%s, %s, %s, %s, %s, %s, '', 0)"
        return (f"INSERT INTO {self._names()['t']} ({self._columns()}) VALUES "
                + ", ".join([row] * count))

    def claim(self, queue: str, owner: str, limit: int, lease_until: datetime,
              acked: list[str] = ()) -> list[ClaimedRow]:
        """Lease up to ``limit`` visible rows of ``queue`` to ``owner``, in one statement;
        if there are any to lease, first delete the rows of ``acked`` (messages ``owner``
        acknowledged), in the same transaction (none leased: the caller still has them).

        Rows come in delivery order: highest priority first, then the earliest visible (the
        oldest; a delayed message by its due time, as if it were sent then), then oldest. That
        is the order of the claim index, so a claim reads the few rows it takes (and those
        leased ahead of them), never the whole queue: ordered otherwise, each claim sorted
        every ready row of the queue, while holding SQLite's write lock.
        """
        now = timezone.now()
        if not _locks_rows(self.alias) and not self.any_ready(queue, now):
            # SQLite: an UPDATE takes the database's one write lock even when it changes
            # nothing, and a job's STARTED or outcome write that meets it waits a whole
            # millisecond (SQLite's busy handler) for a lock held a few microseconds. A
            # read takes no lock in WAL mode: ask first.
            return []
        if acked:
            with transaction.atomic(using=self.alias):
                self.delete_many(owner, acked)
                return self._claim(queue, owner, limit, lease_until, now)
        return self._claim(queue, owner, limit, lease_until, now)

    def _claim(self, queue: str, owner: str, limit: int, lease_until: datetime,
               now: datetime) -> list[ClaimedRow]:
        conn = self.connection
        sql = (
            "UPDATE {t} SET {owner} = %s, {until} = %s, {count} = {count} + 1 "
            "WHERE {id} IN (SELECT {id} FROM {t} WHERE {queue} = %s AND {visible} <= %s "
            "AND ({until} IS NULL OR {until} < %s) "
            "ORDER BY {priority} DESC, {visible}, {id} LIMIT %s{lock}) "
            "RETURNING {id}, {priority}, {payload}, {tag}, {count}, {visible}"
        ).format(**self._names(), lock=self._skip_locked())
        adapt = conn.ops.adapt_datetimefield_value
        params = [owner, adapt(lease_until), queue, adapt(now), adapt(now), limit]
        with self._errors(), conn.cursor() as cursor:
            cursor.execute(sql, params)
            rows = [ClaimedRow(*row) for row in cursor.fetchall()]
        return sorted(rows, key=lambda row: (-row.priority, row.visible_at, row.id))

    def any_ready(self, queue: str, now: datetime) -> bool:
        """Whether ``queue`` has a row that a claim would take now."""
        sql = (
            "SELECT 1 FROM {t} WHERE {queue} = %s AND {visible} <= %s "
            "AND ({until} IS NULL OR {until} < %s) LIMIT 1"
        ).format(**self._names())
        conn = self.connection
        now = conn.ops.adapt_datetimefield_value(now)
        with self._errors(), conn.cursor() as cursor:
            cursor.execute(sql, [queue, now, now])
            return cursor.fetchone() is not None

    def renew(self, owner: str, delivery_tags: list[str], lease_until: datetime) -> set[str]:
        """Extend ``owner``'s leases of these messages; return the tags still held."""
        held = set()
        until = self._dt(lease_until)
        for start in range(0, len(delivery_tags), 500):  # stay under the bound-parameter limit
            chunk = delivery_tags[start:start + 500]
            sql = "UPDATE {t} SET {until} = %s WHERE {owner} = %s AND {tag} IN ({tags}) "
            sql += "RETURNING {tag}"
            sql = sql.format(**self._names(), tags=", ".join(["%s"] * len(chunk)))
            with self._errors(), self.connection.cursor() as cursor:
                cursor.execute(sql, [until, owner, *chunk])
                held.update(row[0] for row in cursor.fetchall())
        return held

    def release(self, owner: str, delivery_tags: list[str] | None = None, keep=()) -> int:
        """Clear ``owner``'s leases (of these messages, or all but ``keep``): the rows are
        visible again."""
        rows = self.objects.filter(lease_owner=owner)
        if delivery_tags is not None:
            rows = rows.filter(delivery_tag__in=delivery_tags)
        if keep:
            rows = rows.exclude(delivery_tag__in=keep)
        with self._errors():
            return rows.update(lease_owner="", lease_until=None)

    def delete(self, owner: str, delivery_tag: str) -> int:
        """Remove a message ``owner`` holds (it was acknowledged or dropped)."""
        return self.delete_many(owner, [delivery_tag])

    def delete_many(self, owner: str, delivery_tags: list[str]) -> int:
        """Remove the messages of ``delivery_tags`` that ``owner`` holds, in one statement.

        A plain ``DELETE`` in autocommit: ``QuerySet.delete()`` wraps its statement in a
        transaction, which on SQLite (``transaction_mode`` IMMEDIATE) holds the database's
        one write lock from ``BEGIN`` to ``COMMIT``, across Django's Python in between.
        """
        deleted = 0
        for start in range(0, len(delivery_tags), 500):  # under the bound-parameter limit
            chunk = delivery_tags[start:start + 500]
            sql = "DELETE FROM {t} WHERE {owner} = %s AND {tag} IN ({tags})".format(
                **self._names(), tags=", ".join(["%s"] * len(chunk)))
            with self._errors(), self.connection.cursor() as cursor:
                cursor.execute(sql, [owner, *chunk])
                deleted += cursor.rowcount
        return deleted

    def size(self, queue: str) -> int:
        """The number of messages of ``queue`` a consumer could claim now."""
        with self._errors():
            return self.objects.filter(queue=queue).visible(timezone.now()).count()

    def purge(self, queue: str) -> int:
        """Delete the messages of ``queue`` that are ready and unleased; return how many."""
        with self._errors():
            return self.objects.filter(queue=queue).visible(timezone.now()).delete()[0]

    def drop(self, queue: str) -> int:
        """Delete every message of ``queue``, leased or delayed ones too."""
        with self._errors():
            return self.objects.filter(queue=queue).delete()[0]

    def depths(self) -> dict[str, dict[str, int]]:
        """Per queue, the count of ready, leased and delayed messages (one query)."""
        now = timezone.now()
        leased = Q(lease_until__gte=now)
        counts = (
            self.objects.values("queue")
            .annotate(
                ready=Count("id", filter=Q(visible_at__lte=now) & ~leased),
                leased=Count("id", filter=leased),
                delayed=Count("id", filter=Q(visible_at__gt=now) & ~leased),
            )
            .order_by("queue")
        )
        with self._errors():
            return {
                row.pop("queue"): {key: row[key] for key in ("ready", "leased", "delayed")}
                for row in counts
            }

    @contextmanager
    def _errors(self):
        try:
            yield
        except (OperationalError, InterfaceError):
            # Drop a broken connection so that kombu's retry gets a fresh one; never inside
            # the caller's transaction, which must see its own error.
            conn = self.connection
            if not in_atomic_block(conn):
                close_if_unusable_or_obsolete(conn)
            raise

    def _dt(self, value: datetime):
        return self.connection.ops.adapt_datetimefield_value(value)

    def _skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED" if _locks_rows(self.alias) else ""

    def _names(self) -> dict[str, str]:
        return _names(self.alias)


@cache
def _locks_rows(alias: str) -> bool:
    # Row locks (PostgreSQL): claims of several consumers skip each other's rows. SQLite runs
    # one writer at a time, so its single UPDATE is atomic without them.
    return connections[alias].features.has_select_for_update_skip_locked


@cache
def _names(alias: str) -> dict[str, str]:
    """The quoted table and column names of the statements (built once: a consumer polls)."""
    quote = connections[alias].ops.quote_name
    column = {field.name: quote(field.column) for field in Message._meta.concrete_fields}
    return {
        "t": quote(Message._meta.db_table),
        "id": column["id"],
        "queue": column["queue"],
        "priority": column["priority"],
        "payload": column["payload"],
        "visible": column["visible_at"],
        "owner": column["lease_owner"],
        "until": column["lease_until"],
        "tag": column["delivery_tag"],
        "count": column["delivery_count"],
        "created": column["created_at"],
    }


def queue_depths(using: str = "default") -> dict[str, dict[str, int]]:
    """Messages of the ``django://`` transport per queue, for monitoring.

    ``{"default": {"ready": 3, "leased": 1, "delayed": 0}, ...}``: *ready* can be claimed now,
    *leased* are held by a consumer, *delayed* wait for their eta. Queues without messages
    are absent.
    """
    return MessageTable(using).depths()
