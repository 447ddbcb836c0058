"""kombu transports that ship with jobs: ``django://``, messages as rows in the database."""

from jobs.compat.kombu import register_transport


def register() -> None:
    """Make ``django://`` URLs resolve to :class:`jobs.transport.django.Transport`."""
    register_transport("django", "jobs.transport.django:Transport")
