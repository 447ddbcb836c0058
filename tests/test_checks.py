"""``manage.py check`` explains a bad JOBS setting."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from jobs.checks import check_settings
from jobs.exceptions import TransportUnavailable
from project.demo.jobs import add
from tests.conftest import ROOT


def ids(settings_value, settings):
    settings.JOBS = settings_value
    return [e.id for e in check_settings()]


def test_the_defaults_pass(settings):
    assert ids({}, settings) == []


def test_an_unknown_key_is_an_error(settings):
    settings.JOBS = {"BROKER_ULR": "django://"}
    (error,) = check_settings()
    assert error.id == "jobs.E002"
    assert "BROKER_ULR" in error.msg


def test_an_unknown_transport_is_an_error(settings):
    assert ids({"BROKER_URL": "kafka://localhost"}, settings) == ["jobs.E004"]


def test_a_url_that_is_not_a_url_is_an_error(settings):
    assert ids({"BROKER_URL": "localhost"}, settings) == ["jobs.E003"]


def test_an_unknown_serializer_is_an_error(settings):
    assert "jobs.E006" in ids({"TASK_SERIALIZER": "jsn"}, settings)


def test_a_serializer_workers_would_refuse_is_an_error(settings):
    assert ids({"TASK_SERIALIZER": "msgpack"}, settings) == ["jobs.E008"]


def test_accepting_pickle_is_a_warning(settings):
    assert ids({"ACCEPT_CONTENT": ["json", "pickle"]}, settings) == ["jobs.W001"]


def test_a_route_without_a_queue_is_an_error(settings):
    assert ids({"TASK_ROUTES": {"billing.*": {"exchange": "x"}}}, settings) == ["jobs.E009"]


def test_a_bad_pool_is_an_error(settings):
    assert ids({"WORKER_POOL": "eventlet"}, settings) == ["jobs.E011"]


def test_a_negative_prefetch_multiplier_is_an_error(settings):
    assert ids({"WORKER_PREFETCH_MULTIPLIER": -1}, settings) == ["jobs.E010"]


def test_manage_py_check_fails_on_a_bad_setting(settings):
    settings.JOBS = {"BROKER_URL": "kafka://localhost"}
    with pytest.raises(SystemCheckError, match="unknown transport 'kafka'"):
        call_command("check")


# A broker whose transport can't be loaded (a package it imports is not installed) ------------

REDIS = "redis://127.0.0.1:6379/15"
NO_PACKAGING = "the Redis broker needs the 'packaging' package: pip install 'jobs-for-django[redis]'"
#: Modules that import a broker's client: forgotten while a package is hidden, so that they
#: are imported again, and fail, as in an environment without it.
IMPORTERS = ("kombu.transport.redis", "jobs.transport.redis", "kombu.transport.pyamqp",
             "jobs.transport.amqp", "jobs.compat.amqp")


@pytest.fixture
def uninstalled(monkeypatch):
    """``uninstalled("redis")``: ``import redis`` fails in this process until the test ends."""

    def hide(*packages: str) -> None:
        for name in packages:
            monkeypatch.setitem(sys.modules, name, None)
            for loaded in [m for m in sys.modules if m.startswith(f"{name}.")]:
                monkeypatch.setitem(sys.modules, loaded, None)  # imported by an earlier test
        for name in IMPORTERS:
            monkeypatch.delitem(sys.modules, name, raising=False)
            parent, _, child = name.rpartition(".")
            # ``from kombu.transport import redis`` would find the module loaded before.
            monkeypatch.delattr(sys.modules[parent], child, raising=False)

    return hide


def test_a_package_the_transport_needs_missing_is_an_error(settings, uninstalled):
    uninstalled("packaging")
    settings.JOBS = {"BROKER_URL": REDIS}
    (error,) = check_settings()
    assert (error.id, error.msg) == ("jobs.E013", NO_PACKAGING)


@pytest.mark.parametrize("url, message", [
    (REDIS, "the Redis broker needs the 'redis' package: pip install 'jobs-for-django[redis]'"),
    ("sentinel://127.0.0.1:26379",
     "the Redis broker needs the 'redis' package: pip install 'jobs-for-django[redis]'"),
])
def test_a_missing_redis_client_is_named(settings, uninstalled, url, message):
    uninstalled("redis")
    settings.JOBS = {"BROKER_URL": url}
    assert [(e.id, e.msg) for e in check_settings()] == [("jobs.E013", message)]


def test_a_missing_rabbitmq_client_is_named(settings, uninstalled):
    uninstalled("amqp")
    settings.JOBS = {"BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"}
    assert [(e.id, e.msg) for e in check_settings()] == [
        ("jobs.E013", "the RabbitMQ broker needs the 'amqp' package: pip install 'jobs-for-django[amqp]'")]


def test_the_database_broker_needs_no_extra(settings, uninstalled):
    uninstalled("redis", "amqp", "packaging")
    assert ids({"BROKER_URL": "django://"}, settings) == []


def test_manage_py_check_reports_the_missing_package(settings, uninstalled):
    uninstalled("packaging")
    settings.JOBS = {"BROKER_URL": REDIS}
    with pytest.raises(SystemCheckError, match=r"\(jobs.E013\) " + NO_PACKAGING.replace("[", r"\[")):
        call_command("check")


def test_sending_a_job_without_the_transport_is_a_configuration_error(settings, uninstalled):
    uninstalled("packaging")
    settings.JOBS = {"BROKER_URL": REDIS}
    with pytest.raises(TransportUnavailable) as raised:
        add.delay(2, 3)
    assert str(raised.value) == NO_PACKAGING
    assert isinstance(raised.value, ImproperlyConfigured)


def test_the_worker_says_in_one_line_which_package_is_missing():
    # As `manage.py jobs_worker` in an environment without 'packaging'.
    hidden = ("import sys; sys.modules['packaging'] = None; "
              "from django.core.management import execute_from_command_line; "
              "execute_from_command_line(['manage.py', 'jobs_worker'])")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "JOBS_BROKER_URL": REDIS}
    done = subprocess.run([sys.executable, "-c", hidden], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr, done.stdout) == (1, f"CommandError: {NO_PACKAGING}\n", "")


def test_the_worker_refuses_to_start_on_a_check_error_and_reports_it():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings",
           "JOBS_SETTINGS": '{"TASK_SERIALIZER": "nope"}'}
    done = subprocess.run([sys.executable, "manage.py", "jobs_worker", "-P", "solo"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 1
    assert done.stderr.startswith("SystemCheckError: System check identified some issues:")
    assert "(jobs.E006) JOBS['TASK_SERIALIZER'] = 'nope' is not a known serializer." \
        in done.stderr
    assert "Traceback" not in done.stderr
