"""kombu transports that ship with jobs: ``django://`` (messages as rows in the database),
and ``jobs-redis``, kombu's Redis transport with an atomic claim (:mod:`jobs.transport.redis`),
which the Broker names for ``redis://`` and ``rediss://`` URLs."""

from jobs.compat.kombu import register_transport


def register() -> None:
    """Make the aliases ``django`` and ``jobs-redis`` resolve to our transports, in URLs and
    in ``Connection(url, transport=alias)``."""
    register_transport("django", "jobs.transport.django:Transport")
    register_transport("jobs-redis", "jobs.transport.redis:Transport")
