"""One exception tree for the whole package."""

from django.core.exceptions import ImproperlyConfigured


class JobsError(Exception):
    """Base of every error raised by jobs."""


class ConfigurationError(JobsError, ImproperlyConfigured):
    """A setting or a job's declaration is wrong."""


class TransportUnavailable(ConfigurationError):
    """The broker's transport can't be loaded: a package it imports is not installed."""


class NotRegistered(JobsError, KeyError):
    """No job of that name is known to this process."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "unregistered job"


class EncodeError(JobsError, TypeError):
    """The arguments of a call can't be serialized for the broker."""


class MessageTooLarge(EncodeError, ValueError):
    """The serialized arguments pass ``TASK_MAX_MESSAGE_SIZE``."""


class PublishError(JobsError):
    """The broker could not be reached within the retry policy."""


class InvalidMessage(JobsError):
    """A message that no worker can run; it is dead-lettered with this reason."""


class TimeoutError(JobsError, TimeoutError):  # noqa: A001 - Celery users catch this name
    """``JobResult.get(timeout=...)`` waited in vain."""


class JobRevoked(JobsError):
    """The job was revoked before it ran."""


class Retry(JobsError):
    """Raised by ``self.retry()`` so the worker schedules the job again."""

    def __init__(self, message: str = "", exc: BaseException | None = None, when=None):
        super().__init__(message)
        self.exc = exc
        self.when = when


class RemoteError(JobsError):
    """A job failed with an exception whose class can't be rebuilt in this process."""

    def __init__(self, exc_type: str, message: str):
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type


class MaxRetriesExceeded(JobsError):
    """``self.retry()`` was called after the last allowed retry."""


class SoftTimeLimitExceeded(JobsError):
    """Raised inside a job when its soft time limit passes, so it can clean up."""


class TimeLimitExceeded(JobsError):
    """The job passed its hard time limit and was killed."""


class WorkerLostError(JobsError):
    """The process running the job died (killed, out of memory, crashed)."""


class ChordError(JobsError):
    """A job of a chord's header failed (or was revoked), so the body can't run."""
