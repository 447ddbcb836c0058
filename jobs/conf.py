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
    "TASK_DEFAULT_PRIORITY": None,  # a job's priority unless it or the call names one
    "TASK_QUEUE_MAX_PRIORITY": None,  # RabbitMQ: x-max-priority of the queues (None: none)
    "TASK_ROUTES": {},
    "TASK_QUEUES": None,
    "TASK_DEFAULT_EXCHANGE": None,
    "TASK_DEFAULT_EXCHANGE_TYPE": "direct",
    "TASK_DEFAULT_ROUTING_KEY": None,
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
    "WORKER_PREFETCH_MULTIPLIER": None,  # 4, wider while jobs are short
    "WORKER_HEARTBEAT_INTERVAL": 5.0,
    "WORKER_SHUTDOWN_TIMEOUT": 30.0,
    "WORKER_MAX_TASKS_PER_CHILD": None,
    "WORKER_MAX_MEMORY_PER_CHILD": None,  # KiB of resident memory, as Celery counts
    "TASK_MAX_DELIVERIES": 5,
    "GLOBAL_RATE_LIMITS": {},  # job name -> its rate for the whole cluster
    "GLOBAL_RATE_LIMIT_CACHE": None,  # a CACHES alias for global rate limits (None: the database)
    "WORKER_AUTOSCALE_KEEPALIVE": 30.0,  # seconds a pool slot stays idle before --autoscale lets it go
    "WORKER_WATCHDOG_TIMEOUT": 120.0,  # seconds the main loop may stall before the worker exits; None: never
    # Results, and what housekeeping deletes (jobs.housekeeping); None or 0: kept
    "RESULT_EXPIRES": timedelta(days=1),
    "DEAD_LETTER_EXPIRES": timedelta(days=30),
    # Extension points
    "MIDDLEWARE": None,  # None: DEFAULT_MIDDLEWARE
}

#: What each key of :data:`DEFAULTS` means, in Markdown: the documentation's settings
#: reference is generated from this and the defaults (docs/hooks.py), so a key is described
#: here, next to its default, and nowhere else. Every key needs one (tests/test_docs.py).
DESCRIPTIONS: dict[str, str] = {
    "BROKER_URL": (
        "Where messages travel: `django://` (rows in the project's database), "
        "`redis://host:6379/0` or `amqp://user:password@host:5672//`. See [Brokers](brokers.md)."),
    "BROKER_TRANSPORT_OPTIONS": (
        "kombu transport options, over the ones this project sets for each broker, e.g. "
        "`{\"visibility_timeout\": 120}` (Redis: 60 s here, not kombu's hour; `django://`: 30 s)."),
    "BROKER_POOL_LIMIT": "Idle publishing connections kept per process; `0`: one connection per send.",
    "BROKER_CONNECTION_TIMEOUT": "Seconds to wait for a connection to the broker.",
    "TASK_DEFAULT_QUEUE": (
        "The queue of a job that names none and matches no route (Celery's is `\"celery\"`)."),
    "TASK_DEFAULT_PRIORITY": (
        "The priority of a job that names none (`None`: none, which ranks lowest). The highest "
        "runs first on every broker. See [Queues and priorities](routing.md)."),
    "TASK_QUEUE_MAX_PRIORITY": (
        "RabbitMQ: queues are declared with this `x-max-priority` (10 is usual); `None`, as "
        "Celery's default, declares them without, and a priority is refused there."),
    "TASK_QUEUES": (
        "kombu `Queue` objects, each with its exchange (direct, topic or fanout) and routing "
        "key, as Celery's `task_queues`; `None`: each queue is bound to a direct exchange of "
        "its own name. A queue declared without an exchange gets the default one. See "
        "[Queues and priorities](routing.md)."),
    "TASK_DEFAULT_EXCHANGE": (
        "The exchange of declared queues that name none (`None`: the default queue's name)."),
    "TASK_DEFAULT_EXCHANGE_TYPE": "The type of the default exchange: `\"direct\"` or `\"topic\"`.",
    "TASK_DEFAULT_ROUTING_KEY": (
        "The routing key of a job sent to the default queue by no route (`None`: the queue's "
        "own routing key)."),
    "TASK_ROUTES": (
        "Job name or glob pattern → queue name, or options: `{\"queue\": ..., \"exchange\": "
        "..., \"routing_key\": ..., \"priority\": ...}`, e.g. `{\"billing.jobs.*\": "
        "\"billing\"}`. The first matching pattern wins. Also a list of such dicts and "
        "routers (callables or their dotted paths, called as Celery calls them: `(name, "
        "args, kwargs, options, task=None)`, returning a queue name, options or `None`)."),
    "TASK_SERIALIZER": "How arguments are serialized: `\"json\"`, `\"msgpack\"` or `\"yaml\"`.",
    "TASK_COMPRESSION": (
        "`\"zlib\"`, `\"bzip2\"` or `\"lzma\"` to compress message bodies (per job: "
        "`compression=`); `None` sends them as they are."),
    "ACCEPT_CONTENT": (
        "Content types a worker accepts; a message of another type is dead-lettered. Must "
        "include `TASK_SERIALIZER`. Pickle is accepted only with a warning (`jobs.W001`)."),
    "TASK_MAX_MESSAGE_SIZE": (
        "Bytes of serialized arguments (4 MiB); larger is an error at the call, and a larger "
        "message reaching a worker is dead-lettered. `None`: no limit."),
    "TASK_COMPRESSION_THRESHOLD": "Bodies smaller than this many bytes are sent uncompressed.",
    "SIGNING_KEYS": (
        "HMAC keys: the first signs every message sent, any of them verifies; workers then "
        "refuse unsigned or altered messages. See [Security](security.md)."),
    "TASK_PUBLISH_RETRY": "Retry a send that fails on a connection error.",
    "TASK_PUBLISH_RETRY_POLICY": (
        "How a failed send is retried (kombu's retry policy: 3 retries within about a "
        "second); then the call raises `PublishError`."),
    "TASK_ENQUEUE_ON_COMMIT": (
        "Inside `transaction.atomic()`, send a job when the transaction commits, so a worker "
        "never sees a job for rows that were rolled back (per call: `on_commit=`)."),
    "ALWAYS_EAGER": "Run jobs inline at `.delay()`, in the caller's process (for tests).",
    "EAGER_PROPAGATES": "With `ALWAYS_EAGER`, raise a job's exception at the call.",
    "ACKS_LATE": (
        "Acknowledge a message after its outcome is recorded: at-least-once (Celery's "
        "default is `False`). Per job: `acks_late=`."),
    "GLOBAL_RATE_LIMITS": (
        "Job name → rate for the whole cluster (`{\"myapp.jobs.send_sms\": \"100/m\"}`), as "
        "`@job(global_rate_limit=...)` gives it; the option wins. See "
        "[Rate limits](operations.md#rate-limits)."),
    "GLOBAL_RATE_LIMIT_CACHE": (
        "A cache of `CACHES` that keeps the turns of global rate limits, shared by every worker "
        "(django-redis, Redis, Memcached or the database cache; not the per-process local-memory "
        "cache). `None`: a row per job in the database."),
    "TASK_REJECT_ON_WORKER_LOST": (
        "Deliver again a job whose process died; `False` records it FAILURE with "
        "`WorkerLostError`."),
    "TASK_TIME_LIMIT": (
        "Seconds after which a job's prefork child is killed and `TimeLimitExceeded` "
        "recorded; `None`: no limit. The threads pool does not enforce it."),
    "TASK_SOFT_TIME_LIMIT": (
        "Seconds after which `SoftTimeLimitExceeded` is raised in the job; `None`: no limit."),
    "TASK_TRACK_STARTED": (
        "Record STARTED when a job starts. The same write counts deliveries "
        "(`TASK_MAX_DELIVERIES`) and refuses a job revoked a moment before. Off: one write "
        "per job, when it is done; revocations reach the worker within a second."),
    "TASK_IGNORE_RESULT": "Record no result for jobs (per job: `ignore_result=`).",
    "TASK_DEFAULT_MAX_RETRIES": "Retries of a job that names no `max_retries`.",
    "TASK_DEFAULT_RETRY_DELAY": "Seconds before a retry of a job that names no `default_retry_delay`.",
    "WORKER_CONCURRENCY": "Jobs a worker runs at once (`-c`); `None`: the number of CPUs.",
    "WORKER_POOL": "`\"prefork\"` (a process per slot), `\"threads\"` or `\"solo\"` (`-P`).",
    "WORKER_PREFETCH_MULTIPLIER": (
        "Messages reserved per slot; `1` is fairest when jobs are long. `None`: 4, as Celery's, "
        "widened up to 16 while the worker's jobs are short (see "
        "[Prefetch](worker.md#prefetch-and-long-jobs-holding-short-ones-hostage)); a number is "
        "kept as it is. Celery's `PREFETCH_MULTIPLIER` is accepted as an alias."),
    "WORKER_HEARTBEAT_INTERVAL": (
        "Seconds between a worker's heartbeats (its row in the admin); a worker unseen for "
        "three intervals (at least 30 s) is offline."),
    "WORKER_SHUTDOWN_TIMEOUT": "Seconds a warm shutdown waits for running jobs.",
    "WORKER_MAX_TASKS_PER_CHILD": "Jobs a prefork child runs before it is replaced; `None`: no limit.",
    "WORKER_AUTOSCALE_KEEPALIVE": (
        "Seconds a pool slot stays idle before `--autoscale` lets it go."),
    "WORKER_WATCHDOG_TIMEOUT": (
        "Seconds the worker's main loop may make no progress before the worker exits (code "
        "70) so its supervisor restarts it; `None`: never. See [Deployment](deployment.md)."),
    "WORKER_MAX_MEMORY_PER_CHILD": (
        "KiB of resident memory after which a prefork child is replaced; `None`: no limit."),
    "TASK_MAX_DELIVERIES": (
        "Starts of one attempt after which a job that never finishes (it kills the process "
        "that runs it) is dead-lettered as poison."),
    "RESULT_EXPIRES": (
        "Finished results (SUCCESS, FAILURE, REVOKED) done longer ago are deleted by the "
        "running workers and schedulers, about once a minute; a timedelta or seconds; `None` "
        "or `0` keeps them. See [Housekeeping](worker.md#housekeeping)."),
    "DEAD_LETTER_EXPIRES": "Dead letters older than this are deleted the same way; `None` or `0` keeps them.",
    "MIDDLEWARE": (
        "Dotted paths of the middleware classes, in order: every feature beyond delivering a "
        "message is one. `None` means the defaults below; to add your own, write the whole "
        "list ([how](architecture.md#writing-a-middleware))."),
}

#: What ``JOBS["MIDDLEWARE"]`` holds unless set: every feature beyond the bare delivery of a
#: message. Order matters, as in Django's MIDDLEWARE: ``execute`` hooks wrap the ones listed
#: after them, and ``receive`` hooks run in this order. Write the whole list to change it.
DEFAULT_MIDDLEWARE = [
    "jobs.middleware.signing.Signing",  # refuse forged messages, first; sign what is sent
    "jobs.middleware.hooks.Hooks",  # a task class's before_start, on_success, ... (Celery's)
    "jobs.middleware.signals.Signals",
    "jobs.middleware.tasks.TaskSignals",  # Django's task_* signals for Django tasks
    "jobs.middleware.logging.Logging",
    "jobs.middleware.unique.Unique",
    "jobs.middleware.delay.DelayedJobs",
    "jobs.middleware.expiry.Expiry",
    "jobs.middleware.revocation.Revocation",
    "jobs.middleware.broadcast.Broadcast",  # after Revocation: it sees the broadcast's own id
    "jobs.middleware.redelivery.Redeliveries",  # after Broadcast: a copy's run id is set
    "jobs.middleware.acks.EarlyAcks",
    "jobs.middleware.canvas.Canvas",  # wraps Results: follows a workflow once it's recorded
    "jobs.middleware.results.Results",
    "jobs.middleware.poison.PoisonJobs",
    "jobs.middleware.retries.Retries",
    "jobs.middleware.time_limits.TimeLimits",  # its soft limit covers the job's code only
    "jobs.middleware.rate_limits.RateLimits",  # holds deliveries last, time limit set
    "jobs.middleware.rate_limits.GlobalRateLimits",  # after the worker's own: turns not wasted
    "jobs.middleware.housekeeping.Housekeeping",
    "jobs.middleware.autoscale.Autoscale",  # jobs_worker --autoscale MAX,MIN
    "jobs.middleware.prefetch.AdaptivePrefetch",  # a wider window while jobs are short
    "jobs.middleware.control.Control",  # jobs_inspect, jobs_control: answer broadcast commands
    "jobs.middleware.watchdog.Watchdog",  # a stuck main loop exits; systemd's notify socket
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
