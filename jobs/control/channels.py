"""The broadcast channel between ``jobs_inspect``/``jobs_control`` and every live worker.

Where the broker has a fanout exchange (Redis, RabbitMQ) it is kombu's :class:`Mailbox`:
each worker listens on its own queue bound to the ``jobs.pidbox`` exchange and answers on
the sender's reply queue. ``django://`` has none: a command is a :class:`ControlMessage` row
that every worker reads on its next look (four times a second: one indexed query that finds
nothing almost every time), and each answer a :class:`ControlReply` row. The sender removes
both when it is done. Either way an answer is ``{worker name: reply}``.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

from django.db import DatabaseError
from django.utils import timezone
from kombu.pidbox import Mailbox

from jobs.broker import get_broker, new_connection
from jobs.database import database
from jobs.models import ControlMessage, ControlReply, Worker as WorkerRow

logger = logging.getLogger("jobs.control")

#: The mailbox of every worker of the project (its exchange is ``jobs.pidbox``).
MAILBOX = Mailbox("jobs", type="fanout", accept=["json"], serializer="json")
#: Seconds between two looks for commands: on the broker's mailbox, and in the database.
LOOK_EVERY = 0.1
LOOK_EVERY_IN_DATABASE = 0.25
#: A command older than this is not run by a worker that sees it late (its sender is gone).
FRESH_FOR = timedelta(seconds=60)
#: Seconds before a worker tries its broker's mailbox again after losing it.
RECONNECT_AFTER = 2.0


# Sending ----------------------------------------------------------------------------------


def broadcast(command: str, arguments: dict | None = None, destination: list[str] | None = None,
              timeout: float = 1.0) -> dict[str, object]:
    """Send ``command`` to every live worker (or to those named in ``destination``) and
    return their answers, ``{worker name: reply}``, as they come within ``timeout`` seconds.
    It returns as soon as every worker it waits for has answered: the named ones, or every
    worker whose heartbeat says it is online."""
    arguments = arguments or {}
    limit = len(destination) if destination else _online_workers()
    if get_broker().fanout_control:
        return _through_mailbox(command, arguments, destination, timeout, limit)
    return _through_database(command, arguments, destination, timeout, limit)


def _online_workers() -> int | None:
    names = WorkerRow.objects.online().values_list("hostname", flat=True).distinct()
    return len(set(names)) or None


def _through_mailbox(command, arguments, destination, timeout, limit) -> dict:
    with new_connection() as conn:
        mailbox = MAILBOX(conn)
        if destination:
            replies = mailbox.call(destination, command, arguments, timeout=timeout)
        else:
            replies = mailbox.multi_call(command, arguments, timeout=timeout, limit=limit)
    answers: dict = {}
    for reply in replies or ():
        answers.update(reply)
    return answers


def _through_database(command, arguments, destination, timeout, limit) -> dict:
    ticket = str(uuid.uuid4())
    ControlMessage.objects.create(ticket=ticket, command=command, arguments=arguments,
                                  destination=destination or None)
    deadline = time.monotonic() + timeout
    answers: dict = {}
    try:
        while True:
            answers.update(ControlReply.objects.filter(ticket=ticket)
                           .values_list("hostname", "reply"))
            if (limit and len(answers) >= limit) or time.monotonic() >= deadline:
                return answers
            time.sleep(0.02)
    finally:
        ControlMessage.objects.filter(ticket=ticket).delete()
        ControlReply.objects.filter(ticket=ticket).delete()
        _forget_stale()


def _forget_stale() -> None:
    """Commands whose sender never came back to remove them, and answers that came late."""
    ControlMessage.objects.filter(sent_at__lt=timezone.now() - FRESH_FOR).delete()
    ControlReply.objects.exclude(ticket__in=ControlMessage.objects.values("ticket")).delete()


# Listening (in the worker's main thread) ----------------------------------------------------


def listener(worker, dispatch):
    """What the worker polls for commands on this project's broker."""
    if get_broker().fanout_control:
        return MailboxListener(worker, dispatch)
    return DatabaseListener(worker, dispatch)


class _Handlers(dict):
    """kombu's Node calls ``handlers[command](worker, **arguments)``: every command goes
    to ``dispatch``, which answers for unknown ones too."""

    def __init__(self, dispatch) -> None:
        super().__init__()
        self.dispatch = dispatch

    def __missing__(self, command):
        return lambda worker, **arguments: self.dispatch(worker, command, arguments)


class MailboxListener:
    """The worker's queue on the broker's mailbox, on a connection of its own (the main
    thread's consuming connection is left as it is), read without waiting."""

    def __init__(self, worker, dispatch) -> None:
        self.worker = worker
        self.handlers = _Handlers(dispatch)
        self.connection = None
        self._next = 0.0

    def poll(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + LOOK_EVERY
        try:
            if self.connection is None:
                self._listen()
            self._drain()
        except Exception as exc:  # the broker is away: the worker goes on without commands
            logger.warning("Control channel lost (%s: %s); listening again in %.0fs",
                           type(exc).__name__, exc, RECONNECT_AFTER)
            self.close()
            self._next = now + RECONNECT_AFTER

    def _listen(self) -> None:
        conn = new_connection()
        conn.ensure_connection(max_retries=1)
        channel = conn.channel()
        node = MAILBOX(conn).Node(self.worker.hostname, state=self.worker, channel=channel,
                                  handlers=self.handlers)
        node.listen(channel=channel)
        self.connection = conn
        self._drain()  # on Redis, this subscribes to the exchange

    def _drain(self) -> None:
        conn = self.connection
        while True:
            try:
                conn.drain_events(timeout=0.001)
            except (TimeoutError, BlockingIOError):
                break
        conn.heartbeat_check()

    def close(self) -> None:
        conn, self.connection = self.connection, None
        if conn is not None:
            try:
                conn.release()
            except Exception:
                pass


class DatabaseListener:
    """Reads the commands sent since the worker started, four times a second. Those sent
    before are the rows it finds at its first look (older than it, by the database's count,
    whatever the clocks of the hosts say)."""

    def __init__(self, worker, dispatch) -> None:
        self.worker = worker
        self.dispatch = dispatch
        self._after: int | None = None  # the last command sent before the worker started
        self._seen: dict[str, object] = {}  # ticket -> when it was sent
        self._next = 0.0

    def poll(self) -> None:
        now = time.monotonic()
        if now < self._next or database.down:
            return
        self._next = now + LOOK_EVERY_IN_DATABASE
        try:
            for row in self._new_commands():
                self._answer(row)
        except DatabaseError as exc:
            if not database.failed(exc):
                logger.warning("Could not read control commands: %s", exc)

    def _new_commands(self) -> list[dict]:
        if self._after is None:
            last = ControlMessage.objects.order_by("-pk").values_list("pk", flat=True).first()
            self._after = last or 0
            return []
        since = timezone.now() - FRESH_FOR
        self._seen = {t: at for t, at in self._seen.items() if at >= since}
        rows = ControlMessage.objects.filter(pk__gt=self._after, sent_at__gte=since).values(
            "ticket", "command", "arguments", "destination", "sent_at")
        fresh = [row for row in rows if row["ticket"] not in self._seen]
        for row in fresh:
            self._seen[row["ticket"]] = row["sent_at"]
        return fresh

    def _answer(self, row: dict) -> None:
        hostname = self.worker.hostname
        if row["destination"] and hostname not in row["destination"]:
            return
        reply = self.dispatch(self.worker, row["command"], row["arguments"] or {})
        ControlReply.objects.create(ticket=row["ticket"], hostname=hostname, reply=reply)

    def close(self) -> None:
        pass
