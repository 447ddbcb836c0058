"""The JOBS setting: defaults, typed access, reset when tests override settings.

``JOBS`` is one dict, like CACHES or STORAGES. Key names follow Celery's where the meaning is
the same, so ``CELERY_BROKER_URL`` becomes ``JOBS["BROKER_URL"]``. Validation lives in
:mod:`jobs.checks`, so ``manage.py check`` explains a bad value.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Broker
    "BROKER_URL": "django://",
    "BROKER_TRANSPORT_OPTIONS": {},
    "BROKER_POOL_LIMIT": 10,
    "BROKER_CONNECTION_TIMEOUT": 4.0,
    # Publishing
    "TASK_DEFAULT_QUEUE": "default",
    "TASK_ROUTES": {},
    "TASK_SERIALIZER": "json",
    "TASK_COMPRESSION": None,
    "ACCEPT_CONTENT": ["json"],
    "TASK_MAX_MESSAGE_SIZE": 4 * 1024 * 1024,  # bytes of serialized body; None: no limit
    "TASK_COMPRESSION_THRESHOLD": 1024,  # bytes; smaller bodies are sent uncompressed
    "SIGNING_KEYS": [],  # HMAC keys: the first signs, any verifies (jobs.security)
    "TASK_PUBLISH_RETRY": True,
    "TASK_PUBLISH_RETRY_POLICY": {
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 1.0,
    },
    "TASK_ENQUEUE_ON_COMMIT": True,
    "ALWAYS_EAGER": False,
    "EAGER_PROPAGATES": False,
    # Execution
    "ACKS_LATE": True,
    "TASK_REJECT_ON_WORKER_LOST": True,
    "TASK_TIME_LIMIT": None,
    "TASK_SOFT_TIME_LIMIT": None,
    "TASK_TRACK_STARTED": True,
    "TASK_IGNORE_RESULT": False,
    "TASK_DEFAULT_MAX_RETRIES": 3,
    "TASK_DEFAULT_RETRY_DELAY": 180,
    # Worker
    "WORKER_CONCURRENCY": None,
    "WORKER_POOL": "prefork",
    "WORKER_PREFETCH_MULTIPLIER": 4,
    "WORKER_HEARTBEAT_INTERVAL": 5.0,
    "WORKER_SHUTDOWN_TIMEOUT": 30.0,
    "WORKER_MAX_TASKS_PER_CHILD": None,
    "WORKER_MAX_MEMORY_PER_CHILD": None,  # KiB of resident memory, as Celery counts
    "TASK_MAX_DELIVERIES": 5,
    # Results, and what housekeeping deletes (jobs.housekeeping); None or 0: kept
    "RESULT_EXPIRES": timedelta(days=1),
    "DEAD_LETTER_EXPIRES": timedelta(days=30),
    # Extension points
    "MIDDLEWARE": None,  # None: DEFAULT_MIDDLEWARE
}

#: What ``JOBS["MIDDLEWARE"]`` holds unless set: every feature beyond the bare delivery of a
#: message. Order matters, as in Django's MIDDLEWARE: ``execute`` hooks wrap the ones listed
#: after them, and ``receive`` hooks run in this order. Write the whole list to change it.
DEFAULT_MIDDLEWARE = [
    "jobs.middleware.signing.Signing",  # refuse forged messages, first; sign what is sent
    "jobs.middleware.signals.Signals",
    "jobs.middleware.tasks.TaskSignals",  # Django's task_* signals for Django tasks
    "jobs.middleware.logging.Logging",
    "jobs.middleware.unique.Unique",
    "jobs.middleware.delay.DelayedJobs",
    "jobs.middleware.expiry.Expiry",
    "jobs.middleware.revocation.Revocation",
    "jobs.middleware.acks.EarlyAcks",
    "jobs.middleware.results.Results",
    "jobs.middleware.poison.PoisonJobs",
    "jobs.middleware.retries.Retries",
    "jobs.middleware.time_limits.TimeLimits",  # its soft limit covers the job's code only
    "jobs.middleware.rate_limits.RateLimits",  # holds deliveries last, time limit set
    "jobs.middleware.housekeeping.Housekeeping",
    "jobs.middleware.metrics.Metrics",  # last: counts outcomes as the others left them
]

# Celery spells this one without the TASK_/WORKER_ prefix; accept both.
ALIASES = {"PREFETCH_MULTIPLIER": "WORKER_PREFETCH_MULTIPLIER"}


class Settings:
    """Typed, cached read access to ``settings.JOBS`` merged over :data:`DEFAULTS`.

    A setting read once is kept as an attribute of this object, so that reading it again (a
    few times for every job sent) is a plain attribute lookup; ``reset()`` forgets them all.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(django_settings, "JOBS", None) or {}

    def _merged(self) -> dict[str, Any]:
        if self._cache is None:
            merged = dict(DEFAULTS)
            for key, value in self.user_settings.items():
                merged[ALIASES.get(key, key)] = value
            self._cache = merged
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            value = self._merged()[name]
        except KeyError:
            raise AttributeError(f"JOBS has no setting {name!r}") from None
        self.__dict__[name] = value
        return value

    def reset(self) -> None:
        self._cache = None
        for name in [n for n in self.__dict__ if not n.startswith("_")]:
            del self.__dict__[name]


settings = Settings()
_reset_hooks: list = []


def on_reset(func):
    """Register ``func`` to run when JOBS changes (tests overriding settings)."""
    _reset_hooks.append(func)
    return func


@receiver(setting_changed)
def _reload(*, setting, **kwargs):
    if setting == "JOBS":
        settings.reset()
        for hook in _reset_hooks:
            hook()
