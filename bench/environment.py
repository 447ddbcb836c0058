"""One run's services and names: the database, the broker, and a prefix for everything.

Every queue, Redis key and Dramatiq namespace of a run starts with its prefix
(``bench-<hex>``), so that a run purges and removes only what is its own, even beside the
tests or another run on the same servers.

Brokers: ``redis``, ``amqp`` (RabbitMQ) and ``django`` (jobs' ``django://`` transport: messages
are rows of the bench's own database, PostgreSQL or SQLite). Marks and the peers' Redis results
live in Redis whatever the broker.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_REDIS = "redis://127.0.0.1:6379/9"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/bench"


class Environment:
    def __init__(self, broker: str, database: str, logs: Path, prefix: str | None = None) -> None:
        self.broker = broker
        self.prefix = prefix or f"bench-{uuid.uuid4().hex[:8]}"
        self.redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
        self.broker_url = {"redis": self.redis_url, "django": "django://"}.get(
            broker) or os.environ.get("BENCH_AMQP_URL", DEFAULT_AMQP)
        self.database = database
        if database == "postgres":
            self.database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_POSTGRES)
        else:
            self.database_url = f"sqlite:///{logs / 'bench.sqlite3'}"
        self.logs = logs
        self.queues: set[str] = set()
        self.env = {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "BENCH_PREFIX": self.prefix,
            "BENCH_BROKER_URL": self.broker_url,
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_DATABASE_URL": self.database_url,
        }

    def prepare(self) -> None:
        """Point this process at the run's services, create the database, migrate."""
        os.environ.update(self.env)
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.database_url.startswith("postgres"):
            create_database(self.database_url)
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)

    # Brokers -------------------------------------------------------------------------------

    def purge_broker(self) -> None:
        if self.broker == "amqp":
            self._purge_amqp(delete=False)
        elif self.broker == "django":
            self._purge_rows()
        self._purge_redis()  # marks and results live in Redis whatever the broker

    def _purge_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start:start + 1000])

    def _purge_rows(self) -> None:
        """The ``django://`` transport's rows of this run's queues."""
        from jobs.models import Message

        Message.objects.filter(queue__startswith=self.prefix).delete()

    def _purge_amqp(self, delete: bool) -> None:
        from kombu import Connection

        names = [q for base in self.queues for q in (base, f"{base}.DQ", f"{base}.XQ")]
        with Connection(self.broker_url) as conn:
            for name in names:
                channel = conn.channel()
                try:
                    if delete:
                        channel.queue_delete(name)
                        channel.exchange_delete(name)
                    else:
                        channel.queue_purge(name)
                except conn.channel_errors:
                    pass  # not declared by this run
                finally:
                    try:
                        channel.close()
                    except Exception:
                        pass

    def services_fingerprint(self) -> tuple:
        """What changes when a server restarts: Redis's run id, PostgreSQL's start time,
        RabbitMQ's connection to us (a new one after a restart)."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        client.ping()  # raises while a restarted server is still loading
        run_id = client.info("server")["run_id"]
        started = None
        from django.db import connection

        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_postmaster_start_time()")
                started = cursor.fetchone()[0]
        return run_id, started, self._rabbit_uptime()

    def _rabbit_uptime(self):
        """A token that changes when RabbitMQ drops our probe connection (a restart)."""
        if self.broker != "amqp":
            return None

        from kombu import Connection

        probe = getattr(self, "_probe", None)
        if probe is not None:
            try:
                probe.drain_events(timeout=0.001)
                return id(probe)
            except TimeoutError:
                return id(probe)
            except Exception:
                pass
            try:
                probe.release()
            except Exception:
                pass
        self._probe = Connection(self.broker_url, heartbeat=0)
        self._probe.ensure_connection(max_retries=3)
        return id(self._probe)

    def wait_for_services(self, timeout: float) -> None:
        """Wait until the servers answer again, then drop this process's stale connections."""
        import time

        from django.db import connections

        deadline = time.monotonic() + timeout
        while True:
            connections.close_all()
            try:
                self.services_fingerprint()
                return
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(2)

    def cleanup(self) -> None:
        """Remove the run's queues and keys (its database tables are purged per figure)."""
        if self.broker == "amqp":
            self._purge_amqp(delete=True)
        elif self.broker == "django":
            self._purge_rows()
        self._purge_redis()


def create_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
