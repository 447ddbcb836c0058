"""Decoding what a broker delivers: a valid JobMessage or a clear InvalidMessage."""

import json

import pytest

from jobs.exceptions import InvalidMessage
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
