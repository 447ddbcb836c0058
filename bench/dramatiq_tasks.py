"""The Dramatiq broker and actors of the benchmark (``dramatiq bench.dramatiq_tasks``).

The broker is the bench's broker (Redis, or RabbitMQ when pika is installed); results, for the
round trip only, go to Redis through Dramatiq's Results middleware.
"""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit

import dramatiq
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from bench import marks

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/9")
QUEUE = os.environ.get("BENCH_DRAMATIQ_QUEUE", f"{PREFIX}-dramatiq")


def _broker() -> dramatiq.Broker:
    if BROKER_URL.startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker  # needs pika

        return RabbitmqBroker(url=pika_url(BROKER_URL))
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=BROKER_URL, namespace=f"{PREFIX}-dramatiq")


def pika_url(url: str) -> str:
    """kombu's ``amqp://host//`` names the virtual host ``/``; pika wants it quoted (``%2F``)."""
    parts = urlsplit(url)
    vhost = parts.path[1:] or "/"
    return parts._replace(path="/" + quote(vhost, safe="")).geturl()


backend = RedisBackend(url=marks.redis_url(), namespace=f"{PREFIX}-dramatiq-results",
                       use_namespace_prefix_keys=True)
broker = _broker()
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def noop():
    return None


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def noop_result():
    return None


@dramatiq.actor(queue_name=QUEUE)
def mark(key):
    marks.stamp(key)
