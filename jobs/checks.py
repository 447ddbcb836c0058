"""System checks for the JOBS setting: ``manage.py check`` explains a bad value."""

from __future__ import annotations

import math
from datetime import timedelta

from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from jobs.conf import ALIASES, DEFAULTS, settings

KNOWN_SCHEMES = ("django", "redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp", "memory")
POOLS = ("prefork", "threads", "solo", "asyncio", "gevent")


def _error(msg: str, hint: str, id: str) -> Error:
    return Error(msg, hint=hint, obj="settings.JOBS", id=id)


@register(Tags.compatibility)
def check_settings(app_configs=None, **kwargs):
    user = settings.user_settings
    if not isinstance(user, dict):
        return [_error("JOBS must be a dict.", "Write JOBS = {'BROKER_URL': ...}.", "jobs.E001")]
    errors = []
    for key in user:
        if key not in DEFAULTS and key not in ALIASES:
            close = [k for k in DEFAULTS if key.replace("CELERY_", "") == k]
            hint = f"Did you mean {close[0]!r}?" if close else "Known keys: " + ", ".join(DEFAULTS)
            errors.append(_error(f"JOBS has an unknown key {key!r}.", hint, "jobs.E002"))
    errors += _check_broker(settings.BROKER_URL)
    errors += _check_serializers()
    errors += _check_routes(settings.TASK_ROUTES)
    errors += _check_numbers()
    errors += _check_priorities()
    errors += _check_compression()
    errors += _check_expiry("DEAD_LETTER_EXPIRES", "jobs.E040")
    errors += _check_signing_keys(settings.SIGNING_KEYS)
    errors += _check_middleware(settings.MIDDLEWARE)
    errors += _check_global_rate_limits()
    return errors


def _check_global_rate_limits() -> list:
    from django.conf import settings as django_settings

    from jobs import rates
    from jobs.ratelimits import PER_PROCESS_CACHES

    limits, errors = settings.GLOBAL_RATE_LIMITS, []
    if not isinstance(limits, dict):
        return [_error("JOBS['GLOBAL_RATE_LIMITS'] must be a dict: job name -> rate.", "",
                       "jobs.E017")]
    from jobs.registry import registry

    for name, rate in limits.items():
        if rates.problem(rate):
            errors.append(_error(f"JOBS['GLOBAL_RATE_LIMITS'][{name!r}]: {rates.problem(rate)}.",
                                 "", "jobs.E017"))
        elif name not in registry:
            errors.append(Warning(
                f"JOBS['GLOBAL_RATE_LIMITS'] names {name!r}, which is no job known here.",
                hint="Write the job's full name (module.function, or its name=).",
                obj="settings.JOBS", id="jobs.W002"))
    alias = settings.GLOBAL_RATE_LIMIT_CACHE
    if alias is None:
        return errors
    cache = getattr(django_settings, "CACHES", {}).get(alias) if isinstance(alias, str) else None
    if cache is None:
        errors.append(_error(f"JOBS['GLOBAL_RATE_LIMIT_CACHE'] = {alias!r} is not in CACHES.",
                             "Name a cache of CACHES, or None for the database.", "jobs.E018"))
    elif cache.get("BACKEND") in PER_PROCESS_CACHES:
        errors.append(_error(
            f"JOBS['GLOBAL_RATE_LIMIT_CACHE']: the cache {alias!r} ({cache['BACKEND']}) lives in "
            "each process, so every worker would count alone.",
            "Use a cache every worker shares (django-redis, Redis, Memcached, the database "
            "cache), or None for the database.", "jobs.E018"))
    return errors


def _check_broker(url) -> list:
    if not isinstance(url, str) or "://" not in url:
        return [_error(
            f"JOBS['BROKER_URL'] = {url!r} is not a broker URL.",
            "Use 'django://' (the database), 'redis://host:6379/0' or 'amqp://user:pw@host//'.",
            "jobs.E003",
        )]
    from jobs.broker import Broker

    scheme = Broker.scheme_of(url)
    if scheme not in KNOWN_SCHEMES:
        return [_error(
            f"JOBS['BROKER_URL'] uses the unknown transport {scheme!r}.",
            "Known transports: " + ", ".join(sorted(KNOWN_SCHEMES)) + ".",
            "jobs.E004",
        )]
    return _check_transport(url) or [_error(problem, "", "jobs.E014")
                                     for problem in Broker.for_url(url).problems()]


def _check_transport(url: str) -> list:
    """Import the transport the URL names, as a worker or a publisher will. (This replaces
    jobs.E005, which only looked for the client package.)"""
    from jobs.transport import unavailable

    reason = unavailable(url)
    if reason:
        return [_error(reason, "Install it where this project and its workers run.", "jobs.E013")]
    return []


def _check_serializers() -> list:
    from jobs.compat.kombu import serializer_decodes, serializer_encodes

    errors = []
    name = settings.TASK_SERIALIZER
    if not serializer_encodes(name):
        errors.append(_error(
            f"JOBS['TASK_SERIALIZER'] = {name!r} is not a known serializer.",
            "Use 'json' (the default) or 'msgpack' (pip install 'jobs-for-django[msgpack]').",
            "jobs.E006",
        ))
    accept = settings.ACCEPT_CONTENT
    if not isinstance(accept, (list, tuple)) or not accept:
        errors.append(_error(
            "JOBS['ACCEPT_CONTENT'] must be a non-empty list of serializer names.",
            "For example ['json'].",
            "jobs.E007",
        ))
        return errors
    for item in accept:
        if not serializer_encodes(item) and not serializer_decodes(item):
            errors.append(_error(
                f"JOBS['ACCEPT_CONTENT'] lists {item!r}, which is not a known serializer.",
                "Use serializer names such as 'json' or 'msgpack'.",
                "jobs.E007",
            ))
    if serializer_encodes(name) and name not in accept:
        errors.append(_error(
            f"JOBS['TASK_SERIALIZER'] = {name!r} is not in ACCEPT_CONTENT, so workers would "
            "refuse every message this project sends.",
            f"Add {name!r} to JOBS['ACCEPT_CONTENT'].",
            "jobs.E008",
        ))
    if "pickle" in accept or "application/x-python-serialize" in accept:
        errors.append(Warning(
            "JOBS['ACCEPT_CONTENT'] accepts pickle: anyone who can write to the broker can "
            "run code in your workers.",
            hint="Use json unless every producer and the broker itself are fully trusted.",
            obj="settings.JOBS",
            id="jobs.W001",
        ))
    return errors


def _check_routes(routes) -> list:
    items = routes if isinstance(routes, (list, tuple)) else [routes]
    errors = []
    for item in items:
        if isinstance(item, str):
            try:
                import_string(item)
            except ImportError as exc:
                errors.append(_error(f"JOBS['TASK_ROUTES']: can't import router {item!r}: {exc}",
                                     "", "jobs.E009"))
            continue
        if callable(item):
            continue
        if not isinstance(item, dict):
            return [_error(
                "JOBS['TASK_ROUTES'] must be a dict of job name or glob pattern to queue (or a "
                "list of such dicts and routers).",
                "For example {'billing.jobs.*': 'billing'}.",
                "jobs.E009",
            )]
        for pattern, route in item.items():
            queue = route.get("queue") if isinstance(route, dict) else route
            if not isinstance(queue, str) or not queue:
                errors.append(_error(
                    f"JOBS['TASK_ROUTES'][{pattern!r}] = {route!r} names no queue.",
                    "Give a queue name, or {'queue': 'name'}.",
                    "jobs.E009",
                ))
    if errors:
        return errors
    return _check_queues()


def _check_queues() -> list:
    """TASK_QUEUES and the exchanges routes name: what the broker can honour."""
    from kombu import Queue

    from jobs.broker import get_broker
    from jobs.broker.routing import EXCHANGE_TYPES, reaches

    queues = settings.TASK_QUEUES
    if queues is not None and (not isinstance(queues, (list, tuple))
                               or not all(isinstance(q, Queue) for q in queues)):
        return [_error("JOBS['TASK_QUEUES'] must be a list of kombu Queue objects.",
                       "For example [Queue('web', Exchange('tasks', 'topic'), "
                       "routing_key='web.#')].", "jobs.E016")]
    if settings.TASK_DEFAULT_EXCHANGE_TYPE not in EXCHANGE_TYPES:
        return [_error(f"JOBS['TASK_DEFAULT_EXCHANGE_TYPE'] = "
                       f"{settings.TASK_DEFAULT_EXCHANGE_TYPE!r} is not an exchange type.",
                       "Use " + ", ".join(EXCHANGE_TYPES) + ".", "jobs.E016")]
    broker = get_broker()
    routing = broker.routing
    errors = []
    for queue in routing.declared.values():
        kind = queue.exchange.type
        if kind not in EXCHANGE_TYPES:
            errors.append(_error(
                f"TASK_QUEUES: queue {queue.name!r} is bound to a {kind!r} exchange.",
                "Use " + ", ".join(EXCHANGE_TYPES) + ".", "jobs.E016"))
        elif kind == "fanout" and not broker.broadcasts:
            errors.append(_error(
                f"TASK_QUEUES: queue {queue.alias or queue.name!r} is bound to a fanout "
                f"exchange: broadcast (a job run once by every worker) needs a broker that "
                f"can, and {broker.display_url} can't: a job sent there would not run on "
                "every worker.",
                "Use Redis or RabbitMQ for broadcast queues, or bind it to a direct or topic "
                "exchange.", "jobs.E016"))
        elif kind == "fanout" and routing.default_queue == (queue.alias or queue.name):
            errors.append(_error(
                f"TASK_DEFAULT_QUEUE {routing.default_queue!r} is a broadcast queue: every "
                "job without a route would run on every worker.",
                "Name a queue bound to a direct or topic exchange as the default.", "jobs.E016"))
    if not routing.declared:
        return errors
    if routing.default_queue not in routing.declared:
        errors.append(_error(
            f"TASK_DEFAULT_QUEUE {routing.default_queue!r} is not declared in TASK_QUEUES.",
            "Declare it, or name a declared queue as the default.", "jobs.E016"))
    for pattern, route in routing.table:
        queue = routing.declared.get(route.queue)
        where = f"JOBS['TASK_ROUTES'][{pattern!r}]"
        if queue is None:
            errors.append(_error(f"{where} sends to queue {route.queue!r}, which TASK_QUEUES "
                                 "doesn't declare.", "Declare it in TASK_QUEUES.", "jobs.E016"))
            continue
        exchange = route.exchange or queue.exchange.name
        if exchange != queue.exchange.name:
            errors.append(_error(
                f"{where} sends through exchange {exchange!r}, but queue {route.queue!r} is "
                f"bound to {queue.exchange.name!r}.", "", "jobs.E016"))
        elif route.routing_key is not None and not reaches(queue, route.routing_key):
            errors.append(_error(
                f"{where}: routing key {route.routing_key!r} doesn't reach queue "
                f"{route.queue!r} (bound by {queue.routing_key!r} to {queue.exchange.type} "
                f"exchange {exchange!r}).", "", "jobs.E016"))
    return errors


def _check_numbers() -> list:
    errors = []
    positive = {
        "WORKER_HEARTBEAT_INTERVAL": (int, float),
        "WORKER_SHUTDOWN_TIMEOUT": (int, float),
        "WORKER_AUTOSCALE_KEEPALIVE": (int, float),
    }
    for key, kind in positive.items():
        value = getattr(settings, key)
        if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
            errors.append(_error(
                f"JOBS[{key!r}] = {value!r} must be a non-negative number.", "", "jobs.E010"
            ))
    multiplier = settings.WORKER_PREFETCH_MULTIPLIER
    if multiplier is not None and (isinstance(multiplier, bool) or not isinstance(multiplier, int)
                                   or multiplier < 0):
        errors.append(_error(
            f"JOBS['WORKER_PREFETCH_MULTIPLIER'] = {multiplier!r} must be a non-negative whole "
            "number, or None (4, wider while jobs are short).", "", "jobs.E010"))
    for key in ("TASK_TIME_LIMIT", "TASK_SOFT_TIME_LIMIT", "WORKER_CONCURRENCY",
                "WORKER_MAX_TASKS_PER_CHILD", "WORKER_MAX_MEMORY_PER_CHILD", "TASK_MAX_DELIVERIES",
                "TASK_MAX_MESSAGE_SIZE", "WORKER_WATCHDOG_TIMEOUT"):
        value = getattr(settings, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value <= 0):
            errors.append(_error(
                f"JOBS[{key!r}] = {value!r} must be a positive number or None.", "", "jobs.E010"
            ))
    limit = settings.BROKER_POOL_LIMIT
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        errors.append(_error(
            f"JOBS['BROKER_POOL_LIMIT'] = {limit!r} must be a number of connections kept open "
            "for publishing (0 or None: a new connection for each send).", "", "jobs.E010"
        ))
    if settings.WORKER_POOL not in POOLS:
        errors.append(_error(
            f"JOBS['WORKER_POOL'] = {settings.WORKER_POOL!r} is not a pool.",
            "Use one of: " + ", ".join(POOLS) + ".",
            "jobs.E011",
        ))
    errors += _check_expiry("RESULT_EXPIRES", "jobs.E010")
    queue = settings.TASK_DEFAULT_QUEUE
    if not isinstance(queue, str) or not queue:
        errors.append(_error("JOBS['TASK_DEFAULT_QUEUE'] must be a queue name.", "", "jobs.E012"))
    return errors


def _check_priorities() -> list:
    errors = []
    top = settings.TASK_QUEUE_MAX_PRIORITY
    if top is not None and (isinstance(top, bool) or not isinstance(top, int)
                            or not 1 <= top <= 255):
        errors.append(_error(
            f"JOBS['TASK_QUEUE_MAX_PRIORITY'] = {top!r} must be 1..255 or None.",
            "RabbitMQ declares queues with this x-max-priority; 10 is usual.", "jobs.E015"))
        return errors
    from jobs.broker import get_broker
    from jobs.registry import registry

    broker = get_broker()
    problem = broker.priority_problem(settings.TASK_DEFAULT_PRIORITY)
    if problem:
        errors.append(_error(f"JOBS['TASK_DEFAULT_PRIORITY']: {problem}", "", "jobs.E015"))
    for name in registry:
        problem = broker.priority_problem(registry.get(name).priority)
        if problem:
            errors.append(_error(f"@job {name}: {problem}", "", "jobs.E015"))
    return errors


def _check_expiry(key: str, id: str) -> list:
    """How long housekeeping keeps a kind of row (jobs.housekeeping)."""
    value = getattr(settings, key)
    if value is None or (isinstance(value, timedelta) and value >= timedelta(0)):
        return []
    if (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and value >= 0):
        return []
    return [_error(f"JOBS[{key!r}] = {value!r} must be a timedelta, a number of seconds, "
                   "or None.", "None (or 0) keeps the rows for ever.", id)]


def _check_compression() -> list:
    from jobs import compression

    errors = []
    name = settings.TASK_COMPRESSION
    if name is not None and not (isinstance(name, str) and compression.known(name)):
        errors.append(_error(
            f"JOBS['TASK_COMPRESSION'] = {name!r} is not an available compression.",
            "Use None or one of: " + ", ".join(compression.names()) + ".",
            "jobs.E020",
        ))
    threshold = settings.TASK_COMPRESSION_THRESHOLD
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        errors.append(_error(
            f"JOBS['TASK_COMPRESSION_THRESHOLD'] = {threshold!r} must be a number of bytes "
            "(0: compress every message).", "", "jobs.E010",
        ))
    return errors


#: Bytes below which an HMAC key is easy to guess.
MIN_KEY_BYTES = 32


def _check_signing_keys(keys) -> list:
    hint = ("Give a list of long random strings, e.g. [secrets.token_urlsafe(48)]; the first "
            "signs, any of them verifies.")
    if not isinstance(keys, (list, tuple)):
        return [_error("JOBS['SIGNING_KEYS'] must be a list of keys.", hint, "jobs.E021")]
    errors: list = []
    for index, key in enumerate(keys):
        if not isinstance(key, (str, bytes)) or not key:
            errors.append(_error(
                f"JOBS['SIGNING_KEYS'][{index}] is not a non-empty string or bytes.", hint,
                "jobs.E021"))
        elif len(key.encode() if isinstance(key, str) else key) < MIN_KEY_BYTES:
            errors.append(Warning(
                f"JOBS['SIGNING_KEYS'][{index}] is shorter than {MIN_KEY_BYTES} bytes: it "
                "can be guessed.", hint=hint, obj="settings.JOBS", id="jobs.W020"))
    if not errors and len(set(keys)) != len(keys):
        errors.append(_error("JOBS['SIGNING_KEYS'] lists the same key twice.", hint,
                             "jobs.E021"))
    return errors


def _check_middleware(paths) -> list:
    """Each entry of MIDDLEWARE imports and is a Middleware; leaving out the results
    middleware (no result is recorded then) is worth a warning."""
    from django.utils.module_loading import import_string

    from jobs.conf import DEFAULT_MIDDLEWARE
    from jobs.middleware import Middleware

    if paths is None:
        return []
    hint = "Write a list of dotted paths; the defaults are jobs.conf.DEFAULT_MIDDLEWARE."
    if not isinstance(paths, (list, tuple)) or not all(isinstance(p, str) for p in paths):
        return [_error(f"JOBS['MIDDLEWARE'] = {paths!r} is not a list of dotted paths.",
                       hint, "jobs.E030")]
    errors = []
    for path in paths:
        try:
            cls = import_string(path)
        except ImportError as exc:
            errors.append(_error(f"JOBS['MIDDLEWARE']: {path!r} can't be imported ({exc}).",
                                 hint, "jobs.E030"))
            continue
        if not (isinstance(cls, type) and issubclass(cls, Middleware)):
            errors.append(_error(f"JOBS['MIDDLEWARE']: {path!r} is not a subclass of "
                                 "jobs.middleware.Middleware.", hint, "jobs.E030"))
    results = next(p for p in DEFAULT_MIDDLEWARE if p.endswith(".Results"))
    if not errors and results not in paths:
        errors.append(Warning(
            f"JOBS['MIDDLEWARE'] leaves out {results!r}: no job's state or result is recorded.",
            hint="Keep it in the list unless no one reads results.", obj="settings.JOBS",
            id="jobs.W030"))
    canvas = next(p for p in DEFAULT_MIDDLEWARE if p.endswith(".Canvas"))
    if not errors and canvas not in paths:
        errors.append(Warning(
            f"JOBS['MIDDLEWARE'] leaves out {canvas!r}: links, chains and chords stop after "
            "their first job.",
            hint="Keep it in the list (before Results) unless no one sends workflows.",
            obj="settings.JOBS", id="jobs.W031"))
    return errors


@register(Tags.compatibility)
def check_task_backends(app_configs=None, **kwargs):
    """``TASKS`` entries of :class:`jobs.backends.JobsBackend` (their ``check()``), where
    Django doesn't check them itself: django-tasks on Django 5.2 not an installed app."""
    from django.conf import settings as django_settings

    tasks = getattr(django_settings, "TASKS", None)
    ours = [alias for alias, entry in (tasks.items() if isinstance(tasks, dict) else ())
            if isinstance(entry, dict) and entry.get("BACKEND") == "jobs.backends.JobsBackend"]
    if not ours:
        return []
    try:
        from jobs.compat import tasks as tasks_api
    except ImportError:
        return [Error("TASKS names jobs.backends.JobsBackend, but Django's Tasks API is not "
                      "installed.", hint="On Django 5.2: pip install 'jobs-for-django[tasks]'.",
                      obj="settings.TASKS", id="jobs.E052")]
    if tasks_api.backends_are_checked():
        return []
    return [message for alias in ours for message in tasks_api.task_backends[alias].check()]
