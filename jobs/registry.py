"""Job names to Job objects, and autodiscovery of ``jobs.py`` / ``tasks.py`` in installed apps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.utils.module_loading import autodiscover_modules

from jobs.exceptions import ConfigurationError, NotRegistered

if TYPE_CHECKING:
    from jobs.job import Job

DISCOVERED_MODULES = ("jobs", "tasks")


class Registry:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def register(self, job: Job) -> None:
        existing = self._jobs.get(job.name)
        if existing is not None and existing.func is not job.func:
            if _same_definition(existing.func, job.func):
                # The same module imported again (e.g. under autoreload): keep the newest.
                self._jobs[job.name] = job
                return
            raise ConfigurationError(
                f"Two jobs are named {job.name!r}: {_where(existing.func)} and {_where(job.func)}. "
                "Pass name='...' to one of them."
            )
        self._jobs[job.name] = job

    def get(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            raise NotRegistered(
                f"unregistered job {name!r} — is the module imported by this worker?"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._jobs

    def __iter__(self):
        return iter(sorted(self._jobs))

    def __len__(self) -> int:
        return len(self._jobs)

    def names(self) -> list[str]:
        return sorted(self._jobs)

    def by_name(self, name: str) -> Job:
        """The job ``name``: the registered one, or a stand-in that can only be sent (its code
        is elsewhere: a scheduler deployed without it, a worker of another project), with
        default options and no argument check. Either way it goes out through the same
        enqueue path and middleware as a call of the job itself."""
        job = self._jobs.get(name)
        if job is None:
            from jobs.job import Job

            job = Job(_elsewhere, name=name, typing=False)
        return job


def _elsewhere(*args, **kwargs):
    raise NotRegistered("this job's code is not in this process; it can only be sent")


def _where(func) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _same_definition(a, b) -> bool:
    return _where(a) == _where(b)


registry = Registry()


def send_task(name: str, args=None, kwargs=None, **options):
    """Send a call of the job ``name`` whose code may live in another service; returns its
    :class:`jobs.JobResult`. The same options as ``apply_async``, through the same enqueue
    path and middleware. As Celery's ``send_task``, it always sends, even with ALWAYS_EAGER;
    a job registered here has its arguments checked."""
    sent = registry.by_name(name)
    return sent.publish(sent.prepare(args, kwargs, **options), **options)


def autodiscover() -> None:
    """Import ``<app>/jobs.py`` and ``<app>/tasks.py`` of every installed app."""
    for module in DISCOVERED_MODULES:
        autodiscover_modules(module)
