"""Settings of the development, demo and test project.

One project runs on every database and broker: ``DATABASE_URL`` (``sqlite:///path`` or
``postgres://user@host:port/name``) and ``JOBS_BROKER_URL`` (``django://``, ``redis://...``,
``amqp://...``) choose them; the defaults need no server at all.
"""

import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-development-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "jobs",
    "jobs_beat",
    "project.demo",
]

# The jobs the tests run (tests/jobs_app/), installed only for the tests: when JOBS_TEST_APP=1,
# which tests/conftest.py sets for the processes the tests start, and by default under pytest
# (it sets PYTEST_VERSION), whose Django plugin loads these settings before any conftest runs.
if os.environ.get("JOBS_TEST_APP", "1" if "PYTEST_VERSION" in os.environ else "0") == "1":
    INSTALLED_APPS.append("tests.jobs_app")

# Django's Tasks API runs on jobs (docs/django-tasks.md): built into Django 6, from the
# django-tasks package (an installed app, for its checks and signals) on Django 5.2, where
# it comes with `pip install 'jobs-for-django[tasks]'`; without it, TASKS is left unset.
try:
    import django.tasks  # noqa: F401

    TASKS_API = True
except ImportError:
    try:
        import django_tasks  # noqa: F401

        INSTALLED_APPS.append("django_tasks")
        TASKS_API = True
    except ImportError:
        TASKS_API = False
if TASKS_API:
    TASKS = {"default": {"BACKEND": "jobs.backends.JobsBackend", "QUEUES": []}}
if TASKS_API and "tests.jobs_app" in INSTALLED_APPS:  # backends the tests' tasks use
    TASKS["retrying"] = {"BACKEND": "jobs.backends.JobsBackend", "QUEUES": [], "OPTIONS": {
        "autoretry_for": ["builtins.ValueError"], "max_retries": 2, "default_retry_delay": 0}}
    TASKS["limited"] = {"BACKEND": "jobs.backends.JobsBackend", "QUEUES": [],
                        "OPTIONS": {"time_limit": 1}}

# A cache shared by processes, for the test of global rate limits kept in a cache (only then:
# django-redis loads redis-py, which loads OpenTelemetry where it is installed).
SHARED_TEST_CACHE = {"BACKEND": "django_redis.cache.RedisCache",
                     "LOCATION": os.environ.get("JOBS_TEST_CACHE_URL", "redis://127.0.0.1:6379/13")}
if os.environ.get("JOBS_TEST_SHARED_CACHE") == "1":
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              "shared": SHARED_TEST_CACHE}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"


def database_from_url(url: str) -> dict:
    """A DATABASES entry from ``sqlite:///path`` or ``postgres://user:pw@host:port/name``."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        name = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name or BASE_DIR / "db.sqlite3",
            # Several processes share the file: wait for locks, take the write lock up
            # front in transactions, and let readers run beside the writer.
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # Tests start worker processes, which must see the test database: keep it in a
            # file, one per test run.
            "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"jobs-test-{os.getpid()}.sqlite3")},
        }
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "postgres",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            # One test database per test run, so that two runs on one server never collide.
            "TEST": {"NAME": f"test_{unquote(parts.path.lstrip('/')) or 'postgres'}_{os.getpid()}"},
        }
    raise ValueError(f"DATABASE_URL: unsupported scheme {parts.scheme!r} in {url!r}")


DATABASES = {"default": database_from_url(os.environ.get("DATABASE_URL", "sqlite:///"))}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

LOGIN_URL = "admin:login"

JOBS = {
    "BROKER_URL": os.environ.get("JOBS_BROKER_URL", "django://"),
    # e.g. '{"visibility_timeout": 10}'
    "BROKER_TRANSPORT_OPTIONS": json.loads(os.environ.get("JOBS_BROKER_TRANSPORT_OPTIONS", "{}")),
    "WORKER_HEARTBEAT_INTERVAL": float(os.environ.get("JOBS_WORKER_HEARTBEAT_INTERVAL", "5")),
}
if os.environ.get("JOBS_SETTINGS"):  # more JOBS keys, e.g. '{"WORKER_WATCHDOG_TIMEOUT": 60}'
    JOBS.update(json.loads(os.environ["JOBS_SETTINGS"]))
if os.environ.get("JOBS_EXTRA_MIDDLEWARE"):  # '["dotted.Path"]': listed after the defaults
    from jobs.conf import DEFAULT_MIDDLEWARE

    JOBS["MIDDLEWARE"] = [*DEFAULT_MIDDLEWARE, *json.loads(os.environ["JOBS_EXTRA_MIDDLEWARE"])]
if os.environ.get("JOBS_SIGNING_KEYS"):  # e.g. '["a long random key"]': see docs/security.md
    JOBS["SIGNING_KEYS"] = json.loads(os.environ["JOBS_SIGNING_KEYS"])

# Periodic jobs declared in settings, synced into the database when `jobs_beat` starts;
# more can be added in the admin (Periodic jobs > Periodic tasks).
JOBS_BEAT_SCHEDULE = {
    "demo-add-every-30s": {
        "task": "project.demo.jobs.add",
        "schedule": timedelta(seconds=30),
        "args": (16, 16),
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"jobs": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
