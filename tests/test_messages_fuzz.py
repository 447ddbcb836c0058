"""Property-based tests of what a worker does with whatever arrives: any bytes, any headers,
any content type give a valid message or a clear refusal, never an unhandled exception."""

from __future__ import annotations

import json
import math
import uuid
import zlib
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from hypothesis import HealthCheck, example, given, settings as hypothesis_settings, strategies as st
from kombu.serialization import prepare_accept_content

from jobs import security
from jobs.compression import decompress
from jobs.exceptions import InvalidMessage
from jobs.execution import Delivery
from jobs.messages import JobMessage, decode, encode
from jobs.middleware import stack
from jobs.storable import storable
from jobs.worker.receiving import refusal

fuzz = hypothesis_settings(max_examples=150, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.function_scoped_fixture])

CONTENT_TYPES = ["application/json", "application/x-msgpack", "application/x-yaml",
                 "application/x-python-serialize", "application/data", "text/plain", "", None]
ACCEPTED = {"application/json", "application/x-msgpack", "application/x-yaml"}
HEADER_NAMES = ["task", "id", "eta", "expires", "retries", "timelimit", "root_id", "parent_id",
                "group", "ignore_result", "compression", security.HEADER, "lang", "shadow"]

# Values that have broken decoders before: listed so that every run tries them.
edges = st.sampled_from([float("inf"), float("-inf"), float("nan"), -1, 2**31, 2**64, 10**400,
                         "", "0", "-1", "inf", "nan", [None, None], [-1, 1], ["a", "b"], [1],
                         "2030-01-01T00:00:00", "9999-12-31T23:59:59-05:00",
                         "0001-01-01T00:00:00+01:00", "tomorrow", "x" * 300, "a\x00b", "\ud800"])
scalars = st.one_of(
    edges, st.none(), st.booleans(), st.integers(),
    st.floats(), st.text(), st.binary(max_size=64),
    st.datetimes(timezones=st.just(UTC)), st.decimals(), st.uuids(),
    st.sampled_from(["project.demo.jobs.add", "application/x-gzip", "v1:00000000:00"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
headers = st.dictionaries(st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=8)),
                          values, max_size=10)
ids = st.one_of(st.none(), st.uuids().map(str))
times = st.one_of(st.none(), st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat))
VALID = {
    "eta": times, "expires": times, "retries": st.integers(0, 10),
    "timelimit": st.lists(st.one_of(st.none(), st.floats(0, 100)), min_size=2, max_size=2),
    "root_id": ids, "parent_id": ids, "group": ids, "ignore_result": st.booleans(),
    "lang": st.just("py"), "shadow": st.none(),
}


def header_value(name: str):
    """Mostly what a real producer sends, so that one odd header at a time gets tested."""
    valid = VALID.get(name, values)
    return st.one_of(valid, valid, edges, values)


job_headers = st.fixed_dictionaries(
    {"task": st.sampled_from(["project.demo.jobs.add", "x"]), "id": st.text(min_size=1)},
    optional={name: header_value(name) for name in HEADER_NAMES[2:]})

# Bodies: raw bytes, and JSON texts of every shape (so the checks after decoding are reached),
# with kombu's type markers, which make the decoder build values.
markers = st.fixed_dictionaries({"__type__": st.sampled_from(
    ["datetime", "date", "time", "decimal", "uuid", "bytes", "base64", "nope"]),
    "__value__": values})
json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), markers),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def json_text(value) -> bytes:
    return json.dumps(value, default=repr).encode()


bodies = st.one_of(
    st.binary(max_size=256),
    json_like.map(json_text),
    st.tuples(json_like, json_like, json_like).map(lambda t: json_text(list(t))),
    st.tuples(st.lists(json_like, max_size=3), st.dictionaries(st.text(max_size=5), json_like,
                                                               max_size=3)).map(
        lambda t: json_text([t[0], t[1], {}])),
    st.sampled_from([b"[" * 100_000, b"[[1e999999], {}, {}]", b"[[" + b"9" * 5000 + b"], {}, {}]",
                     b'[[NaN, Infinity], {}, {}]', b"\xff\xfe", b""]),
)


def decoded_or_refused(hdrs, body, content_type, encoding, accept):
    try:
        message = decode(hdrs, body, content_type, encoding, accept, "default")
    except InvalidMessage as exc:
        assert str(exc)
        return None
    assert isinstance(message, JobMessage)
    return message


@fuzz
@given(headers, bodies, st.sampled_from(CONTENT_TYPES), st.sampled_from(["utf-8", "binary",
                                                                            "latin-1", "nope", None]))
def test_any_message_decodes_or_is_refused_with_a_reason(hdrs, body, content_type, encoding):
    decoded_or_refused(hdrs, body, content_type, encoding, ACCEPTED)


@fuzz
@given(job_headers, bodies, st.sampled_from(CONTENT_TYPES))
def test_a_message_that_names_a_job_decodes_or_is_refused(hdrs, body, content_type):
    decoded_or_refused(hdrs, body, content_type, "utf-8", ACCEPTED)


@fuzz
@given(job_headers)
@example({"task": "x", "id": "1", "retries": float("inf")})
@example({"task": "x", "id": "1", "eta": "9999-12-31T23:59:59-05:00"})
@example({"task": "x", "id": "1", "timelimit": [float("inf"), None]})
@example({"task": "x", "id": "1", "parent_id": ["not", "an", "id"]})
def test_any_headers_on_a_well_formed_body_decode_or_are_refused(hdrs):
    decoded_or_refused(hdrs, b"[[1], {}, {}]", "application/json", "utf-8", ACCEPTED)


@fuzz
@given(job_headers, bodies)
def test_what_decodes_is_a_well_formed_call(hdrs, body):
    message = decoded_or_refused(hdrs, body, "application/json", "utf-8", ACCEPTED)
    if message is not None:
        assert isinstance(message.args, tuple)
        assert all(isinstance(k, str) for k in message.kwargs)
        assert len(message.id) <= 255 and "\x00" not in message.id
        assert message.retries >= 0
        for when in (message.eta, message.expires):
            assert when is None or when.utcoffset() is not None
        for limit in (message.time_limit, message.soft_time_limit):
            assert limit is None or 0 <= limit < math.inf


@fuzz
@given(st.binary(max_size=512), st.one_of(st.sampled_from(
    ["application/x-gzip", "application/x-bz2", "application/x-lzma", "zlib", "bzip2",
     "application/x-rar", ""]), values))
def test_any_compressed_body_decompresses_or_is_refused(body, compression):
    try:
        data = decompress(body, compression, 10_000)
    except InvalidMessage:
        return
    assert len(data) <= 10_000


@fuzz
@given(st.binary(max_size=2000))
def test_a_zlib_body_decompresses_to_what_was_compressed(data):
    assert decompress(zlib.compress(data), "application/x-gzip", 2000) == data


@fuzz
@given(headers, st.one_of(st.binary(max_size=256), st.text(max_size=64)),
       st.sampled_from(CONTENT_TYPES), st.sampled_from(["utf-8", "binary", "nope", None]))
def test_any_message_passes_or_fails_signature_checks_without_raising(
        settings, hdrs, body, content_type, encoding):
    settings.JOBS = {"SIGNING_KEYS": ["k" * 40]}
    reason = security.refusal(hdrs, body, content_type, encoding)
    assert reason is None or isinstance(reason, str)
    if security.HEADER not in hdrs:
        assert reason.startswith("unsigned")


@fuzz
@given(headers, bodies, st.sampled_from(CONTENT_TYPES))
def test_the_worker_refuses_or_admits_any_delivery_without_raising(
        settings, hdrs, body, content_type):
    settings.JOBS = {"SIGNING_KEYS": ["k" * 40], "ACCEPT_CONTENT": ["json", "msgpack"]}
    delivery = Delivery(tag=1, headers=hdrs, body=body, content_type=content_type,
                        content_encoding="utf-8", queue="default")
    reason = refusal(delivery, prepare_accept_content(["json", "msgpack"]))
    assert reason is None or isinstance(reason, str)
    if reason is None:  # then every middleware's receive hook takes it without raising
        worker = _HandsOff()
        after = stack().receive(worker, delivery)
        assert after is not None or worker.took


class _HandsOff:
    """What the receive hooks may call on the worker, noted and nothing more."""

    hostname, queues, connection = "fuzz", ["default"], None

    def __init__(self) -> None:
        self.took = []

    def __getattr__(self, name):  # submit, ack, requeue, ack_early, dead_letter
        return lambda *args: self.took.append(name)


@fuzz
@given(st.lists(values, max_size=5), st.dictionaries(st.text(max_size=10), values, max_size=5))
def test_any_arguments_json_can_carry_arrive_as_sent(args, kwargs):
    message = JobMessage(id=str(uuid.uuid4()), name="a.b", args=tuple(args), kwargs=kwargs)
    envelope = encode(message, "json")
    got = decode(envelope.headers, envelope.payload, envelope.content_type,
                 envelope.content_encoding, {"application/json"})
    assert _same(got.args, tuple(args)) and _same(got.kwargs, kwargs)


def _same(a, b) -> bool:
    """Equality in which NaN equals NaN and lists equal tuples."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, Decimal) and isinstance(b, Decimal) and a.is_nan() and b.is_nan():
        return True
    return a == b and type(a) is type(b)


@fuzz
@given(values)
def test_whatever_arrives_can_be_stored_in_a_result_row(value):
    text = json.dumps(storable(value), cls=DjangoJSONEncoder, allow_nan=False,
                      ensure_ascii=False)
    assert "\x00" not in text
    text.encode("utf-8")  # no lone surrogate


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"])
def test_a_date_time_no_utc_clock_can_show_is_refused(when):
    with pytest.raises(InvalidMessage, match="out of range"):
        decode({"task": "a", "id": "1", "eta": when}, b"[[], {}, {}]", "application/json",
               "utf-8", ACCEPTED)


def test_an_id_longer_than_its_column_is_refused():
    with pytest.raises(InvalidMessage, match="bad header 'id'"):
        decode({"task": "a", "id": "x" * 256}, b"[[], {}, {}]", "application/json", "utf-8",
               ACCEPTED)


@pytest.mark.parametrize("retries", [-1, 2**31, "many", float("inf"), [1]])
def test_retries_out_of_range_are_refused(retries):
    with pytest.raises(InvalidMessage, match="bad header"):
        decode({"task": "a", "id": "1", "retries": retries}, b"[[], {}, {}]",
               "application/json", "utf-8", ACCEPTED)


def test_a_deeply_nested_body_is_refused():
    with pytest.raises(InvalidMessage, match="can't decode the body"):
        decode({"task": "a", "id": "1"}, b"[" * 100_000, "application/json", "utf-8", ACCEPTED)


def test_an_infinite_time_limit_is_refused():
    with pytest.raises(InvalidMessage, match="bad header"):
        decode({"task": "a", "id": "1", "timelimit": [float("inf"), None]}, b"[[], {}, {}]",
               "application/json", "utf-8", ACCEPTED)


def test_a_datetime_in_the_headers_is_taken_as_it_is():
    when = datetime(2030, 1, 1, tzinfo=UTC)
    message = decode({"task": "a", "id": "1", "eta": when}, b"[[], {}, {}]", "application/json",
                     "utf-8", ACCEPTED)
    assert message.eta == when


def test_an_id_utf8_cannot_encode_is_refused():
    with pytest.raises(InvalidMessage, match="bad header 'id'"):
        decode({"task": "a", "id": "\ud800"}, b"[[], {}, {}]", "application/json", "utf-8",
               ACCEPTED)
