"""kombu transports that ship with jobs: ``django://`` (messages as rows in the database),
and ``jobs-redis``, kombu's Redis transport with an atomic claim (:mod:`jobs.transport.redis`),
which the Broker names for ``redis://`` and ``rediss://`` URLs (``jobs-sentinel``, the same
behind Redis Sentinel, for ``sentinel://``); ``jobs-amqp`` (``jobs-amqps`` over TLS), kombu's
py-amqp transport with buffered reads and batched acknowledgements
(:mod:`jobs.transport.amqp`), for ``amqp://``, ``pyamqp://`` and ``amqps://``.

Also what to tell a user whose broker's transport can't be loaded in this process (a package
it imports is not installed): :func:`unavailable`.
"""

from __future__ import annotations

from importlib import import_module

from kombu.transport import resolve_transport

from jobs.compat.kombu import register_transport


def register() -> None:
    """Make the aliases ``django``, ``jobs-redis``, ``jobs-sentinel``, ``jobs-amqp`` and
    ``jobs-amqps`` resolve to our transports, in URLs and in ``Connection(url,
    transport=alias)``."""
    register_transport("django", "jobs.transport.django:Transport")
    register_transport("jobs-redis", "jobs.transport.redis:Transport")
    register_transport("jobs-sentinel", "jobs.transport.redis:SentinelTransport")
    register_transport("jobs-amqp", "jobs.transport.amqp:Transport")
    register_transport("jobs-amqps", "jobs.transport.amqp:SSLTransport")


#: Per URL scheme: the broker's name in messages, and the extra that installs its transport's
#: packages (None: the base install has them).
BROKERS = {
    "redis": ("Redis broker", "redis"),
    "rediss": ("Redis broker", "redis"),
    "sentinel": ("Redis broker", "redis"),
    "amqp": ("RabbitMQ broker", "amqp"),
    "amqps": ("RabbitMQ broker", "amqp"),
    "pyamqp": ("RabbitMQ broker", "amqp"),
    "django": ("database broker", None),
}
#: Transports of ours that replace kombu's for a scheme (the Broker connects with them).
REPLACEMENTS = {"redis": "jobs-redis", "rediss": "jobs-redis", "sentinel": "jobs-sentinel",
                "amqp": "jobs-amqp", "pyamqp": "jobs-amqp", "amqps": "jobs-amqps"}
#: Client libraries that kombu's transport module imports only if they are there: without them
#: the module loads, and fails later, when it connects.
CLIENTS = {"redis": "redis", "rediss": "redis", "sentinel": "redis"}


def unavailable(url: str) -> str | None:
    """Why the transport for the broker ``url`` can't be loaded in this process, in one line
    naming the missing package and the extra that installs it; None if it loads."""
    if not isinstance(url, str):
        return None  # not a URL: the system checks say so (jobs.E003)
    scheme = url.partition("://")[0]
    register()
    try:
        if scheme in CLIENTS:
            import_module(CLIENTS[scheme])
        resolve_transport(REPLACEMENTS.get(scheme, scheme))
    except KeyError:
        return None  # not a transport at all: the system checks say so (jobs.E004)
    except ImportError as exc:
        return _explain(scheme, exc)
    return None


def _explain(scheme: str, exc: ImportError) -> str:
    broker, extra = BROKERS.get(scheme, (f"{scheme!r} broker", None))
    missing = (exc.name or "").partition(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
    if extra:
        install = f": pip install 'jobs-for-django[{extra}]'"
    else:
        install = f": pip install {missing}" if missing else ""
    if missing:
        return f"the {broker} needs the {missing!r} package{install}"
    # Installed but not importable as the transport needs it (too old, say), or kombu's own
    # "Missing redis library": the extra installs the versions that fit.
    return f"the {broker} can't load its transport ({exc}){install}"
