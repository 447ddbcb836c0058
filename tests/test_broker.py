"""The Broker: built from JOBS["BROKER_URL"], it says what the broker can do and does it."""

from __future__ import annotations

import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from jobs import broker as broker_module
from jobs.broker import (
    AmqpBroker,
    Broker,
    DatabaseBroker,
    RedisBroker,
    SentinelBroker,
    get_broker,
)
from jobs.models import Message
from project.demo import jobs as demo
from tests.conftest import SESSION, broker_params
from tests.jobs_app import jobs as testjobs

KINDS = [
    ("django://", DatabaseBroker),
    ("redis://127.0.0.1:6379/0", RedisBroker),
    ("rediss://127.0.0.1:6380/0", RedisBroker),
    ("sentinel://127.0.0.1:26379;sentinel://127.0.0.2:26379", SentinelBroker),
    ("amqp://guest:guest@127.0.0.1:5672//", AmqpBroker),
    ("memory://", Broker),
]


@pytest.mark.parametrize("url, kind", KINDS, ids=[url.split(":")[0] for url, _ in KINDS])
def test_each_url_gets_the_broker_that_knows_its_scheme(url, kind):
    assert type(Broker.for_url(url)) is kind


@pytest.mark.parametrize("url, transactional, durable, renews, priorities", [
    ("django://", True, True, True, range(256)),
    ("redis://127.0.0.1:6379/0", False, False, True, range(10)),
    ("amqp://127.0.0.1//", False, False, False, range(0)),
], ids=["django", "redis", "amqp"])
def test_what_each_broker_can_do(url, transactional, durable, renews, priorities):
    broker = Broker.for_url(url)
    assert (broker.transactional_enqueue, broker.durable_delay, broker.renews_leases,
            broker.priority_levels) == (transactional, durable, renews, priorities)


def test_messages_in_another_database_wait_for_the_commit_like_any_broker(settings):
    settings.JOBS = {"BROKER_URL": "django://", "BROKER_TRANSPORT_OPTIONS": {"database": "x"}}
    assert get_broker().transactional_enqueue is False


def test_the_broker_is_built_again_when_the_settings_change(settings):
    settings.JOBS = {"BROKER_URL": "memory://"}
    first = get_broker()
    assert get_broker() is first
    settings.JOBS = {"BROKER_URL": "redis://127.0.0.1:6379/3"}
    assert get_broker() is not first
    assert get_broker().url == "redis://127.0.0.1:6379/3"


@pytest.mark.parametrize("url, shown", [
    ("django://", "django://"),
    ("redis://:secret@127.0.0.1:6379/0", "redis://:**@127.0.0.1:6379/0"),
    ("amqp://guest:guest@rabbit:5672/vhost", "amqp://guest:**@rabbit:5672/vhost"),
    ("sentinel://:pw@a:26379;sentinel://:pw@b:26379", "sentinel://:**@a:26379;sentinel://:**@b:26379"),
], ids=["django", "redis", "amqp", "sentinel"])
def test_the_displayed_url_hides_passwords(url, shown):
    assert Broker.for_url(url).display_url == shown


def test_redis_options_are_safe_by_default_and_the_settings_win(settings):
    settings.JOBS = {"BROKER_URL": "redis://127.0.0.1:6379/0",
                     "BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 30}}
    assert get_broker().transport_options == {
        "visibility_timeout": 30, "unacked_mutex_expire": 10, "unacked_key": "jobs.unacked",
        "unacked_index_key": "jobs.unacked_index", "unacked_mutex_key": "jobs.unacked_mutex"}


def test_a_redis_url_connects_through_our_transport_by_its_alias():
    from jobs.transport.redis import Transport

    connection = Broker.for_url("redis://127.0.0.1:6379/0").connection()
    assert connection.transport_cls == "jobs-redis"
    assert type(connection.transport) is Transport


def test_a_rediss_url_turns_tls_on():
    assert Broker.for_url("rediss://127.0.0.1:6380/0").connection().ssl
    required = Broker.for_url("rediss://127.0.0.1:6380/0?ssl_cert_reqs=required").connection()
    assert required.ssl["ssl_cert_reqs"].name == "CERT_REQUIRED"


def test_a_sentinel_url_connects_through_our_redis_transport_behind_sentinel():
    from jobs.transport.redis import SentinelTransport

    connection = Broker.for_url("sentinel://127.0.0.1:26379").connection()
    assert connection.transport_cls == "jobs-sentinel"
    assert type(connection.transport) is SentinelTransport


@pytest.mark.parametrize("limit, kept", [(2, 2), (0, 0), (None, 0)])
def test_no_more_idle_publishers_are_kept_than_the_pool_limit(settings, limit, kept):
    settings.JOBS = {"BROKER_URL": "memory://", "BROKER_POOL_LIMIT": limit}
    publishers = get_broker().publishers
    with publishers.publisher(), publishers.publisher(), publishers.publisher():
        pass  # three threads sending at once, say
    assert len(publishers.idle) == kept


def test_a_kept_publisher_is_used_again(settings):
    settings.JOBS = {"BROKER_URL": "memory://", "TASK_ENQUEUE_ON_COMMIT": False}
    demo.add.delay(1, 1)
    [publisher] = get_broker().publishers.idle
    demo.add.delay(2, 2)
    assert list(get_broker().publishers.idle) == [publisher]


def test_routes_come_from_the_job_then_the_settings_then_the_default(settings):
    settings.JOBS = {"BROKER_URL": "memory://", "TASK_ROUTES": {"shop.*": {"queue": "shop"}}}
    routing = get_broker().routing
    assert routing.resolve("shop.jobs.pay", "urgent").queue == "urgent"
    assert routing.resolve("shop.jobs.pay").queue == "shop"
    assert routing.resolve("blog.jobs.post").queue == "default"


def test_the_scheme_of_a_url_is_parsed_without_a_broker():
    assert Broker.scheme_of("sentinel://a:26379;sentinel://b:26379") == "sentinel"


# On real brokers.

brokers = pytest.mark.parametrize("broker_url", broker_params(), indirect=True)


@brokers
def test_purge_deletes_the_ready_messages_of_the_queues(broker_url):
    for i in range(3):
        demo.add.delay(i, i)
    assert get_broker().purge(["default"]) == 3
    assert get_broker().purge(["default"]) == 0


@brokers
def test_jobs_purge_discards_the_waiting_messages_of_the_queues_named(broker_url):
    for i in range(3):
        demo.add.delay(i, i)
    testjobs.on_other_queue.delay(1)
    out = StringIO()

    call_command("jobs_purge", "-Q", "default", "--force", stdout=out)

    assert out.getvalue() == "Purged 3 messages from 1 queue (default).\n"
    assert get_broker().purge(["other"]) == 1  # left alone


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_jobs_purge_asks_first_and_purges_only_on_yes(broker_url, monkeypatch):
    demo.add.delay(1, 1)
    testjobs.on_other_queue.delay(1)
    answers = iter(["no", "yes"])
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or next(answers))
    out = StringIO()

    call_command("jobs_purge", "-X", "nothing", stdout=out)
    call_command("jobs_purge", stdout=out)

    assert "Discard every message waiting in default on django://" in prompts[0]
    assert out.getvalue().splitlines() == [
        "Nothing purged.", "Purged 1 message from 1 queue (default)."]
    assert get_broker().purge(["other"]) == 1  # not routed to: not purged by default


def test_jobs_purge_refuses_when_every_queue_is_excluded():
    with pytest.raises(CommandError, match="no queue left to purge"):
        call_command("jobs_purge", "-Q", "default", "-X", "default", "--force")


@brokers
def test_queue_depths_count_the_ready_messages(broker_url):
    for i in range(2):
        demo.add.delay(i, i)

    rows = {row["name"]: row for row in get_broker().queue_depths({"default"})["rows"]}

    assert rows["default"]["ready"] == 2


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_renewing_on_the_database_broker_extends_the_leases_held(broker_url):
    demo.add.delay(1, 1)
    with broker_module.new_connection() as connection:
        channel = connection.channel()
        message = channel.basic_get("default")
        Message.objects.update(lease_until=None)  # as if it were about to run out
        get_broker().renew_leases(channel, [message.delivery_tag])
        assert Message.objects.get().lease_until is not None


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_renewing_on_redis_moves_the_unacked_time_forward(broker_url):
    import redis

    demo.add.delay(1, 1)
    index = f"{SESSION}:jobs.unacked_index"
    with broker_module.new_connection() as connection:
        channel = connection.channel()
        message = channel.basic_get("default")
        client = redis.Redis.from_url(broker_url)
        client.zadd(index, {message.delivery_tag: 1.0})  # long ago

        get_broker().renew_leases(channel, [message.delivery_tag])

        assert client.zscore(index, message.delivery_tag) > time.time() - 60


@pytest.mark.parametrize("broker_url", ["django", "redis"], indirect=True)
def test_a_kept_message_whose_run_ended_without_an_outcome_is_handed_back_at_once(broker_url):
    # Kept for its run when the worker's connection was lost, then the run ended without an
    # outcome (its process died): it is delivered again now, not once the broker's hold on
    # it (a lease, a visibility timeout: 30 or 60 s by default) runs out.
    demo.add.delay(1, 1)
    broker = get_broker()
    with broker_module.new_connection() as lost:
        channel = lost.channel()
        message = channel.basic_get("default")
        broker.keep(channel, [message.delivery_tag])
    with broker_module.new_connection() as connection:
        channel = connection.channel()
        assert channel.basic_get("default") is None  # kept for the run

        assert broker.give_back_lost(channel, message.delivery_tag)
        again = channel.basic_get("default")
        assert again is not None and again.headers["id"] == message.headers["id"]
        again.ack()
        assert channel.basic_get("default") is None  # handed back once, not copied


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_acks_go_in_batches_on_redis(broker_url):
    with broker_module.new_connection() as connection:
        channel = connection.channel()
        flush = get_broker().batch_acks(channel)
        assert channel.qos.defer_acks and flush == channel.qos.flush_acks


@pytest.mark.parametrize("broker_url", ["django"], indirect=True)
def test_the_database_broker_deletes_acknowledged_messages_in_one_statement(broker_url):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from jobs.models import Message

    for i in range(3):
        demo.add.delay(i, i)
    with broker_module.new_connection() as connection:
        channel = connection.channel()
        flush = get_broker().batch_acks(channel)
        messages = [channel.basic_get("default") for _ in range(3)]
        for message in messages:
            message.ack()
        assert Message.objects.count() == 3  # noted only, until the flush
        with CaptureQueriesContext(db) as queries:
            flush()
    writes = [q["sql"].split()[0] for q in queries.captured_queries
              if q["sql"].startswith(("DELETE", "UPDATE", "INSERT"))]
    assert writes == ["DELETE"]
    assert not Message.objects.exists()
