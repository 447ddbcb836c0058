"""Routing as Celery configures it: queues bound to exchanges (TASK_QUEUES), routes with an
exchange and a routing key, the default exchange and routing key; checked by manage.py check
where a broker can't honour them."""

from __future__ import annotations

import uuid

import pytest
from django.core.checks import run_checks
from kombu import Exchange, Queue

from jobs.broker import get_broker
from jobs.broker.routing import Route, topic_matches
from jobs.models import JobRecord
from jobs.testing import capture_jobs, running_worker
from project.demo import jobs as demo
from tests.conftest import broker_params
from tests.jobs_app import jobs as testjobs

ADD = "project.demo.jobs.add"


def seed_001(tag: str = "") -> dict:
    """A topic exchange ``tasks``, queues ``default`` on ``task.#`` and ``web_tasks`` on
    ``web.#``, and ``add`` routed with ``routing_key='web.add'`` (names suffixed by ``tag``)."""
    return {
        "TASK_QUEUES": (
            Queue(f"default{tag}", routing_key="task.#"),
            Queue(f"web_tasks{tag}", routing_key="web.#"),
        ),
        "TASK_DEFAULT_QUEUE": f"default{tag}",
        "TASK_DEFAULT_EXCHANGE": f"tasks{tag}",
        "TASK_DEFAULT_EXCHANGE_TYPE": "topic",
        "TASK_DEFAULT_ROUTING_KEY": "task.default",
        "TASK_ROUTES": {ADD: {"queue": f"web_tasks{tag}", "routing_key": "web.add"}},
    }


def seed_004(name: str = "game_community_default") -> dict:
    """One exchange and one queue per project."""
    return {"TASK_QUEUES": (Queue(name, Exchange(name), routing_key=name),),
            "TASK_DEFAULT_QUEUE": name}


def test_a_route_with_a_routing_key_goes_through_the_default_exchange(settings):
    settings.JOBS = {**settings.JOBS, **seed_001()}
    routing = get_broker().routing

    assert routing.resolve(ADD) == Route("web_tasks", "tasks", "web.add")
    assert routing.resolve("any.other.job") == Route("default", "tasks", "task.default")
    assert routing.resolve("any.other.job", "web_tasks") == Route("web_tasks")  # its own queue=
    assert routing.queue("default").exchange == Exchange("tasks", "topic")


def test_without_exchanges_every_job_goes_straight_to_its_queue(settings):
    settings.JOBS = {**settings.JOBS, "TASK_ROUTES": {"billing.*": "billing"}, **seed_004("shop")}
    settings.JOBS = {**settings.JOBS, "TASK_QUEUES": (
        Queue("shop", Exchange("shop"), routing_key="shop"),
        Queue("billing", Exchange("billing"), routing_key="billing"))}
    routing = get_broker().routing

    assert not routing.by_exchange
    assert routing.resolve("billing.invoice") == Route("billing")
    assert routing.resolve("shop.jobs.refresh") == Route("shop")


def test_routes_may_be_a_list_of_tables_and_routers(settings):
    settings.JOBS = {**settings.JOBS, "TASK_ROUTES": [
        "tests.jobs_app.routing.by_first_argument", {"project.demo.*": "demo"}]}
    with capture_jobs() as captured:
        demo.add.delay("urgent", "x")
        demo.add.delay("later", "x")
    assert [m.queue for m in captured.messages] == ["urgent", "demo"]


def test_a_routes_priority_applies_when_the_job_and_the_call_name_none(settings):
    settings.JOBS = {**settings.JOBS, "TASK_ROUTES": {ADD: {"queue": "fast", "priority": 7}}}
    with capture_jobs() as captured:
        demo.add.delay(1, 1)
        demo.add.apply_async((1, 1), priority=2)
    assert [(m.queue, m.priority) for m in captured.messages] == [("fast", 7), ("fast", 2)]


@pytest.mark.parametrize("pattern, key, matches", [
    ("task.#", "task.default", True), ("task.#", "task", True), ("task.#", "web.add", False),
    ("web.*", "web.add", True), ("web.*", "web.add.more", False), ("#", "anything.at.all", True),
    ("*.add", "web.add", True), ("#.add", "add", True), ("web.add", "web.add", True),
])
def test_topic_patterns_match_as_rabbitmq_matches_them(pattern, key, matches):
    assert topic_matches(pattern, key) is matches


@pytest.mark.parametrize("extra, message", [
    ({"TASK_ROUTES": {ADD: "nowhere"}},
     "sends to queue 'nowhere', which TASK_QUEUES doesn't declare."),
    ({"TASK_ROUTES": {ADD: {"queue": "web_tasks", "routing_key": "task.add"}}},
     "routing key 'task.add' doesn't reach queue 'web_tasks'"),
    ({"TASK_DEFAULT_QUEUE": "celery"}, "TASK_DEFAULT_QUEUE 'celery' is not declared"),
    ({"TASK_QUEUES": (Queue("b", Exchange("b", "headers")),), "TASK_DEFAULT_QUEUE": "b"},
     "bound to a 'headers' exchange"),
    ({"TASK_QUEUES": (Queue("b", Exchange("b", "fanout")),), "TASK_DEFAULT_QUEUE": "b"},
     "bound to a fanout exchange: broadcast"),
    ({"TASK_QUEUES": ["default"]}, "must be a list of kombu Queue objects"),
    ({"TASK_DEFAULT_EXCHANGE_TYPE": "topical"}, "is not an exchange type"),
    ({"TASK_ROUTES": ["no.such.router"]}, "can't import router 'no.such.router'"),
])
def test_routing_a_broker_cant_honour_fails_the_check(settings, extra, message):
    settings.JOBS = {**settings.JOBS, **seed_001(), **extra}
    found = [m.msg for m in run_checks() if m.id in ("jobs.E016", "jobs.E009")]
    assert any(message in text for text in found), found


def test_the_seed_configurations_pass_the_check(settings):
    base = settings.JOBS
    for config in (seed_001(), seed_004()):
        settings.JOBS = {**base, **config}
        assert [m for m in run_checks() if m.id.startswith("jobs.E01")] == []


@pytest.mark.parametrize("broker_url", broker_params(), indirect=True)
def test_celerys_topic_exchange_settings_route_jobs_to_their_queues(broker_url, settings):
    tag = f"-{uuid.uuid4().hex[:6]}"
    settings.JOBS = {**settings.JOBS, **seed_001(tag)}
    with running_worker(queues=[f"web_tasks{tag}"]):
        added = demo.add.delay(2, 3)  # through exchange tasks, key web.add
        other = testjobs.add_untracked.delay(1, 1)  # through exchange tasks, key task.default
        assert added.get(timeout=30) == 5
    assert other.state == "PENDING"  # waiting in default, which that worker doesn't consume
    with running_worker(queues=[f"default{tag}"]):
        assert other.get(timeout=30) == 2
    assert JobRecord.objects.get(job_id=added.id).queue == f"web_tasks{tag}"


@pytest.mark.parametrize("broker_url", broker_params(), indirect=True)
def test_one_exchange_and_queue_per_project(broker_url, settings):
    name = f"game_community_default-{uuid.uuid4().hex[:6]}"
    settings.JOBS = {**settings.JOBS, **seed_004(name)}
    with running_worker(queues=[name]):
        assert demo.add.delay(20, 22).get(timeout=30) == 42
