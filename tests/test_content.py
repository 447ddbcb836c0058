"""What a message may contain: serializers, the types they carry, compression, size caps."""

from __future__ import annotations

import base64
import bz2
import lzma
import uuid
import zlib
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from kombu import Connection

from jobs import job
from jobs.checks import check_settings
from jobs.compression import decompress
from jobs.exceptions import ConfigurationError, InvalidMessage
from jobs.messages import JobMessage, decode, encode
from jobs.models import DeadLetter, JobRecord
from project.demo import jobs as demo
from tests.conftest import broker_params


def roundtrip(args, serializer="json", accept=None):
    envelope = encode(JobMessage(id="1", name="a.b", args=tuple(args)), serializer)
    message = decode(envelope.headers, envelope.payload, envelope.content_type,
                     envelope.content_encoding, accept or {envelope.content_type})
    return message.args


# Serializers -----------------------------------------------------------------------------------


def test_json_carries_the_types_django_code_passes_with_their_types_intact():
    values = (datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
              datetime(2030, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=-5))),
              datetime(2030, 1, 2, 3, 4),  # naive stays naive
              date(2030, 1, 2), time(13, 14, 15, 16), Decimal("10.10"), uuid.UUID(int=42))

    got = roundtrip(values)

    assert got == values
    assert [type(v) for v in got] == [type(v) for v in values]
    assert got[1].utcoffset() == timedelta(hours=-5)
    assert got[2].tzinfo is None


def test_json_keeps_the_types_inside_lists_and_dicts():
    value = {"when": [date(2030, 1, 1)], "amount": {"net": Decimal("0.30")}}
    assert roundtrip([value]) == (value,)


def test_msgpack_carries_plain_values():
    pytest.importorskip("msgpack")
    value = {"ints": [1, 2**40], "text": "é", "none": None, "float": 1.5}
    assert roundtrip([value], "msgpack") == (value,)


def test_yaml_works_when_a_project_opts_in():
    pytest.importorskip("yaml")
    envelope = encode(JobMessage(id="1", name="a.b", args=({"a": [1, 2]},)), "yaml")
    assert envelope.content_type == "application/x-yaml"
    assert roundtrip([{"a": [1, 2]}], "yaml") == ({"a": [1, 2]},)


def test_yaml_never_builds_python_objects():
    pytest.importorskip("yaml")
    body = "- [!!python/object/apply:os.getcwd []]\n- {}\n- {}\n"
    with pytest.raises(InvalidMessage, match="can't decode the body"):
        decode({"task": "a.b", "id": "1"}, body, "application/x-yaml", "utf-8",
               {"application/x-yaml"})


def test_a_content_type_outside_accept_content_is_never_decoded(tmp_path):
    marker = tmp_path / "unpickled"
    body = _pickle_that_creates(marker)
    with pytest.raises(InvalidMessage):
        decode({"task": "a.b", "id": "1"}, body, "application/x-python-serialize", "binary",
               {"application/json"})
    assert not marker.exists()


def _pickle_that_creates(path) -> bytes:
    """A pickle whose loading creates ``path`` (as an attacker's would run a command)."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(path), "w"))

    return pickle.dumps([[Evil()], {}, {}])


def test_the_default_settings_accept_json_only(settings):
    from jobs.conf import settings as jobs_settings

    settings.JOBS = {}
    assert jobs_settings.ACCEPT_CONTENT == ["json"]
    assert jobs_settings.TASK_SERIALIZER == "json"


def test_accepting_yaml_is_no_warning_but_accepting_pickle_is(settings):
    settings.JOBS = {"ACCEPT_CONTENT": ["json", "yaml"]}
    assert check_settings() == []
    settings.JOBS = {"ACCEPT_CONTENT": ["json", "pickle"]}
    (warning,) = check_settings()
    assert warning.id == "jobs.W001"
    assert "can run code in your workers" in warning.msg


def test_sending_pickle_without_accepting_it_is_an_error(settings):
    settings.JOBS = {"TASK_SERIALIZER": "pickle"}
    assert [e.id for e in check_settings()] == ["jobs.E008"]


# Compression -----------------------------------------------------------------------------------


@pytest.fixture
def memory_broker(settings):
    """Jobs go to kombu's in-process broker; ``received()`` takes the next message as it
    travelled (kombu's consumer would decompress the body before we see it)."""
    settings.JOBS = {"BROKER_URL": "memory://", "TASK_ENQUEUE_ON_COMMIT": False}
    conn = Connection("memory://")
    channel = conn.default_channel
    channel.queue_declare("default")
    channel.queue_purge("default")

    def received() -> dict:
        raw = channel._get("default")
        body = raw["body"]
        if raw["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return {"headers": raw["headers"], "body": body}

    yield received
    conn.release()


def test_a_large_body_is_compressed_with_the_jobs_compression(memory_broker):
    demo.add.apply_async(("x" * 5000, "y"), compression="bzip2")
    message = memory_broker()
    assert message["headers"]["compression"] == "application/x-bz2"
    assert len(message["body"]) < 1000
    assert bz2.decompress(message["body"]).startswith(b'[["' + b"x" * 5000)


def test_a_body_under_the_threshold_is_sent_uncompressed(memory_broker):
    demo.add.apply_async(("x", "y"), compression="zlib")
    message = memory_broker()
    assert "compression" not in message["headers"]
    assert message["body"].startswith(b'[["x", "y"]')


def test_the_threshold_is_a_setting(memory_broker, settings):
    settings.JOBS = {**settings.JOBS, "TASK_COMPRESSION_THRESHOLD": 0}
    demo.add.apply_async(("x", "y"), compression="zlib")
    message = memory_broker()
    assert message["headers"]["compression"] == "application/x-gzip"
    assert zlib.decompress(message["body"]).startswith(b'[["x", "y"]')


def test_task_compression_applies_to_every_job(memory_broker, settings):
    settings.JOBS = {**settings.JOBS, "TASK_COMPRESSION": "lzma"}
    demo.add.delay("x" * 5000, "y")
    message = memory_broker()
    assert message["headers"]["compression"] == "application/x-lzma"
    assert lzma.decompress(message["body"]).startswith(b'[["xxx')


def test_an_unknown_compression_is_an_error_at_declaration():
    with pytest.raises(ConfigurationError, match="compression='rar' is not available"):
        @job(compression="rar")
        def squeezed():
            pass


def test_an_unknown_task_compression_is_a_check_error(settings):
    settings.JOBS = {"TASK_COMPRESSION": "rar"}
    assert [e.id for e in check_settings()] == ["jobs.E020"]


@pytest.mark.parametrize("value", [-1, "1k", 1.5])
def test_a_bad_compression_threshold_is_a_check_error(settings, value):
    settings.JOBS = {"TASK_COMPRESSION_THRESHOLD": value}
    assert [e.id for e in check_settings()] == ["jobs.E010"]


# Decompressing what arrives --------------------------------------------------------------------


@pytest.mark.parametrize("compress, name", [
    (zlib.compress, "application/x-gzip"),
    (bz2.compress, "application/x-bz2"),
    (lzma.compress, "application/x-lzma"),
    (zlib.compress, "zlib"),
])
def test_a_compressed_body_is_decompressed(compress, name):
    assert decompress(compress(b"[[1], {}, {}]"), name, 1000) == b"[[1], {}, {}]"


@pytest.mark.parametrize("compress, name", [
    (zlib.compress, "application/x-gzip"),
    (bz2.compress, "application/x-bz2"),
    (lzma.compress, "application/x-lzma"),
])
def test_a_body_that_inflates_past_the_size_limit_is_refused(compress, name):
    bomb = compress(b"0" * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(InvalidMessage, match="decompresses to more than TASK_MAX_MESSAGE_SIZE"):
        decompress(bomb, name, 1_000_000)


def test_a_truncated_compressed_body_is_refused():
    with pytest.raises(InvalidMessage, match="truncated"):
        decompress(zlib.compress(b"x" * 1000)[:-8], "application/x-gzip", 10_000)


@pytest.mark.parametrize("name", ["application/x-rar", ["zlib"], None])
def test_an_unknown_compression_is_refused(name):
    with pytest.raises(InvalidMessage, match="unknown compression"):
        decompress(b"data", name, 1000)


def test_garbage_that_claims_to_be_compressed_is_refused():
    with pytest.raises(InvalidMessage, match="can't decompress the body"):
        decompress(b"not zlib at all", "application/x-gzip", 1000)


# Through a worker ------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("broker_url", broker_params(), indirect=True)
def test_compressed_jobs_run_now_and_later(broker_url, start_worker):
    start_worker(broker_url, "-c", "1")
    big = "x" * 5000
    now = demo.add.apply_async((big, "y"), compression="bzip2")
    later = demo.add.apply_async((big, "z"), compression="zlib", countdown=1.5)

    assert now.get(timeout=30) == big + "y"
    assert later.get(timeout=30) == big + "z"
    assert not DeadLetter.objects.exists()


# Recording what arrived ------------------------------------------------------------------------


def deliver(job, args):
    """Run ``job`` as a worker runs what it receives; returns its row."""
    from jobs.execution import Delivery, execute

    envelope = encode(JobMessage(id=str(uuid.uuid4()), name=job.name, args=args), "json")
    execute(Delivery(tag=1, headers=envelope.headers, body=envelope.payload.encode(),
                     content_type=envelope.content_type,
                     content_encoding=envelope.content_encoding, queue="default"),
            "jobs@test", {"application/json"})
    return JobRecord.objects.get(job_id=envelope.message.id)


@pytest.mark.pg
@pytest.mark.django_db(transaction=True)
def test_arguments_no_json_column_can_hold_are_recorded_as_their_repr():
    row = deliver(demo.add, (b"ab", float("nan")))

    assert row.state == "FAILURE"  # bytes + float: the job ran with the real values
    assert row.result["exc_type"] == "TypeError"
    assert row.args == ["b'ab'", "nan"]


@pytest.mark.pg
@pytest.mark.django_db(transaction=True)
def test_a_result_no_json_column_can_hold_fails_the_job_with_the_reason():
    row = deliver(demo.add, (b"ab", b"cd"))

    assert row.state == "FAILURE"
    assert "returned a value that can't be stored" in row.result["exc_message"][0]
