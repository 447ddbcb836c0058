"""``manage.py check`` explains a bad JOBS setting."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from jobs.checks import check_settings


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
    assert ids({"WORKER_POOL": "gevent"}, settings) == ["jobs.E011"]


def test_a_negative_prefetch_multiplier_is_an_error(settings):
    assert ids({"WORKER_PREFETCH_MULTIPLIER": -1}, settings) == ["jobs.E010"]


def test_manage_py_check_fails_on_a_bad_setting(settings):
    settings.JOBS = {"BROKER_URL": "kafka://localhost"}
    with pytest.raises(SystemCheckError, match="unknown transport 'kafka'"):
        call_command("check")
