"""Signatures and workflows (jobs.canvas): what a Celery user writes, run by a worker in this
process on the database broker. The same on every broker, with worker processes and a
SIGKILL, is tests/test_canvas_e2e.py; with Celery on the other side, test_celery_interop.py."""

from __future__ import annotations

import json

import pytest
from django.core import checks
from django.db import connection

from jobs import GroupResult, JobResult, chain, chord, chunks, group, signature
from jobs.conf import DEFAULT_MIDDLEWARE
from jobs.exceptions import ChordError
from jobs.messages import decode
from jobs.models import ChordPart, GroupRecord, JobRecord
from jobs.signatures import Signature
from jobs.testing import capture_jobs, running_worker
from project.demo.jobs import add, fail
from tests.conftest import wait_for
from tests.jobs_app.jobs import boom, mul, noted_failure, tally, wait_for_file

pytestmark = pytest.mark.pg  # the chord's counting runs on PostgreSQL too
worker_db = pytest.mark.django_db(transaction=True)


# Signatures -----------------------------------------------------------------------------------


def test_a_signature_is_celerys_dict_and_round_trips_through_json():
    made = add.s(2).set(queue="other", countdown=5, priority=3)
    data = json.loads(json.dumps(made))
    assert data == {"task": "project.demo.jobs.add", "args": [2], "kwargs": {},
                    "options": {"queue": "other", "countdown": 5, "priority": 3},
                    "subtask_type": None, "immutable": False}
    again = signature(data)
    assert (again.task, again.args, again.options["queue"], again.immutable) == (
        "project.demo.jobs.add", (2,), "other", False)
    assert add.si(1, 2).immutable and add.si(1, 2).args == (1, 2)
    assert add.signature((1,), {"y": 2}, queue="q") == {
        "task": "project.demo.jobs.add", "args": (1,), "kwargs": {"y": 2},
        "options": {"queue": "q"}, "subtask_type": None, "immutable": False}


def test_a_chain_group_and_chord_round_trip_through_json_as_their_types():
    workflow = chord(group(add.s(i, i) for i in range(3)), tally.s()) | mul.s(10)
    again = signature(json.loads(json.dumps(workflow)))
    assert isinstance(again, chain)
    first = again.tasks[0]
    assert isinstance(first, chord) and isinstance(first.header, group)
    assert [t.args for t in first.header.tasks] == [(0, 0), (1, 1), (2, 2)]
    assert first.body.task == "tests.jobs_app.jobs.tally"


def test_clone_puts_new_arguments_first_and_leaves_the_original_alone():
    partial = add.s(2)
    partial.link(mul.s(3))
    copy = partial.clone((1,), queue="other")
    assert (copy.args, copy.options["queue"]) == ((1, 2), "other")
    assert partial.args == (2,) and "queue" not in partial.options
    copy.options["link"][0]["args"] = ()
    assert partial.options["link"][0]["args"] == (3,)
    assert add.si(5, 5).clone((1,)).args == (5, 5)


def test_calling_a_signature_runs_it_here():
    assert add.s(2)(3) == 5
    assert add.si(1, 1).apply().get() == 2


def test_an_unknown_option_fails_at_apply_async(jobs_captured):
    with pytest.raises(TypeError, match="unknown option"):
        add.s(1, 2).set(colour="red").delay()


def test_the_pipe_makes_one_flat_chain():
    made = add.s(1, 1) | add.s(2) | (mul.s(3) | mul.s(4))
    assert isinstance(made, chain)
    assert [t.task.rsplit(".", 1)[1] for t in made.tasks] == ["add", "add", "mul", "mul"]


def test_link_and_chain_travel_in_the_message_embed_where_celery_puts_them(jobs_captured):
    handle = (add.s(1, 1) | mul.s(10)).apply_async(link_error=noted_failure.s())
    first = jobs_captured.envelopes[0]
    args, kwargs, embed = json.loads(first.payload)
    assert args == [1, 1]
    assert embed["chain"][0]["task"] == "tests.jobs_app.jobs.mul"
    assert embed["chain"][0]["options"]["task_id"] == handle.id
    assert [e["task"] for e in embed["errbacks"]] == ["tests.jobs_app.jobs.noted_failure"]
    assert embed["callbacks"] is None and embed["chord"] is None
    decoded = decode(first.headers, first.payload, first.content_type, first.content_encoding,
                     {"application/json"})
    assert decoded.embed["chain"] == embed["chain"]


def test_a_plain_job_carries_no_embed(jobs_captured):
    add.delay(1, 2)
    envelope = jobs_captured.envelopes[0]
    assert json.loads(envelope.payload)[2] == {"callbacks": None, "errbacks": None,
                                               "chain": None, "chord": None}
    assert envelope.message.embed is None


def test_an_embed_that_cant_be_followed_is_refused_when_decoded(jobs_captured):
    from jobs.exceptions import InvalidMessage

    add.delay(1, 2)
    envelope = jobs_captured.envelopes[0]
    body = json.dumps([[1, 2], {}, {"callbacks": [{"args": []}]}])
    with pytest.raises(InvalidMessage, match="'callbacks' is not a list of signatures"):
        decode(envelope.headers, body, "application/json", "utf-8", {"application/json"})


def test_leaving_canvas_out_of_the_middleware_warns(settings):
    settings.JOBS = {**settings.JOBS, "MIDDLEWARE": [p for p in DEFAULT_MIDDLEWARE
                                                     if not p.endswith(".Canvas")]}
    ids = [m.id for m in checks.run_checks()]
    assert "jobs.W031" in ids


# Running workflows ------------------------------------------------------------------------


@worker_db
def test_a_chain_passes_each_result_to_the_next_step():
    with running_worker():
        handle = (add.s(1, 2) | mul.s(10) | add.s(5)).delay()
        assert handle.get(timeout=20) == 35
    middle = handle.parent
    first = middle.parent
    assert (first.get(timeout=1), middle.get(timeout=1)) == (3, 30)
    assert first.children == [middle] and middle.children == [handle]
    assert JobResult(handle.id).parent == middle  # read back from the row
    assert JobRecord.objects.get(job_id=handle.id).root_id == first.id


@worker_db
def test_link_runs_with_the_value_and_link_error_with_the_failed_jobs_id():
    with running_worker():
        ok = add.apply_async((2, 2), link=mul.s(3))
        bad = fail.apply_async(("no",), link_error=noted_failure.s(), link=mul.s(3))
        callback = wait_for(lambda: JobRecord.objects.filter(
            name="tests.jobs_app.jobs.mul", parent_id=ok.id, state="SUCCESS").first())
        errback = wait_for(lambda: JobRecord.objects.filter(
            name="tests.jobs_app.jobs.noted_failure", state="SUCCESS").first())
    assert callback.result == 12
    assert errback.result == bad.id and errback.parent_id == bad.id
    assert not JobRecord.objects.filter(name="tests.jobs_app.jobs.mul", parent_id=bad.id).exists()


@worker_db
def test_a_failing_step_stops_the_chain_and_runs_its_link_error():
    with running_worker():
        handle = (add.s(1, 1) | boom.s() | mul.s(2)).apply_async(link_error=noted_failure.s())
        failed = handle.parent
        errback = wait_for(lambda: JobRecord.objects.filter(
            name="tests.jobs_app.jobs.noted_failure", state="SUCCESS").first())
        assert failed.get(timeout=5, propagate=False).args == ("boom (2,)",)
    assert errback.result == failed.id
    assert handle.state == "PENDING"  # never sent


@worker_db
def test_revoking_the_next_step_stops_the_chain(tmp_path):
    gate = tmp_path / "go"
    with running_worker():
        last = (wait_for_file.si(str(gate), 1) | add.s(1) | mul.s(2)).delay()
        second, first = last.parent, last.parent.parent
        wait_for(lambda: first.state == "STARTED")
        second.revoke()
        gate.touch()
        assert first.get(timeout=20) == 1
        wait_for(lambda: second.state == "REVOKED" and last.state == "REVOKED")
    assert not JobRecord.objects.filter(job_id=second.id, date_started__isnull=False).exists()


@worker_db
def test_a_group_is_stored_and_restored_from_its_id():
    with running_worker():
        result = group(add.s(i, i) for i in range(10)).apply_async()
        restored = GroupResult.restore(result.id)
        assert [r.id for r in restored] == [r.id for r in result]
        assert restored.get(timeout=20) == [i + i for i in range(10)]
    assert restored.ready() and restored.successful() and not restored.failed()
    assert restored.completed_count() == 10
    assert set(JobRecord.objects.filter(group_id=result.id).values_list("job_id", flat=True)) \
        == {r.id for r in result}


@worker_db
def test_a_group_with_a_failure_reports_it():
    with running_worker():
        result = group([add.s(1, 1), boom.s(), add.s(2, 2)]).apply_async()
        values = result.get(timeout=20, propagate=False)
    assert values[0] == 2 and isinstance(values[1], ValueError) and values[2] == 4
    assert result.failed() and not result.successful() and result.completed_count() == 2
    with pytest.raises(ValueError):
        result.get(timeout=1)


@worker_db
def test_revoking_a_group_stops_the_jobs_that_have_not_run():
    result = group(add.s(i, 1) for i in range(3)).apply_async()
    result.revoke()
    with running_worker():
        wait_for(result.ready)
    assert [r.state for r in result] == ["REVOKED"] * 3


@worker_db
def test_a_chord_runs_its_body_once_with_the_header_results_in_order(tmp_path):
    with running_worker(pool="threads", concurrency=4):
        handle = chord((mul.s(i, 2) for i in range(20)), tally.s(str(tmp_path))).delay()
        assert handle.get(timeout=30) == sum(i * 2 for i in range(20))
    runs = list(tmp_path.glob("run-*"))
    assert len(runs) == 1
    assert json.loads(runs[0].read_text()) == [i * 2 for i in range(20)]
    record = GroupRecord.objects.get(group_id=handle.parent.id)
    assert (record.done, record.size, record.body_state) == (20, 20, "SENT")
    assert not ChordPart.objects.filter(group_id=record.group_id).exists()  # done with


@worker_db
def test_a_failing_header_job_fails_the_chord_and_runs_the_bodys_link_error(tmp_path):
    with running_worker():
        body = tally.s(str(tmp_path))
        body.link_error(noted_failure.s(str(tmp_path)))
        handle = chord([add.s(1, 1), boom.s(7), add.s(2, 2)], body).delay()
        error = handle.get(timeout=20, propagate=False)
        wait_for(lambda: (tmp_path / f"errback-{handle.id}").exists())
    culprit = handle.parent[1]
    assert isinstance(error, ChordError)
    assert culprit.id in str(error) and "tests.jobs_app.jobs.boom" in str(error)
    assert "ValueError" in str(error)
    assert not list(tmp_path.glob("run-*"))
    assert GroupRecord.objects.get(group_id=handle.parent.id).body_state == "FAILURE"


@worker_db
def test_a_header_job_counted_twice_counts_once():
    """A header job whose worker died after counting runs again: it must not count again."""
    from jobs import chords
    from jobs.messages import JobMessage

    with capture_jobs() as captured:
        handle = chord([add.s(1, 1), add.s(2, 2)], tally.s()).delay()
        first = captured.messages[0]
        JobRecord.objects.create(job_id=first.id, state="SUCCESS", result=2)
        for _ in range(2):
            chords.part_succeeded(JobMessage(id=first.id, name=first.name,
                                             group_id=first.group_id))
        record = GroupRecord.objects.get(group_id=handle.parent.id)
        assert (record.done, record.body_state) == (1, "WAITING")
        assert len(captured) == 2  # the header; no body yet
        second = captured.messages[1]
        JobRecord.objects.create(job_id=second.id, state="SUCCESS", result=4)
        chords.part_succeeded(JobMessage(id=second.id, name=second.name,
                                         group_id=second.group_id))
        assert captured.messages[-1].id == handle.id
        assert captured.messages[-1].args == ([2, 4],)
        # Run again after the body went (its worker died before acknowledging it): the count
        # is over, and its guard rows are gone with it.
        chords.part_succeeded(JobMessage(id=first.id, name=first.name,
                                         group_id=first.group_id))
        record = GroupRecord.objects.get(group_id=handle.parent.id)
        assert (record.done, record.size, record.body_state) == (2, 2, "SENT")
        assert len(captured) == 3
        assert not ChordPart.objects.filter(group_id=record.group_id).exists()


@worker_db
def test_a_group_followed_by_a_step_in_a_chain_is_a_chord():
    with running_worker(pool="threads", concurrency=2):
        handle = (add.s(1, 1) | group(mul.s(i) for i in range(1, 4)) | tally.s()).delay()
        assert handle.get(timeout=20) == 2 + 4 + 6


@worker_db
def test_map_starmap_and_chunks():
    with running_worker():
        assert add.starmap([(1, 1), (2, 2)]).delay().get(timeout=20) == [2, 4]
        assert mul.s(2).clone().type.map  # a job has map too
        squares = signature("tests.jobs_app.jobs.mul").clone()
        assert Signature.from_dict(squares).task.endswith("mul")
        parts = add.chunks([(i, i) for i in range(7)], 3).apply_async()
        assert parts.get(timeout=20) == [[0, 2, 4], [6, 8, 10], [12]]
        assert chunks(add.s(), [(1, 2)], 1).group().tasks[0].task == "celery.starmap"
        assert tally.map([[1, 2], [3]]).delay().get(timeout=20) == [3, 3]


def test_a_plain_job_takes_no_workflow_step(django_assert_num_queries, transactional_db):
    """The canvas middleware costs a plain job nothing on the database."""
    if connection.vendor != "sqlite":
        pytest.skip("counted on SQLite")
    from jobs.middleware.canvas import Canvas
    from jobs.outcome import Kind, Outcome

    class Execution:
        message = add.prepare((1, 2)).message

    with django_assert_num_queries(0):
        outcome = Canvas().execute(Execution(), lambda e: Outcome(Kind.SUCCEEDED, value=3))
    assert outcome.value == 3


def test_always_eager_runs_workflows_inline(jobs_eager, tmp_path):
    assert (add.s(1, 2) | mul.s(10) | add.s(5)).delay().get() == 35
    assert group(add.s(i, i) for i in range(3)).delay().get() == [0, 2, 4]
    assert chord([add.s(1, 1), add.s(2, 2)], tally.s()).delay().get() == 6
    assert add.apply_async((2, 2), link=noted_failure.s(str(tmp_path))).get() == 4
    assert (tmp_path / "errback-4").exists()  # the link ran, with the value
    failed = (add.s(1, 1) | boom.s() | mul.s(2)).apply_async(
        link_error=noted_failure.s(str(tmp_path)))
    assert failed.failed() and (tmp_path / f"errback-{failed.id}").exists()
    error = chord([boom.s()], tally.s()).delay().get(propagate=False)
    assert isinstance(error, ChordError)


@worker_db
def test_a_header_job_retried_before_it_succeeds_counts_once_and_runs_no_errback(tmp_path):
    from tests.jobs_app.jobs import flaky

    body = tally.s(str(tmp_path))
    body.link_error(noted_failure.s(str(tmp_path)))
    with running_worker():
        handle = chord([flaky.s(2), add.s(1, 1)], body).delay()
        assert handle.get(timeout=30) == 1 + 2  # flaky returns its retry count
    assert len(list(tmp_path.glob("run-*"))) == 1
    assert not list(tmp_path.glob("errback-*"))
    assert JobRecord.objects.get(job_id=handle.parent[0].id).retries == 1


@worker_db
def test_a_group_of_chains_and_a_chord_over_chains(tmp_path):
    with running_worker(pool="threads", concurrency=2):
        result = group(add.s(i, 1) | mul.s(10) for i in range(3)).apply_async()
        assert result.get(timeout=20) == [10, 20, 30]
        handle = chord([add.s(1, 1) | mul.s(2), add.s(2, 2)], tally.s(str(tmp_path))).delay()
        assert handle.get(timeout=20) == 4 + 4
    assert len(list(tmp_path.glob("run-*"))) == 1


def test_a_group_in_a_chords_header_is_refused_when_sent(jobs_captured):
    with pytest.raises(TypeError, match="not groups or chords"):
        chord([group(add.s(1, 1)), add.s(2, 2)], tally.s()).delay()


@worker_db
def test_a_chord_followed_by_a_step_passes_the_body_result_on():
    with running_worker(pool="threads", concurrency=2):
        handle = (chord([add.s(1, 1), add.s(2, 2)], tally.s()) | mul.s(10)).delay()
        assert handle.get(timeout=20) == 60


@worker_db
def test_revoking_every_step_of_a_chain_stops_what_has_not_run(tmp_path):
    gate = tmp_path / "go"
    with running_worker():
        last = (wait_for_file.si(str(gate), 1) | add.s(1) | mul.s(2)).delay()
        first = last.parent.parent
        wait_for(lambda: first.state == "STARTED")
        step = last
        while step is not None:
            step.revoke()
            step = step.parent
        gate.touch()
        assert first.get(timeout=20) == 1  # running: it goes on
        wait_for(lambda: last.parent.state == "REVOKED" and last.state == "REVOKED")


def test_a_later_step_with_an_unknown_option_fails_when_the_workflow_is_sent(jobs_captured):
    with pytest.raises(TypeError, match="unknown option.*colour"):
        (add.s(1, 1) | mul.s(2).set(colour="red")).delay()
    with pytest.raises(TypeError, match="unknown option.*colour"):
        chord([add.s(1, 1)], tally.s().set(colour="red")).delay()
    assert len(jobs_captured) == 0
