"""Signed messages: with SIGNING_KEYS set, only a holder of a key can make workers run jobs."""

from __future__ import annotations

import json
import zlib
from functools import partial

import pytest
from kombu import Connection

from jobs import security
from jobs.broker import Broker, queue_for
from jobs.checks import check_settings
from jobs.messages import JobMessage, encode
from jobs.middleware.signing import Signing
from jobs.models import DeadLetter, JobRecord
from project.demo import jobs as demo
from tests.conftest import broker_params, wait_for

KEY = "k" * 40
OLD_KEY = "o" * 40
OTHER_KEY = "x" * 40


@pytest.fixture
def signing(settings):
    def use(*keys):
        settings.JOBS = {**settings.JOBS, "SIGNING_KEYS": list(keys)}

    return use


def sent(**fields):
    """What a worker receives for a job encoded here: headers, body bytes, content type."""
    message = JobMessage(id="job-1", name="project.demo.jobs.add", args=(1, 2), **fields)
    envelope = Signing().before_publish(None, encode(message, "json"), {})
    return dict(headers=dict(envelope.headers), body=envelope.payload.encode(),
                content_type=envelope.content_type,
                content_encoding=envelope.content_encoding)


def refusal(message) -> str | None:
    return security.refusal(**message)


def test_with_signing_keys_every_message_carries_a_signature(signing):
    signing(KEY)
    assert sent()["headers"][security.HEADER].startswith(f"v1:{security.key_id(KEY)}:")


def test_without_signing_keys_messages_are_not_signed_and_all_are_accepted(settings):
    message = sent()
    assert security.HEADER not in message["headers"]
    assert refusal(message) is None


def test_a_signed_message_passes(signing):
    signing(KEY)
    assert refusal(sent()) is None


def test_an_unsigned_message_is_refused(signing):
    message = sent()
    signing(KEY)
    assert refusal(message) == ("unsigned message: SIGNING_KEYS is set, so every message "
                                "must be signed")


def test_a_changed_body_is_refused(signing):
    signing(KEY)
    message = sent()
    assert message["body"].startswith(b"[[1, 2]")
    message["body"] = message["body"].replace(b"[[1, 2]", b"[[1, 3]", 1)
    assert refusal(message).startswith("bad signature")


@pytest.mark.parametrize("header, value", [
    ("task", "project.demo.jobs.fail"),
    ("id", "job-2"),
    ("eta", "2030-01-01T00:00:00+00:00"),
    ("expires", "2030-01-01T00:00:00+00:00"),
    ("retries", 5),
    ("timelimit", [None, 1]),
])
def test_a_changed_header_that_decides_what_runs_is_refused(signing, header, value):
    signing(KEY)
    message = sent()
    message["headers"][header] = value
    assert refusal(message).startswith("bad signature")


def test_a_changed_content_type_is_refused(signing):
    signing(KEY)
    message = sent()
    message["content_type"] = "application/x-yaml"
    assert refusal(message).startswith("bad signature")


def test_a_message_signed_with_another_key_is_refused(signing):
    signing(OTHER_KEY)
    message = sent()
    signing(KEY)
    assert refusal(message).startswith("signed with a key this worker does not hold")


def test_a_forged_signature_with_the_right_key_id_is_refused(signing):
    signing(KEY)
    message = sent()
    message["headers"][security.HEADER] = f"v1:{security.key_id(KEY)}:" + "0" * 64
    assert refusal(message).startswith("bad signature")


@pytest.mark.parametrize("value", ["", "garbage", 42, ["v1", "a", "b"], "v2:abc:def"])
def test_a_malformed_signature_header_is_refused(signing, value):
    signing(KEY)
    message = sent()
    message["headers"][security.HEADER] = value
    assert refusal(message) == "malformed signature header 'x-jobs-signature'"


def test_rotation_signs_with_the_first_key_and_accepts_the_others(signing):
    signing(OLD_KEY)
    from_before = sent()
    signing(KEY, OLD_KEY)
    from_now = sent()
    assert refusal(from_before) is None
    assert refusal(from_now) is None
    assert from_now["headers"][security.HEADER].split(":")[1] == security.key_id(KEY)
    signing(KEY)
    assert refusal(from_before).startswith("signed with a key this worker does not hold")


def test_informational_headers_may_change_in_transit(signing):
    signing(KEY)
    message = sent()
    message["headers"]["argsrepr"] = "(redacted)"
    message["headers"]["compression"] = None
    assert refusal(message) is None


def test_headers_survive_a_json_round_trip(signing):
    """Brokers re-encode headers (Redis as JSON): tuples become lists, and so on."""
    signing(KEY)
    message = sent(time_limit=30, soft_time_limit=2.5)
    message["headers"] = json.loads(json.dumps(message["headers"]))
    assert refusal(message) is None


def test_a_compressed_message_is_verified_on_its_decompressed_body(signing):
    from jobs.execution import Delivery

    signing(KEY)
    message = sent()
    headers = {**message["headers"], "compression": "application/x-gzip"}
    delivery = Delivery(tag=1, headers=headers, body=zlib.compress(message["body"]),
                        content_type=message["content_type"],
                        content_encoding=message["content_encoding"], queue="default")
    assert security.check_delivery(delivery) is None
    altered = Delivery(tag=1, headers=headers, body=zlib.compress(message["body"] + b" "),
                       content_type=message["content_type"],
                       content_encoding=message["content_encoding"], queue="default")
    assert security.check_delivery(altered).startswith("bad signature")


def test_the_key_id_does_not_reveal_the_key():
    assert KEY[:8] not in security.key_id(KEY)
    assert security.key_id(KEY) != security.key_id(OTHER_KEY)


# System checks ---------------------------------------------------------------------------------


def check_ids(settings, keys):
    settings.JOBS = {"SIGNING_KEYS": keys}
    return [e.id for e in check_settings()]


def test_long_random_keys_pass_the_checks(settings):
    assert check_ids(settings, [KEY, OLD_KEY]) == []


@pytest.mark.parametrize("keys", ["a-single-string-not-a-list" * 2, [""], [None], [KEY, KEY]])
def test_bad_signing_keys_are_an_error(settings, keys):
    assert check_ids(settings, keys) == ["jobs.E021"]


def test_a_short_signing_key_is_a_warning(settings):
    assert check_ids(settings, ["secret"]) == ["jobs.W020"]


# A worker that holds the key ------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("broker_url", broker_params(), indirect=True)
def test_a_signing_worker_runs_signed_jobs_and_dead_letters_forged_ones(
        broker_url, start_worker, signing, monkeypatch):
    monkeypatch.setenv("JOBS_SIGNING_KEYS", json.dumps([KEY]))
    signing(KEY)
    start_worker(broker_url, "-c", "1")
    tampered = Signing().before_publish(
        None, encode(JobMessage(id="tampered-1", name="project.demo.jobs.add", args=(1, 2)),
                     "json"), {})
    options = Broker.for_url(broker_url).transport_options
    with Connection(broker_url, transport_options=options) as conn:
        producer = conn.Producer()
        send = partial(producer.publish, exchange="", routing_key="default",
                       declare=[queue_for("default")], content_type="application/json",
                       content_encoding="utf-8")
        send(b"[[1, 2], {}, {}]", headers={"task": "project.demo.jobs.add", "id": "forged-1"})
        send(tampered.payload.replace("[[1, 2]", "[[100, 2]"), headers=tampered.headers)

    good = demo.add.delay(2, 3)
    compressed = demo.add.apply_async(("x" * 5000, "y"), compression="zlib")

    assert good.get(timeout=30) == 5
    assert compressed.get(timeout=30) == "x" * 5000 + "y"
    letters = wait_for(lambda: dict(DeadLetter.objects.values_list("job_id", "reason"))
                       if DeadLetter.objects.count() == 2 else None,
                       message="the forged messages were not dead-lettered")
    assert letters["forged-1"].startswith("unsigned message")
    assert letters["tampered-1"].startswith("bad signature")
    assert not JobRecord.objects.filter(job_id__in=["forged-1", "tampered-1"]).exists()
