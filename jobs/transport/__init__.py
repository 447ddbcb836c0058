"""kombu transports that ship with jobs: ``django://``, messages as rows in the database."""

from kombu.transport import TRANSPORT_ALIASES


def register() -> None:
    """Make ``django://`` URLs resolve to :class:`jobs.transport.django.Transport`."""
    TRANSPORT_ALIASES.setdefault("django", "jobs.transport.django:Transport")
