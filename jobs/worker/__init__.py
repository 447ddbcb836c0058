"""The worker: consumer, pools, execution, shutdown."""

from jobs.worker.worker import Worker


def banner(worker: Worker) -> str:
    """The start-up summary a worker prints."""
    from django.conf import settings as django_settings

    from jobs import __name__ as package
    from jobs.broker import get_broker
    from jobs.registry import registry

    db = django_settings.DATABASES["default"]
    lines = [
        f" -------------- {worker.hostname} ({package} worker)",
        f" broker:       {get_broker().display_url}",
        f" database:     {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('NAME')}",
        f" queues:       {', '.join(worker.queues)}",
        f" pool:         {worker.pool_name} ({_size(worker)}, "
        f"prefetch {worker.prefetch or 'unlimited'})",
        f" jobs ({len(registry)}):",
    ]
    lines += [f"   . {name}" for name in registry.names()] or ["   (none registered)"]
    return "\n".join(lines) + "\n"


def _size(worker: Worker) -> str:
    if worker.autoscale:
        return f"autoscale {worker.autoscale[1]} to {worker.autoscale[0]}"
    return f"concurrency {worker.concurrency}"


__all__ = ["Worker", "banner"]
