"""A live worker fed hostile messages among good jobs: every good job succeeds, every hostile
message is dead-lettered with its reason, and the worker runs on without growing."""

from __future__ import annotations

import bz2
import itertools
import json
import pickle
import zlib
from collections import Counter
from pathlib import Path

import pytest
from kombu import Connection

from jobs import security
from jobs.broker import Broker, queue_for
from jobs.models import DeadLetter, JobRecord
from project.demo import jobs as demo
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

KEY = "hostile-test-key-" + "k" * 32
ADD = "project.demo.jobs.add"
GOOD = 1000
HOSTILE = 1000
ROUNDS = 20
GROWTH_LIMIT = 10 * 1024 * 1024  # bytes of resident memory, over 950 + 950 messages


class Hostile:
    """Messages no worker may run, each with the reason it must be dead-lettered with."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self.serial = itertools.count()

    def id(self) -> str:
        return f"hostile-{next(self.serial)}"

    def job(self, body, headers=None, content_type="application/json", sign=True, **extra):
        headers = {"task": ADD, "id": self.id(), **(headers or {})}
        if sign:
            security.sign(headers, body, content_type, extra.get("content_encoding", "utf-8"))
        return {"body": body, "headers": headers, "content_type": content_type, **extra}

    def kinds(self):
        """(reason pattern, message factory) pairs, roughly in order of cunning."""
        valid = b"[[1, 2], {}, {}]"
        yield "can't decode the body", lambda: self.job(bytes(range(256)) * 2)
        yield "can't decode the body", lambda: self.job(b"[" * 50_000)
        yield "can't decode the body", lambda: self.job(b"[[" + b"9" * 5000 + b"], {}, {}]")
        yield "can't decode the body", lambda: self.job(
            b'[[{"__type__": "nope", "__value__": 1}], {}, {}]')
        yield "can't decode the body", lambda: self.job(
            b'[[{"__type__": "uuid", "__value__": {"hex": "zz"}}], {}, {}]')
        yield "content type 'application/x-python-serialize' is not accepted", lambda: self.job(
            self.pickle_bomb(), content_type="application/x-python-serialize",
            content_encoding="binary")
        yield "content type 'application/x-yaml' is not accepted", lambda: self.job(
            b"- [!!python/object/apply:os.getcwd []]\n- {}\n- {}\n",
            content_type="application/x-yaml")
        yield "not a job message", lambda: {"body": valid, "headers": {},
                                            "content_type": "application/json"}
        yield "not a job message", lambda: {"body": valid, "headers": [ADD, self.id()],
                                            "content_type": "application/json"}
        yield "a Celery protocol 1 message", lambda: {
            "body": json.dumps({"task": ADD, "id": self.id(), "args": [1, 2]}).encode(),
            "headers": {}, "content_type": "application/json"}
        yield "unregistered job", lambda: self.job(valid, {"task": "os.system"})
        yield "the body is not [args, kwargs, embed]", lambda: self.job(b'{"args": [1, 2]}')
        yield "the body is not [args, kwargs, embed]", lambda: self.job(b"[1, 2, 3, 4]")
        yield "the body's args must be a list", lambda: self.job(b'["1, 2", {}, {}]')
        yield "bad header", lambda: self.job(valid, {"eta": "9999-12-31T23:59:59-05:00"})
        yield "bad header", lambda: self.job(valid, {"expires": "yesterday"})
        yield "bad header", lambda: self.job(valid, {"retries": -1})
        yield "bad header", lambda: self.job(valid, {"retries": "many"})
        yield "bad header", lambda: self.job(valid, {"timelimit": ["forever", None]})
        yield "bad header", lambda: self.job(valid, {"id": "x" * 300})
        yield "bad header", lambda: self.job(valid, {"id": "nul\x00id"})
        yield "bad header", lambda: self.job(valid, {"parent_id": {"not": "an id"}})
        yield "unknown compression", lambda: self.job(valid, {"compression": "application/rar"})
        yield "can't decompress the body", lambda: self.job(
            b"not compressed", {"compression": "application/x-gzip"})
        yield "unsigned message", lambda: self.job(valid, sign=False)
        yield "unsigned message", lambda: self.job(  # headers no JSON column can hold
            valid, {"retries": float("nan"), "argsrepr": "\x00", "root_id": "\x00"}, sign=False)
        yield "bad signature", lambda: self.tampered(valid)
        yield "signed with a key this worker does not hold", lambda: self.job(
            valid, {security.HEADER: "v1:00000000:" + "0" * 64}, sign=False)

    def rare(self):
        """Large ones: a few of each, not hundreds."""
        yield "the message body takes", lambda: self.job(
            json.dumps([["x" * 4_300_000], {}, {}]).encode())
        for compress, name in ((zlib.compress, "application/x-gzip"),
                               (bz2.compress, "application/x-bz2")):
            bomb = compress(json.dumps([["0" * 6_000_000], {}, {}]).encode())
            yield "decompresses to more than", (
                lambda bomb=bomb, name=name: self.job(bomb, {"compression": name}))

    def tampered(self, valid: bytes) -> dict:
        message = self.job(valid)
        message["body"] = valid.replace(b"1", b"7")
        return message

    def pickle_bomb(self) -> bytes:
        """Unpickled, it would create the marker file (an attacker would run a command)."""
        marker = str(self.marker)

        class Payload:
            def __reduce__(self):
                return (open, (marker, "w"))

        return pickle.dumps([[Payload()], {}, {}])

    def batch(self, size: int, rare: bool) -> list[tuple[str, dict]]:
        kinds = list(self.kinds())
        made = [(reason, make()) for reason, make in self.rare()] if rare else []
        while len(made) < size:
            reason, make = kinds[len(made) % len(kinds)]
            made.append((reason, make()))
        return made


def rss(pid: int) -> int:
    """Resident memory of a process and its children, in bytes."""
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


@pytest.mark.pg  # the database matters too: PostgreSQL refuses what SQLite stores
@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_hostile_messages_are_dead_lettered_and_good_jobs_all_succeed(
        broker_url, start_worker, settings, monkeypatch, tmp_path):
    monkeypatch.setenv("JOBS_SIGNING_KEYS", json.dumps([KEY]))
    monkeypatch.setenv("DJANGO_DEBUG", "0")  # as in production: no query log kept
    settings.JOBS = {**settings.JOBS, "SIGNING_KEYS": [KEY]}
    worker = start_worker(broker_url, "-c", "2")
    hostile = Hostile(tmp_path / "unpickled")
    sent: Counter = Counter()
    good: list = []

    def send(rounds) -> None:
        options = Broker.for_url(broker_url).transport_options
        with Connection(broker_url, transport_options=options) as conn:
            producer = conn.Producer()
            for round_ in rounds:
                start = len(good)
                good.extend(demo.add.delay_many([(i, 1) for i in range(start, start + GOOD //
                                                                        ROUNDS)]))
                for reason, message in hostile.batch(HOSTILE // ROUNDS, rare=round_ == 0):
                    sent[reason] += 1
                    producer.publish(message.pop("body"), exchange="", routing_key="default",
                                     declare=[queue_for("default")],
                                     content_encoding=message.pop("content_encoding", "utf-8"),
                                     **message)
        wait_for(lambda: DeadLetter.objects.count() >= sum(sent.values())
                 and JobRecord.objects.filter(state="SUCCESS").count() >= len(good),
                 timeout=50, interval=0.2, message="the worker did not get through the messages")

    send(range(1))  # the first round has the largest messages: the worker's peak
    before = rss(worker.process.pid)
    send(range(1, ROUNDS))
    after = rss(worker.process.pid)

    results = dict(JobRecord.objects.values_list("job_id", "result"))
    assert [results.get(h.id) for h in good] == [i + 1 for i in range(GOOD)]
    assert not JobRecord.objects.exclude(state="SUCCESS").exists()
    reasons = list(DeadLetter.objects.values_list("reason", flat=True))
    assert len(reasons) == HOSTILE
    assert Counter(next((r for r in sent if r in reason), reason) for reason in reasons) == sent
    assert not hostile.marker.exists(), "a refused pickle was unpickled"
    assert worker.process.poll() is None
    assert demo.add.delay(20, 22).get(timeout=10) == 42
    assert after - before < GROWTH_LIMIT, f"the worker grew by {(after - before) / 2**20:.1f} MiB"
