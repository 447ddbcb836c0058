"""Decoding what a broker delivers: a valid JobMessage or a clear InvalidMessage."""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from kombu.serialization import dumps, registry

from jobs.exceptions import InvalidMessage
from jobs.ids import new_id
from jobs.messages import JobMessage, decode, encode

ACCEPT = {"application/json"}


def roundtrip(message: JobMessage) -> JobMessage:
    envelope = encode(message, "json")
    return decode(envelope.headers, envelope.payload, envelope.content_type,
                  envelope.content_encoding, ACCEPT, message.queue)


def test_a_message_survives_encoding_and_decoding():
    sent = JobMessage(id="1", name="a.b", args=(1, "x"), kwargs={"k": [1]}, queue="q",
                      retries=2, time_limit=30, soft_time_limit=20)
    got = roundtrip(sent)
    assert (got.id, got.name, got.args, got.kwargs, got.queue, got.retries) == (
        "1", "a.b", (1, "x"), {"k": [1]}, "q", 2)
    assert (got.time_limit, got.soft_time_limit) == (30, 20)


@pytest.mark.parametrize("args", [
    (1, 2.5, "é\u2028", None, True, [1, {"a": [None]}], 10**30),
    (float("nan"), float("inf")),
    ({1: "int keys become strings"},),
    (datetime(2026, 1, 2, 3, 4, tzinfo=UTC), Decimal("1.5"), uuid.UUID(int=7)),  # kombu's types
])
def test_a_body_is_the_text_kombus_json_serializer_writes(args):
    message = JobMessage(id="1", name="a.b", args=args, kwargs={"k": "v"})
    envelope = encode(message, "json")
    assert (envelope.content_type, envelope.content_encoding, envelope.payload) == dumps(
        message.body(), serializer="json")


def test_a_json_serializer_registered_over_kombus_is_the_one_used():
    saved = registry._encoders["json"], registry._decoders["application/json"]
    registry.register("json", lambda body: "custom", json.loads, "application/json", "utf-8")
    try:
        assert encode(JobMessage(id="1", name="a.b"), "json").payload == "custom"
    finally:  # register() replaced the decoder too
        registry._encoders["json"], registry._decoders["application/json"] = saved


@pytest.mark.parametrize("body", [
    '[[1, 2.5, "x", null, true, [1, {"a": [null]}], 1000000000000000000000000000000],'
    ' {"k": "v"}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]',
    '[["\\u00e9\\u2028"], {}, {}]',  # escaped: decoded by kombu's
    '[["\u00e9"], {}, {}]',  # raw UTF-8
    '[[NaN, Infinity], {}, {}]',
    '[[{"__type__": "datetime", "__value__": "2026-01-02T03:04:00+00:00"}], {}, {}]',
    '[[{"__type__": "decimal", "__value__": "1.5"}, "__type__"], {}, {}]',
    '[[{"\\u005f_type__": "datetime", "__value__": "2026-01-02T03:04:00"}],'
    ' {}, {}]',  # the key spelled with an escape
])
@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "str"])
def test_a_json_body_decodes_as_kombus_decoder_decodes_it(body, as_bytes):
    from kombu.serialization import loads

    sent = body.encode() if as_bytes else body
    message = decode({"task": "a", "id": "1"}, sent, "application/json", "utf-8", ACCEPT)
    args, kwargs, _ = loads(sent, "application/json", "utf-8", accept=ACCEPT)
    assert (message.args, message.kwargs) == (tuple(args), kwargs)
    assert [type(a) for a in message.args] == [type(a) for a in args]


def test_a_json_decoder_registered_over_kombus_is_the_one_used():
    saved = registry._decoders["application/json"]
    registry._decoders["application/json"] = lambda body: [["custom"], {}, {}]
    try:
        message = decode({"task": "a", "id": "1"}, b'[[1], {}, {}]', "application/json",
                         "utf-8", ACCEPT)
    finally:
        registry._decoders["application/json"] = saved
    assert message.args == ("custom",)


def test_a_circular_argument_is_an_encode_error_naming_it():
    circular = []
    circular.append(circular)
    with pytest.raises(TypeError, match="argument '#0' of type list can't be serialized"):
        encode(JobMessage(id="1", name="a.b", args=(circular,)), "json")


def test_new_ids_are_random_uuids_as_uuid4_writes_them():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def test_a_message_without_task_headers_is_invalid():
    with pytest.raises(InvalidMessage, match="'task' and 'id' headers are missing"):
        decode({}, b"[[], {}, {}]", "application/json", "utf-8", ACCEPT)


def test_a_body_that_is_not_json_is_invalid():
    with pytest.raises(InvalidMessage, match="can't decode the body"):
        decode({"task": "a", "id": "1"}, b"\xff{", "application/json", "utf-8", ACCEPT)


def test_a_refused_content_type_is_invalid():
    with pytest.raises(InvalidMessage, match="can't decode"):
        decode({"task": "a", "id": "1"}, b"x", "application/x-python-serialize", "binary", ACCEPT)


@pytest.mark.parametrize("body", [{"args": []}, [1, 2], [{}, [], {}], [[], [], {}]])
def test_a_body_of_the_wrong_shape_is_invalid(body):
    with pytest.raises(InvalidMessage, match="body"):
        decode({"task": "a", "id": "1"}, json.dumps(body), "application/json", "utf-8", ACCEPT)


def test_a_bad_eta_header_is_invalid():
    with pytest.raises(InvalidMessage, match="bad header"):
        decode({"task": "a", "id": "1", "eta": "tomorrow"}, b"[[], {}, {}]",
               "application/json", "utf-8", ACCEPT)


def test_a_negative_time_limit_is_invalid():
    with pytest.raises(InvalidMessage, match="bad header"):
        decode({"task": "a", "id": "1", "timelimit": [-1, None]}, b"[[], {}, {}]",
               "application/json", "utf-8", ACCEPT)
