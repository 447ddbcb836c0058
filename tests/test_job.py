"""Declaring jobs and enqueueing them: errors come at declaration and at the call site."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from jobs import JobResult, job
from jobs.exceptions import ConfigurationError, EncodeError
from jobs.registry import registry
from jobs.testing import capture_jobs
from project.demo import jobs as demo
from tests.jobs_app import jobs as testjobs


def test_a_jobs_name_is_its_module_and_qualname():
    assert demo.add.name == "project.demo.jobs.add"
    assert registry.get("project.demo.jobs.add") is demo.add


def test_name_overrides_the_default_name():
    @job(name="tests.custom-name")
    def something():
        return 1

    assert something.name == "tests.custom-name"
    assert "tests.custom-name" in registry


def test_an_unknown_option_is_an_error_at_declaration():
    with pytest.raises(ConfigurationError, match="unknown option.*max_retry"):
        @job(max_retry=3)
        def typo():
            pass


def test_a_bad_queue_name_is_an_error_at_declaration():
    with pytest.raises(ConfigurationError, match="not a valid queue name"):
        @job(queue="has spaces")
        def bad_queue():
            pass


def test_a_bad_rate_limit_is_an_error_at_declaration():
    with pytest.raises(ConfigurationError, match="rate_limit"):
        @job(rate_limit="ten per minute")
        def bad_rate():
            pass


def test_two_jobs_with_one_name_are_an_error():
    @job(name="tests.clash")
    def first():
        pass

    with pytest.raises(ConfigurationError, match="Two jobs are named 'tests.clash'"):
        @job(name="tests.clash")
        def second():
            pass


def test_calling_a_job_runs_it_inline():
    assert demo.add(2, 3) == 5


def test_delay_checks_arguments_against_the_signature():
    with pytest.raises(TypeError, match=r"project.demo.jobs.add\(\): missing a required argument: 'y'"):
        demo.add.delay(1)


@pytest.mark.parametrize(("args", "kwargs", "problem"), [
    ((1, 2, 3), {}, "too many positional arguments"),
    ((), {}, "missing a required argument: 'x'"),
    ((1,), {"z": 2}, "got an unexpected keyword argument 'z'"),
])
def test_delay_refuses_a_call_the_function_cant_take(args, kwargs, problem):
    @job(name="tests.two_args")
    def two_args(x, y=0):
        pass

    with pytest.raises(TypeError, match=rf"tests.two_args\(\): {problem}"):
        two_args.apply_async(args, kwargs)


def test_a_bound_job_counts_its_arguments_without_itself():
    @job(name="tests.bound_two", bind=True)
    def bound_two(self, x, *more, flag):
        pass

    with pytest.raises(TypeError, match="missing a required argument: 'flag'"):
        bound_two.delay(1, 2, 3)
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        bound_two.delay(flag=True)
    with capture_jobs() as captured:
        bound_two.delay(1, 2, 3, flag=True)
    assert captured.messages[0].args == (1, 2, 3)


def test_an_argument_json_cannot_carry_fails_at_the_call_site_naming_it():
    with pytest.raises(EncodeError, match=r"argument 'y' of type object can't be serialized"):
        demo.add.delay(1, object())


@pytest.mark.django_db
def test_a_model_instance_argument_suggests_its_primary_key():
    user = User.objects.create(username="ada")
    with pytest.raises(TypeError, match=r"argument 'x' of type User .*Pass its primary key"):
        demo.add.delay(user, 1)


def test_delay_returns_a_handle_with_the_id_it_sent():
    with capture_jobs() as captured:
        handle = demo.add.delay(2, 3)
    assert isinstance(handle, JobResult)
    message = captured.messages[0]
    assert (message.id, message.name, message.args, message.kwargs) == (
        handle.id, "project.demo.jobs.add", (2, 3), {})


def test_apply_async_options_reach_the_message():
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    with capture_jobs() as captured:
        demo.add.apply_async((1, 2), eta=eta, expires=60, queue="low", priority=7,
                             headers={"tenant": "acme"}, task_id="fixed-id")
    message = captured.messages[0]
    assert message.eta == eta
    assert message.expires is not None and message.expires > datetime.now(UTC)
    assert (message.queue, message.priority, message.id) == ("low", 7, "fixed-id")
    assert captured.envelopes[0].headers["tenant"] == "acme"


def test_countdown_sets_an_eta_that_many_seconds_ahead():
    with capture_jobs() as captured:
        demo.add.apply_async((1, 2), countdown=30)
    ahead = captured.messages[0].eta - datetime.now(UTC)
    assert timedelta(seconds=29) < ahead <= timedelta(seconds=30)


def test_a_naive_eta_is_refused():
    with pytest.raises(ValueError, match="naive"):
        demo.add.apply_async((1, 2), eta=datetime(2030, 1, 1))


def test_an_unknown_apply_async_option_is_refused():
    with pytest.raises(TypeError, match="unknown option.*countdwn"):
        demo.add.apply_async((1, 2), countdwn=3)


def test_the_message_has_celery_protocol_v2_headers_and_body():
    with capture_jobs() as captured:
        handle = demo.add.delay(2, 3)
    envelope = captured.envelopes[0]
    assert envelope.content_type == "application/json"
    headers = envelope.headers
    assert headers["task"] == "project.demo.jobs.add"
    assert headers["id"] == handle.id
    assert headers["root_id"] == handle.id
    assert headers["lang"] == "py"
    assert headers["retries"] == 0
    assert headers["argsrepr"] == "(2, 3)"
    import json

    args, kwargs, embed = json.loads(envelope.payload)
    assert (args, kwargs) == ([2, 3], {})
    assert set(embed) == {"callbacks", "errbacks", "chain", "chord"}


def test_types_json_lacks_round_trip_with_kombus_json():
    import decimal

    from kombu.serialization import dumps, loads

    values = [datetime(2030, 1, 1, 12, tzinfo=UTC), decimal.Decimal("1.10"),
              uuid.UUID(int=7)]
    content_type, encoding, data = dumps([values, {}, {}], serializer="json")
    assert loads(data, content_type, encoding)[0] == values


@pytest.fixture
def sent(settings, monkeypatch):
    """Ids of messages as they are handed to a (memory) broker."""
    from jobs.broker import Broker

    settings.JOBS = {"BROKER_URL": "memory://"}
    ids = []
    monkeypatch.setattr(Broker, "_sender",
                        lambda self, envelope, *args: lambda: ids.append(envelope.message.id))
    return ids


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_job_is_sent_on_commit(sent):
    with transaction.atomic():
        handle = demo.add.delay(1, 1)
        assert sent == []
    assert sent == [handle.id]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_sends_nothing(sent):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            demo.add.delay(1, 1)
            raise RuntimeError("rolled back")
    assert sent == []


@pytest.mark.django_db(transaction=True)
def test_on_commit_false_sends_at_once(sent):
    with transaction.atomic():
        handle = demo.add.apply_async((1, 1), on_commit=False)
        assert sent == [handle.id]


def test_eager_mode_runs_the_job_at_delay(jobs_eager):
    result = demo.add.delay(2, 5)
    assert result.get() == 7
    assert result.successful()


def test_eager_mode_retries_in_place(jobs_eager):
    assert testjobs.flaky.delay(3).get() == 2


def test_eager_mode_keeps_errors_in_the_result_by_default(jobs_eager):
    result = demo.fail.delay("nope")
    assert result.failed()
    with pytest.raises(ValueError, match="nope"):
        result.get()


def test_eager_propagates_raises_at_the_call(settings):
    settings.JOBS = {"ALWAYS_EAGER": True, "EAGER_PROPAGATES": True}
    with pytest.raises(ValueError, match="nope"):
        demo.fail.delay("nope")


def test_apply_without_propagation_returns_the_failure():
    result = demo.fail.apply(("nope",), propagate=False)
    assert result.failed()
    assert isinstance(result.result, ValueError)
    assert "ValueError: nope" in result.traceback


def test_captured_jobs_can_be_run(jobs_captured):
    demo.add.delay(1, 2)
    demo.add.delay(3, 4)
    assert jobs_captured.names() == ["project.demo.jobs.add", "project.demo.jobs.add"]
    assert [r.get() for r in jobs_captured.run_all()] == [3, 7]


def test_bound_jobs_see_their_request():
    result = testjobs.whoami.apply(task_id="the-id")
    assert result.get()["id"] == "the-id"
    assert result.get()["retries"] == 0


def test_delay_many_enqueues_one_job_per_call_in_order():
    with capture_jobs() as captured:
        handles = demo.add.delay_many([(1, 2), (3, 4), ((5,), {"y": 6})])
    assert [(m.args, m.kwargs) for m in captured.messages] == [
        ((1, 2), {}), ((3, 4), {}), ((5,), {"y": 6})]
    assert [h.id for h in handles] == [m.id for m in captured.messages]
    assert len({h.id for h in handles}) == 3


def test_delay_many_checks_every_call_before_sending_any():
    with capture_jobs() as captured:
        with pytest.raises(TypeError, match="missing a required argument"):
            demo.add.delay_many([(1, 2), (3,)])
    assert len(captured) == 0


def test_arguments_larger_than_the_message_size_limit_fail_at_the_call(settings):
    from jobs.exceptions import MessageTooLarge

    settings.JOBS = {"TASK_MAX_MESSAGE_SIZE": 1000}
    with pytest.raises(MessageTooLarge, match="more than TASK_MAX_MESSAGE_SIZE"):
        demo.add.delay("x" * 2000, "y")
