"""Where a job is sent: ``TASK_QUEUES``, ``TASK_ROUTES`` and the default exchange, read as
Celery reads them.

By default every queue is bound to a direct exchange of its own name with its name as routing
key (Celery's ``task_create_missing_queues``), and a job is sent straight to its queue. With
``TASK_QUEUES`` (kombu ``Queue`` objects) a queue may be bound to any exchange — direct, topic
or fanout — with its own routing key, and a route may name an exchange and a routing key: the
message goes to that exchange with that key, and the broker's bindings decide the queue, so
Celery's routing settings work as written.

Resolved once per broker (rebuilt when JOBS changes), and per job name once: the enqueue path
pays a dictionary lookup, and nothing at all while no exchange is configured.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.utils.module_loading import import_string
from kombu import Exchange, Queue

from jobs.conf import settings

EXCHANGE_TYPES = ("direct", "topic", "fanout")


@dataclass(frozen=True, slots=True)
class Route:
    """What a route says about a job: its queue, and optionally an exchange, a routing key
    and a priority."""

    queue: str
    exchange: str | None = None
    routing_key: str | None = None
    priority: int | None = None


class Routing:
    def __init__(self, max_priority: int | None = None) -> None:
        self.default_queue = settings.TASK_DEFAULT_QUEUE
        self.default_exchange = Exchange(settings.TASK_DEFAULT_EXCHANGE or self.default_queue,
                                         settings.TASK_DEFAULT_EXCHANGE_TYPE or "direct")
        self.default_routing_key = settings.TASK_DEFAULT_ROUTING_KEY
        self.max_priority = max_priority
        #: Queue name -> the kombu Queue declared in TASK_QUEUES (Celery's defaults filled in).
        self.declared: dict[str, Queue] = {}
        for queue in settings.TASK_QUEUES or ():
            if not isinstance(queue, Queue):
                continue  # manage.py check says so (jobs.E016)
            if not queue.exchange or not queue.exchange.name:
                queue = _with(queue, exchange=self.default_exchange)
            if not queue.routing_key and queue.exchange.type != "fanout":
                queue = _with(queue, routing_key=queue.name)
            if queue.max_priority is None and max_priority:
                queue = _with(queue, max_priority=max_priority)
            # By its alias where it has one: a Broadcast queue's name is unique per process.
            self.declared[queue.alias or queue.name] = queue
        #: The declared queues bound to a fanout exchange: broadcast queues.
        self.broadcast = frozenset(name for name, queue in self.declared.items()
                                   if queue.exchange.type == "fanout")
        self.table, self.routers = _read_routes(settings.TASK_ROUTES)
        #: True when some job may go through an exchange rather than straight to its queue.
        self.by_exchange = bool(
            any(not _plain(q) for q in self.declared.values())
            or settings.TASK_DEFAULT_EXCHANGE or settings.TASK_DEFAULT_ROUTING_KEY
            or any(r.exchange or r.routing_key for _, r in self.table) or self.routers)
        self._resolved: dict[tuple[str, str | None], Route] = {}
        self._auto: dict[str, Queue] = {}
        self._own: dict[str, Queue] = {}  # broadcast queue name -> this process's own
        self._token = uuid.uuid4().hex[:12]

    # Queues ------------------------------------------------------------------------------

    def queue(self, name: str) -> Queue:
        """The kombu Queue of ``name``: the declared one, else one bound to a direct exchange
        of its own name, as Celery makes a missing queue."""
        queue = self.declared.get(name) or self._auto.get(name)
        if queue is None:
            if len(self._auto) >= 1024:
                self._auto.clear()
            queue = self._auto[name] = Queue(name, Exchange(name, "direct"), routing_key=name,
                                             max_priority=self.max_priority)
        return queue

    def queue_of(self, exchange: str | None, routing_key: str | None, queues: list[str]) -> str:
        """Which of ``queues`` a message sent to ``exchange`` with ``routing_key`` came from:
        the first one bound so that it reaches it (else the first)."""
        for name in queues:
            queue = self.queue(name)
            if queue.exchange.name == exchange and reaches(queue, routing_key or ""):
                return name
        return queues[0]

    def use_as_it_is(self, name: str) -> None:
        """Consume and send to queue ``name`` without declaring it (it exists, with other
        arguments than ours)."""
        queue = _with(self.queue(name), no_declare=True)
        (self.declared if name in self.declared else self._auto)[name] = queue

    def known_queues(self) -> set[str]:
        """The queues jobs are sent to by name: the default, the declared ones and the
        queues of routes."""
        return {self.default_queue, *self.declared, *(r.queue for _, r in self.table)}

    def bound_to(self, exchange: str) -> list[Queue]:
        """The declared queues bound to ``exchange`` (a publisher declares them with it, so
        that a broker keeping its bindings per process routes the message)."""
        return [q for q in self.declared.values() if q.exchange.name == exchange]

    def fanout(self, name: str) -> bool:
        """Whether queue ``name`` is bound to a fanout exchange (a broadcast queue: each
        worker has its own, declared by the worker, never by a publisher)."""
        return name in self.broadcast

    def own_queue(self, name: str, no_ack: bool = False) -> Queue:
        """The queue this process consumes broadcast queue ``name`` from: its own, bound to
        the queue's fanout exchange, under a name no other consumer has (as kombu's
        ``Broadcast`` names one per process), and deleted when its consumer goes, so that
        workers that come and go leave no queues behind. ``no_ack``: the broker hands it
        out without waiting for an acknowledgement (Redis's PUB/SUB)."""
        queue = self._own.get(name)
        if queue is None:
            queue = self._own[name] = _with(
                self.declared[name], name=f"{name}.{self._token}", auto_delete=True,
                no_ack=no_ack)
        return queue

    # Routes ------------------------------------------------------------------------------

    def resolve(self, job_name: str, job_queue: str | None = None, args=(), kwargs=None,
                options=None) -> Route:
        """Where a job goes, all said: its queue (the job's own ``queue=``, else a route's,
        else the default), the exchange and routing key to send it with (None: straight to
        the queue), and the route's priority."""
        key = (job_name, job_queue)
        found = self._resolved.get(key)
        if found is not None:
            return found
        route = None if job_queue else self._route(job_name, args, kwargs, options)
        if route is None:
            found = self._to_queue(job_queue or self.default_queue, None, None, None)
        else:
            found = self._to_queue(route.queue, route.exchange, route.routing_key, route.priority)
        if not self.routers:  # a router may answer differently for each call
            if len(self._resolved) >= 4096:
                self._resolved.clear()
            self._resolved[key] = found
        return found

    def _route(self, job_name: str, args, kwargs, options) -> Route | None:
        for router in self.routers:
            found = router(job_name, args, kwargs or {}, options or {}, task=None)
            if found:
                return _as_route(found)
        return next((r for pattern, r in self.table
                     if pattern == job_name or fnmatch.fnmatchcase(job_name, pattern)), None)

    def _to_queue(self, name: str, exchange, routing_key, priority) -> Route:
        """The route to queue ``name``, its exchange and routing key filled in from the
        queue's declaration (None, None: straight to the queue)."""
        if self.by_exchange:
            queue = self.queue(name)
            if queue.exchange.type == "fanout":
                # Every queue bound to it gets the message, whatever the key; an empty key
                # is what kombu's Redis transport subscribes its fanout queues with.
                return Route(name, queue.exchange.name, "", priority)
            exchange = exchange or queue.exchange.name
            if routing_key is None:
                if name == self.default_queue and self.default_routing_key:
                    routing_key = self.default_routing_key
                elif not _pattern(queue.routing_key):
                    routing_key = queue.routing_key or name
            if routing_key is None or (exchange == name and routing_key == name and _plain(queue)):
                exchange = routing_key = None  # straight to the queue
        else:
            exchange = routing_key = None
        return Route(name, exchange, routing_key, priority)


def reaches(queue: Queue, routing_key: str) -> bool:
    """Whether ``routing_key`` reaches ``queue`` through the exchange it is bound to."""
    kind = queue.exchange.type
    if kind == "fanout":
        return True
    if kind == "topic":
        return topic_matches(queue.routing_key or "", routing_key)
    return queue.routing_key == routing_key


def _pattern(routing_key: str | None) -> bool:
    return bool(routing_key) and ("*" in routing_key or "#" in routing_key)


def _with(queue: Queue, **attributes) -> Queue:
    """A copy of ``queue`` with other attributes (the settings' own object is left alone)."""
    queue = copy.copy(queue)
    for name, value in attributes.items():
        setattr(queue, name, value)
    return queue


def _plain(queue: Queue) -> bool:
    """Bound to a direct exchange of its own name by its name: the same as no exchange."""
    return (queue.exchange.name == queue.name and queue.exchange.type == "direct"
            and queue.routing_key == queue.name)


def _as_route(target) -> Route:
    if isinstance(target, str):
        return Route(queue=target)
    if isinstance(target, Route):
        return target
    queue = target.get("queue")
    if isinstance(queue, Queue):
        queue = queue.name
    return Route(queue=queue or settings.TASK_DEFAULT_QUEUE, exchange=_name(target.get("exchange")),
                 routing_key=target.get("routing_key"), priority=target.get("priority"))


def _name(exchange) -> str | None:
    return exchange.name if isinstance(exchange, Exchange) else exchange


def _read_routes(routes) -> tuple[list[tuple[str, Route]], list[Callable]]:
    """TASK_ROUTES as Celery takes it: a dict of name or glob -> queue or options, a list of
    such dicts and routers, or one router (a callable or its dotted path)."""
    table: list[tuple[str, Route]] = []
    routers: list[Callable] = []
    items = routes if isinstance(routes, (list, tuple)) else [routes]
    for item in items:
        if isinstance(item, dict):
            table += [(pattern, _as_route(target)) for pattern, target in item.items()]
        elif isinstance(item, str):
            try:
                routers.append(import_string(item))
            except ImportError:
                continue  # manage.py check says so (jobs.E009)
        elif callable(item):
            routers.append(item)
    return table, routers


def topic_matches(pattern: str, key: str) -> bool:
    """Whether routing key ``key`` matches binding ``pattern`` of a topic exchange (``*`` one
    word, ``#`` zero or more)."""
    words = []
    for word in pattern.split("."):
        words.append({"*": r"[^.]+", "#": r".*?"}.get(word, re.escape(word)))
    regex = r"\.".join(words).replace(r".*?\.", r"(?:.*?\.)?").replace(r"\..*?", r"(?:\..*?)?")
    return re.fullmatch(regex, key) is not None
