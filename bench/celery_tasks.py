"""The Celery app and tasks of the benchmark.

``make_app(results)`` builds an app for one configuration: results ``off``, stored through
django-celery-results (``django-db``) in the bench database, or in Redis (``redis``). The
worker runs the module-level ``app``, configured from ``BENCH_CELERY_RESULTS``. Everything
else is Celery's default: prefork, prefetch multiplier 4, acks on receipt.
"""

from __future__ import annotations

import os

from celery import Celery

from bench import marks

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

RESULTS = ("off", "django-db", "redis")


def make_app(results: str) -> Celery:
    from bench import settings

    if results not in RESULTS:
        raise ValueError(f"results={results!r}; one of {', '.join(RESULTS)}")
    app = Celery(f"bench-{results}", set_as_current=False)
    app.conf.update(
        broker_url=settings.BROKER_URL,
        broker_transport_options=settings.broker_transport_options(),
        broker_connection_retry_on_startup=True,
        task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", f"{settings.PREFIX}-celery"),
        task_ignore_result=results == "off",
        result_backend={"off": None, "django-db": "django-db",
                        "redis": marks.redis_url()}[results],
        result_backend_transport_options={"global_keyprefix": f"{settings.PREFIX}:"},
    )

    @app.task(name="bench.noop", shared=False)
    def noop():
        return None

    @app.task(name="bench.count", shared=False)
    def count(values):
        return len(values)

    @app.task(name="bench.mark", ignore_result=True, shared=False)
    def mark(key):
        marks.stamp(key)

    return app


app = make_app(os.environ.get("BENCH_CELERY_RESULTS", "off"))
