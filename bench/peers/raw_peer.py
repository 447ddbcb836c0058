"""The raw client: what the broker or the database takes with no task library in between.

One row per run, for its broker: ``LPUSH`` with redis-py on Redis; ``basic_publish`` with
py-amqp (the client kombu itself uses) on RabbitMQ; ``INSERT`` into the ``django://``
transport's own table through the database driver (psycopg or sqlite3, no ORM) with
``--broker django``. Each message is an opaque payload of the size of a jobs message of a
no-op job (820 bytes). The enqueue figure is one command per job, each its own round trip
(and, in SQL, its own transaction); the bulk figure is the fastest way the client offers to
send many: LPUSHes of 1,000 values in one pipeline, one multi-row INSERT per 1,000 rows.
(AMQP has no batch: its bulk figure is the same loop.) On Redis a second bulk figure sends
one LPUSH per message, all in one pipeline: a message per command, as a task library that
publishes each job as its own message does. No worker: these rows have the enqueue figures
only, and jobs' enqueue is reported as a share of them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bench.peers import Peer

PAYLOAD = b"x" * 820
BATCH = 1_000


class RawPeer(Peer):
    library = "raw"
    results = "–"
    figures = frozenset({"enqueue"})

    def send_mark(self, key: str) -> None:
        """Nothing runs these messages: no mark to send."""


class RawRedisPeer(RawPeer):
    key = "raw"
    label = "raw redis-py LPUSH"
    bulk_method = "LPUSH of 1,000 values each, in one pipeline"
    bulk_each_method = "one LPUSH per message, in one pipeline"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        import redis

        self.client = redis.Redis.from_url(ctx.redis_url)
        self.list = f"{ctx.prefix}:raw"

    def enqueue(self, n: int) -> None:
        lpush, name = self.client.lpush, self.list
        for _ in range(n):
            lpush(name, PAYLOAD)

    def enqueue_bulk(self, n: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, n, BATCH):
            pipe.lpush(self.list, *[PAYLOAD] * min(BATCH, n - start))
        pipe.execute()

    def enqueue_bulk_each(self, n: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        lpush, name = pipe.lpush, self.list
        for _ in range(n):
            lpush(name, PAYLOAD)
        pipe.execute()

    def purge(self) -> None:
        self.client.delete(self.list)


class RawAmqpPeer(RawPeer):
    key = "raw"
    label = "raw py-amqp basic_publish"
    bulk_method = "the same basic_publish loop (AMQP has no batch)"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._connection = None

    @property
    def channel(self):
        if self._connection is None:
            import amqp
            from kombu.utils.url import url_to_parts

            transport, host, port, user, password, vhost = url_to_parts(self.ctx.broker_url)[:6]
            self._connection = amqp.Connection(f"{host}:{port or 5672}", userid=user or "guest",
                                               password=password or "guest",
                                               virtual_host=vhost or "/")
            self._connection.connect()
            self._channel = self._connection.channel()
            self._channel.queue_declare(self.queue, durable=True, auto_delete=False)
        return self._channel

    def enqueue(self, n: int) -> None:
        import amqp

        channel = self.channel
        publish, queue = channel.basic_publish, self.queue
        for _ in range(n):
            # Persistent, to the default exchange, as jobs publishes a job.
            publish(amqp.Message(PAYLOAD, delivery_mode=2, content_type="application/json"),
                    exchange="", routing_key=queue)

    def enqueue_bulk(self, n: int) -> None:
        self.enqueue(n)

    def purge(self) -> None:
        if self._connection is not None:
            self.channel.queue_purge(self.queue)


class RawSqlPeer(RawPeer):
    key = "raw"
    bulk_method = "a multi-row INSERT per 1,000 rows"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        from django.db import connection

        from jobs.models import Message

        self.table = Message._meta.db_table
        self.vendor = connection.vendor
        driver = "psycopg" if self.vendor == "postgresql" else "sqlite3"
        self.label = f"raw {driver} INSERT"
        self.mark = "%s" if self.vendor == "postgresql" else "?"
        columns = ("queue", "priority", "payload", "visible_at", "lease_owner",
                   "delivery_tag", "delivery_count", "created_at")
        self.columns = ", ".join(columns)
        self.row = "(" + ", ".join([self.mark] * len(columns)) + ")"

    def cursor(self):
        """The driver's own cursor on Django's connection (its settings, no ORM), committing
        each statement."""
        from django.db import connection

        connection.ensure_connection()
        connection.set_autocommit(True)
        return connection.connection.cursor()

    def values(self) -> tuple:
        now = datetime.now(UTC)
        if self.vendor != "postgresql":
            now = now.replace(tzinfo=None).isoformat(" ")  # as Django stores it (UTC)
        return (self.queue, 0, PAYLOAD.decode(), now, "", "", 0, now)

    def enqueue(self, n: int) -> None:
        cursor = self.cursor()
        sql = f"INSERT INTO {self.table} ({self.columns}) VALUES {self.row}"
        execute = cursor.execute
        for _ in range(n):
            execute(sql, self.values())
        cursor.close()

    def enqueue_bulk(self, n: int) -> None:
        cursor = self.cursor()
        for start in range(0, n, BATCH):
            size = min(BATCH, n - start)
            sql = (f"INSERT INTO {self.table} ({self.columns}) VALUES "
                   + ", ".join([self.row] * size))
            cursor.execute(sql, [v for _ in range(size) for v in self.values()])
        cursor.close()

    def purge(self) -> None:
        from jobs.models import Message

        Message.objects.filter(queue=self.queue).delete()
