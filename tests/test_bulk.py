"""``delay_many``: the messages built from one prototype (``jobs.batch.Batch``) are the
messages ``apply_async`` would send, stored as the one-by-one path stores them; publishing
middleware still sees and changes each message where it has something to do; and the
caller's transaction decides, as for ``delay()``."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime

import pytest
from django.db import transaction
from django.utils.module_loading import import_string

from jobs import security, signals
from jobs.conf import DEFAULT_MIDDLEWARE
from jobs.middleware import Middleware
from jobs.models import Message
from project.demo import jobs as demo
from tests.conftest import SESSION, broker_params

pytestmark = pytest.mark.django_db(transaction=True)

on_every_batching_broker = pytest.mark.parametrize(
    "broker_url", [p for p in broker_params() if p.values[0] in ("redis", "django")],
    indirect=True)

#: Calls whose text needs escaping in JSON, in a ``%``-template and in a format string.
AWKWARD = [((1, "two"), {}), (("%s %(x)s {} {0} \\ \"q\"", "}{"), {}),
           (([1, {"a": None}],), {"y": "é ü \u2028 \x00"}), ((), {"x": 1.5, "y": [True]})]


class Stamping(Middleware):
    """Changes each message: a header naming its own id (the signing middleware's kind)."""

    def before_publish(self, job, envelope, options):
        import dataclasses

        headers = {**envelope.headers, "x-stamp": f"stamped {envelope.message.id}"}
        return dataclasses.replace(envelope, headers=headers)


class Watching(Middleware):
    """Says it leaves every message as it is, so a bulk call is not shown to it."""

    seen = 0

    def before_publish(self, job, envelope, options):
        Watching.seen += 1
        return envelope

    def passes_through(self, job, message, options) -> bool:
        return True


def with_middleware(settings, *paths: str) -> None:
    settings.JOBS = {**settings.JOBS, "MIDDLEWARE": [*DEFAULT_MIDDLEWARE, *paths]}


def stored(broker_url: str) -> list[dict]:
    """The messages on the broker, oldest first, as the transport stores them."""
    if broker_url.startswith("django"):
        rows = Message.objects.order_by("id")
        return [json.loads(row.payload) for row in rows]
    import redis

    client = redis.Redis.from_url(broker_url)
    found = []
    for key in sorted(client.scan_iter(match=f"{SESSION}:*", count=1000)):
        if client.type(key) == b"list":
            found += [json.loads(item) for item in reversed(client.lrange(key, 0, -1))]
    return found


def same_apart_from_ids(message: dict) -> str:
    """A stored message's text with its own id and delivery tag taken out."""
    text = json.dumps(message)
    return text.replace(message["headers"]["id"], "ID").replace(
        message["properties"]["delivery_tag"], "TAG")


def body(message: dict) -> list:
    return json.loads(base64.b64decode(message["body"]))


OPTIONS = {"priority": 5, "eta": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
           "expires": datetime(2031, 1, 1, tzinfo=UTC), "headers": {"h": "{%s}"}}


@on_every_batching_broker
def test_a_bulk_call_stores_the_messages_the_one_by_one_path_stores(broker_url, settings):
    batched = demo.add.delay_many(AWKWARD, **OPTIONS)
    from_batch = stored(broker_url)
    with_middleware(settings, "tests.test_bulk.Stamping")  # every message shown to it
    one_by_one = demo.add.delay_many(AWKWARD, **OPTIONS)
    from_each = stored(broker_url)[len(from_batch):]

    assert [m["headers"]["id"] for m in from_batch] == [h.id for h in batched]
    assert [m["headers"]["id"] for m in from_each] == [h.id for h in one_by_one]
    for ours, theirs in zip(from_batch, from_each, strict=True):
        assert "x-stamp" not in ours["headers"]
        del theirs["headers"]["x-stamp"]
        assert same_apart_from_ids(ours) == same_apart_from_ids(theirs)
    assert [body(m)[:2] for m in from_batch] == [[list(a), k] for a, k in AWKWARD]


@on_every_batching_broker
def test_each_message_of_a_bulk_call_has_its_own_id_root_and_delivery_tag(broker_url):
    handles = demo.add.delay_many([(i, 1) for i in range(5)])
    messages = stored(broker_url)
    assert [m["headers"]["id"] for m in messages] == [h.id for h in handles]
    for message in messages:
        job_id = message["headers"]["id"]
        assert message["headers"]["root_id"] == message["properties"]["correlation_id"] == job_id
    assert len({m["properties"]["delivery_tag"] for m in messages}) == 5
    assert [m["headers"]["argsrepr"] for m in messages] == [f"({i}, 1)" for i in range(5)]


@on_every_batching_broker
def test_a_middleware_that_changes_messages_sees_each_message_of_a_bulk_call(broker_url,
                                                                           settings):
    with_middleware(settings, "tests.test_bulk.Stamping")
    handles = demo.add.delay_many([(i, 1) for i in range(3)])
    assert [m["headers"]["x-stamp"] for m in stored(broker_url)] == [
        f"stamped {h.id}" for h in handles]


@on_every_batching_broker
def test_a_middleware_that_passes_bulk_calls_through_is_not_shown_each(broker_url, settings):
    with_middleware(settings, "tests.test_bulk.Watching")
    watching = import_string("tests.test_bulk.Watching")  # the class the settings name
    watching.seen = 0
    demo.add.delay_many([(i, 1) for i in range(3)])
    demo.add.delay(1, 1)  # a call of one: not shown either
    assert watching.seen == 0
    demo.add.apply_async((1, 1), countdown=0)  # options: built and shown on its own
    assert watching.seen == 1
    assert len(stored(broker_url)) == 5


@on_every_batching_broker
def test_signed_bulk_calls_carry_each_its_own_valid_signature(broker_url, settings):
    settings.JOBS = {**settings.JOBS, "SIGNING_KEYS": ["a signing key of some length, 32+"]}
    demo.add.delay_many([(i, 1) for i in range(3)])
    messages = stored(broker_url)
    assert len(messages) == 3
    for message in messages:
        assert security.HEADER in message["headers"]
        assert security.refusal(message["headers"], base64.b64decode(message["body"]),
                                message["content-type"], message["content-encoding"]) is None


@on_every_batching_broker
def test_every_message_of_a_bulk_call_is_announced(broker_url):
    announced = []

    def note(sender, job_id, **kwargs):
        announced.append(job_id)

    signals.job_enqueued.connect(note)
    try:
        handles = demo.add.delay_many([(i, 1) for i in range(4)])
    finally:
        signals.job_enqueued.disconnect(note)
    assert announced == [h.id for h in handles]


@on_every_batching_broker
def test_a_bulk_call_larger_than_a_batch_keeps_every_message_in_order(broker_url):
    n = 2_345  # over one LPUSH (1,000) or INSERT (SQLite: 166 rows) of a batch
    handles = demo.add.delay_many([(i, 0) for i in range(n)])
    messages = stored(broker_url)
    assert [m["headers"]["id"] for m in messages] == [h.id for h in handles]
    assert [body(m)[0] for m in messages] == [[i, 0] for i in range(n)]


@pytest.mark.parametrize("broker_url", [p for p in broker_params() if p.values[0] == "redis"],
                         indirect=True)
def test_a_bulk_call_in_a_transaction_is_sent_when_it_commits(broker_url):
    with transaction.atomic():
        demo.add.delay_many([(i, 1) for i in range(3)])
        demo.add.delay_many([(9, 9)], on_commit=False)
        assert [body(m)[0] for m in stored(broker_url)] == [[9, 9]]
    assert len(stored(broker_url)) == 4

    with pytest.raises(RuntimeError), transaction.atomic():
        demo.add.delay_many([(i, 1) for i in range(3)])
        raise RuntimeError("rolled back")
    assert len(stored(broker_url)) == 4


@pytest.mark.parametrize("broker_url", [p for p in broker_params() if p.values[0] == "django"],
                         indirect=True)
def test_a_bulk_call_is_part_of_the_callers_transaction_on_the_database(broker_url):
    with pytest.raises(RuntimeError), transaction.atomic():
        demo.add.delay_many([(i, 1) for i in range(300)])
        assert Message.objects.count() == 300  # rows of this transaction
        raise RuntimeError("rolled back")
    assert Message.objects.count() == 0

    with transaction.atomic():
        handles = demo.add.delay_many([(i, 1) for i in range(300)])
    assert len(stored(broker_url)) == 300
    rows = list(Message.objects.order_by("id"))
    assert [json.loads(r.payload)["properties"]["delivery_tag"] for r in rows] == [
        r.delivery_tag for r in rows]
    assert {(r.queue, r.priority, r.lease_owner, r.delivery_count) for r in rows} == {
        ("default", 0, "", 0)}
    assert [json.loads(r.payload)["headers"]["id"] for r in rows] == [h.id for h in handles]


@pytest.mark.parametrize("broker_url", [p for p in broker_params() if p.values[0] == "django"],
                         indirect=True)
def test_a_delayed_bulk_call_stays_invisible_until_its_eta(broker_url):
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    demo.add.delay_many([(i, 1) for i in range(3)], eta=eta)
    assert {row.visible_at for row in Message.objects.all()} == {eta}


def test_a_batch_gives_each_calls_envelope_as_encode_makes_it():
    from jobs.batch import HOLES, batch
    from jobs.messages import encode

    prototype = demo.add.build_message((), {}, {"task_id": HOLES["id"]})
    made = batch(prototype, AWKWARD)
    assert len(made) == len(AWKWARD)
    for i, envelope in enumerate(made):
        args, kwargs = AWKWARD[i]
        message = demo.add.build_message(args, kwargs, {"task_id": made.calls[i][0]})
        assert envelope == encode(message, "json")
    assert re.fullmatch(r"[0-9a-f-]{36}", made.calls[0][0])


@on_every_batching_broker
def test_delay_stores_the_message_apply_async_stores(broker_url):
    """``delay()`` fills the job's message made on its first call: the texts are those of
    ``apply_async``, which builds and encodes each message."""
    for args, kwargs in AWKWARD:
        demo.add.delay(*args, **kwargs)
        demo.add.apply_async(args, kwargs, on_commit=True)  # an option: the general path
    messages = stored(broker_url)
    assert len(messages) == 2 * len(AWKWARD)
    for filled, built in zip(messages[::2], messages[1::2], strict=True):
        assert filled["headers"]["id"] != built["headers"]["id"]
        assert filled["properties"]["delivery_tag"] != built["properties"]["delivery_tag"]
        assert same_apart_from_ids(filled) == same_apart_from_ids(built)
    assert [body(m)[:2] for m in messages[::2]] == [[list(a), k] for a, k in AWKWARD]


@on_every_batching_broker
def test_delay_follows_a_change_of_settings_after_its_first_call(broker_url, settings):
    demo.add.delay(1, 1)
    settings.JOBS = {**settings.JOBS, "SIGNING_KEYS": ["a signing key of some length, 32+"]}
    demo.add.delay(2, 2)
    unsigned, signed = stored(broker_url)
    assert security.HEADER not in unsigned["headers"]
    assert security.refusal(signed["headers"], base64.b64decode(signed["body"]),
                            signed["content-type"], signed["content-encoding"]) is None


@on_every_batching_broker
def test_delay_of_a_value_json_cant_carry_fails_in_the_caller(broker_url):
    with pytest.raises(TypeError):
        demo.add.delay(object(), 1)
    assert stored(broker_url) == []
