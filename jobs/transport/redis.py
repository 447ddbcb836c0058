"""kombu's Redis transport, with a message taken from its queue atomically.

kombu's Redis channel takes a message with BRPOP and records it as unacknowledged with a
second command. A worker killed between the two (the reply can sit unread in the socket for
a while) loses the message for good. Here one Lua script moves the message from the queue
into kombu's own ``unacked`` hash and index, on the server, in one step: whenever the worker
dies, the message is either still queued or restorable after the visibility timeout.

The layout of queues and of the unacked records is kombu's, so Celery producers and workers
share the queues, and kombu's ack, reject and restore work unchanged. While a queue is
empty, the channel waits with ``BLMOVE key key RIGHT RIGHT`` (Redis 6.2+), which returns as
soon as the first queue key has a message but leaves the list untouched, and sends the claim
script right behind it: the server runs the claim as the wait returns. A worker's other
lists (its other queues', each queue's priority steps) are watched meanwhile, each by a
connection blocked in the same wait, which wakes the first with CLIENT UNBLOCK (see
"Watching the other lists" below). An item that is
not one of kombu's envelopes (pushed on the list by another program) is handed to the worker
as a message without headers, which dead-letters it, rather than failing the claim.

A message's priority picks its list as kombu does (``priority_steps``: 0-2, 3-5, 6-8, 9),
and the claim takes the lists highest priority first, so ``priority=9`` runs before
``priority=0`` as on RabbitMQ (kombu's own channel takes the lowest number first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import select
from base64 import b64encode
from contextlib import contextmanager
from queue import Empty
from time import time
from uuid import uuid4

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
    NoScriptError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from jobs.batch import Stencil
from jobs.compat.kombu.redis import (
    RedisChannel,
    RedisQoS,
    execute_prefixed,
    polled_sockets,
    socket_of,
    wait_sockets,
)
from jobs.ids import new_id
from jobs.messages import envelope_json as _envelope_json
from jobs.transport.tolerant import tolerant

logger = logging.getLogger("jobs.worker")

#: KEYS: the queue keys in order, then the unacked hash and index.
#: ARGV: the time now, the number of queue keys, how many messages to take at most.
#: Returns {key, message, tag, key, message, tag, ...} (queue keys in order: priority first;
#: the tag under which the message was recorded, or '' if it wasn't), or nil.
CLAIM = """
local n = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local taken = {}
for i = 1, n do
  while #taken < want * 3 do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    -- Something that isn't kombu's envelope (pushed by hand) goes to the worker as it is,
    -- which dead-letters it: an error here would end the script with the item popped.
    local ok, message = pcall(cjson.decode, item)
    local properties = ok and type(message) == 'table' and message['properties']
    local tag = type(properties) == 'table' and properties['delivery_tag']
    if type(tag) ~= 'string' or tag == '' then
      tag = ''
    else
      local info = properties['delivery_info']
      if type(info) ~= 'table' then info = {} end
      local record = '[' .. item .. ',' .. cjson.encode(info['exchange'] or '') .. ','
        .. cjson.encode(info['routing_key'] or '') .. ']'
      redis.call('HSET', KEYS[n + 1], tag, record)
      redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)
    end
    taken[#taken + 1] = KEYS[i]
    taken[#taken + 1] = item
    taken[#taken + 1] = tag
  end
  if #taken >= want * 3 then break end
end
if #taken == 0 then return false end
return taken
"""

CLAIM_SHA = hashlib.sha1(CLAIM.encode()).hexdigest()  # sent as EVALSHA, loaded on NOSCRIPT

#: One LPUSH of one message, in the protocol's own terms (RESP): key, then message.
LPUSH = b"*3\r\n$5\r\nLPUSH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"

#: The most messages one LPUSH of a batch carries.
PUSH_CHUNK = 1000

#: The most messages one claim takes (fewer when the prefetch count leaves less room).
CLAIM_MAX = 16

#: A key no one writes: deleting it is a write that changes nothing (:meth:`Channel._unblock`).
WAKE_KEY = "jobs.wake"

#: Seconds to wait for a message on one key before looking at all of them again.
WAIT = 1.0
WAIT_MANY = 0.25  # when there are several queues to look at and no watchers (below)


class QoS(RedisQoS):
    #: Set by a consumer that acknowledges in batches: ``ack`` then only notes the tag, and
    #: :meth:`flush_acks` removes the noted messages from the unacked records in one round
    #: trip. Until then they stay restorable, so a crash in between redelivers them.
    defer_acks = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending_acks: list[str] = []

    def append(self, message, delivery_tag):
        if self.channel.claimed.pop(delivery_tag, None):
            # Already recorded on the server by the claim script.
            return self.append_locally(message, delivery_tag)
        return super().append(message, delivery_tag)

    def ack(self, delivery_tag):
        if not self.defer_acks:
            return super().ack(delivery_tag)
        self._pending_acks.append(delivery_tag)
        self.ack_locally(delivery_tag)

    def flush_acks(self, idle: bool = False) -> None:
        """Forget the acknowledged messages: two commands for the whole batch (what kombu's
        ack does for one message), in one transaction (now, ``idle`` or not)."""
        tags, self._pending_acks = self._pending_acks, []
        if tags:
            self.channel.forget(tags)


class Channel(RedisChannel):
    QoS = QoS
    Message = tolerant(kombu_redis.Channel.Message)

    def __init__(self, *args, **kwargs):
        self.claimed: dict[str, bool] = {}  # tags the claim script recorded
        self._waiting = False
        self._want = 1  # how many messages the claim in flight asked for
        self._requests: dict[tuple, ClaimRequests] = {}  # by the queues, in claim order
        self._shared_client = None
        self._put_connection = None
        self._ack_connection = None
        self._list_keys: dict = {}  # (queue, priority) -> list key
        #: The other lists' watchers (:meth:`_watch`): list key -> connection, armed or not.
        self._watchers: dict[str, object] = {}
        self._armed: set[str] = set()
        self._watching = False  # a worker polls their sockets (Transport.waitable)
        self._refused = False  # the server refused CLIENT: no watchers
        self._in_wait = False  # the waiting connection is in its BLMOVE
        self._waiter_id = None  # its client id, for CLIENT UNBLOCK
        self._waiter = None  # the connection that id is of
        self._fired = False  # a watcher saw a message since the last claim was sent
        super().__init__(*args, **kwargs)

    @property
    def claim_order(self) -> list[int]:
        """The priority steps, the highest first: the order the claim takes the lists in."""
        return self.priority_steps[::-1]

    @contextmanager
    def command_client(self, client=None):
        """A client for one command or pipeline. kombu builds a new client object for every
        publish and ack (its constructor costs more than the command); one per channel,
        drawing connections from the channel's pool, serves them all."""
        if client:
            yield client
            return
        if self._shared_client is None:
            self._shared_client = self.new_client()
        yield self._shared_client

    def _room(self) -> int:
        """How many messages a claim may take: what the prefetch count leaves, at most
        CLAIM_MAX (the poller only claims while there is room for one)."""
        room = self.qos.can_consume_max_estimate()  # None: no prefetch limit
        return CLAIM_MAX if room is None else max(1, min(CLAIM_MAX, room))

    def _claim_args(self, keys: list[str], want: int = 1) -> list:
        names = [*keys, *self.unacked_keys()]
        if self.global_keyprefix:
            names = [self.global_keyprefix + name for name in names]
        return ["EVALSHA", CLAIM_SHA, len(names), *names, repr(time()), len(keys), want]

    def _claim_now(self, client, keys: list[str], want: int):
        """Run the claim script on ``client`` and return its reply (our arguments carry the
        key prefix already)."""
        try:
            return execute_prefixed(client, *self._claim_args(keys, want))
        except NoScriptError:  # the server lost its scripts (a restart): load it again
            client.script_load(CLAIM)
            return execute_prefixed(client, *self._claim_args(keys, want))

    def put_message(self, queue, message, **kwargs):
        """LPUSH one message on a connection this channel keeps for publishing.

        A channel publishes from one thread at a time, so the connection needn't go back to
        the pool after each command; skipping the pool and the client's command wrapper
        halves the cost of a publish. Batches and expiring queues take kombu's path.
        """
        expiring = self.expiring_queues
        if kwargs.get(self.PUBLISH_BATCH) is not None or (expiring and queue in expiring):
            return super().put_message(queue, message, **kwargs)
        key = self.list_key(queue, message)
        if self.global_keyprefix:
            key = self.global_keyprefix + key
        self._push_one(key.encode(), _envelope_json(message).encode())

    def _push_one(self, key: bytes, data: bytes) -> None:
        """LPUSH ``data`` to ``key`` (with the key prefix) on the publishing connection."""
        connection = self._put_connection
        if connection is None:
            connection = self._put_connection = self.pool.get_connection()
        try:
            # Packed here: redis-py's packing of a command's arguments costs twice the send.
            connection.send_packed_command([LPUSH % (len(key), key, len(data), data)])
            connection.read_response()
        except BaseException:
            self._drop_kept("_put_connection", connection)
            raise

    def _drop_kept(self, name: str, connection) -> None:
        """Close ``connection``, kept in attribute ``name``, after a failed request: the next
        request takes a fresh one from the pool."""
        setattr(self, name, None)
        self._discard(connection)

    def _discard(self, connection) -> None:
        """Close ``connection`` and hand it back to the pool, which makes it afresh."""
        connection.disconnect()
        self.pool.release(connection)

    def forget(self, delivery_tags: list[str]) -> None:
        """Remove acknowledged messages from kombu's unacked index and hash, in one
        transaction (what kombu's ack does for one), sent on a connection this channel keeps
        for it: through redis-py's pipeline, the acknowledgement of an idle worker's job cost
        its main thread more than the job's claim and hand-over together."""
        prefix = self.global_keyprefix or ""
        index, records = prefix + self.unacked_index_key, prefix + self.unacked_key
        commands = [("MULTI",), ("ZREM", index, *delivery_tags),
                    ("HDEL", records, *delivery_tags), ("EXEC",)]
        for attempt in (1, 2):  # once more on a fresh connection: the kept one may be dead
            connection = self._ack_connection
            if connection is None:
                connection = self._ack_connection = self.pool.get_connection()
            try:
                connection.send_packed_command(connection.pack_commands(commands))
                replies = [connection.read_response() for _ in range(3)]  # OK, QUEUED, QUEUED
                done = connection.read_response()
            except BaseException as exc:
                self._drop_kept("_ack_connection", connection)
                if attempt == 1 and isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
                    continue  # both commands may run twice: removing is idempotent
                raise
            break
        for reply in (*replies, *(done or ())):
            if isinstance(reply, Exception):
                raise reply

    def augment_message(self, message: dict, exchange, routing_key) -> None:
        """kombu's step before a message is stored (its body encoded, its delivery tag and
        info set), written out for base64, the usual body encoding: kombu's looks the codec
        up and converts the body through three helpers for every message."""
        if self.body_encoding != "base64":
            return RedisChannel.augment_message(self, message, exchange, routing_key)
        body = message["body"]
        message["body"] = b64encode(body.encode() if body.__class__ is str else body).decode()
        properties = message["properties"]
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = self.delivery_tag()
        info = properties["delivery_info"]
        info["exchange"] = exchange
        info["routing_key"] = routing_key

    def delivery_tag(self) -> str:
        """A new message's delivery tag: a random UUID, as kombu's, made cheaper."""
        return new_id()

    def list_key(self, queue: str, message: dict) -> str:
        """The list ``message`` goes on: its queue's for its priority step (without the key
        prefix), worked out once per queue and priority."""
        priority = message["properties"].get("priority")
        try:
            return self._list_keys[queue, priority]
        except KeyError:
            if len(self._list_keys) >= 4096:
                self._list_keys.clear()
            key = self._list_keys[queue, priority] = self.queue_key(
                queue, self.message_priority(message, reverse=False))
            return key
        except TypeError:  # not a number, nor hashable: kombu's default priority
            return self.queue_key(queue, self.message_priority(message, reverse=False))

    def publish_many(self, by_queue: dict[str, list], chunk: int = PUSH_CHUNK) -> None:
        """Publish prepared messages (queue name -> messages, in order) in one pipeline:
        a single LPUSH per queue and priority for each ``chunk`` messages."""
        expiring = self.expiring_queues
        with self.command_client() as client:
            pipe = client.pipeline(transaction=False)
            for queue, messages in by_queue.items():
                keys: dict[str, list] = {}
                for message in messages:
                    self.augment_message(message, "", queue)
                    key = self.list_key(queue, message)
                    keys.setdefault(key, []).append(_envelope_json(message))
                for key, payloads in keys.items():
                    for i in range(0, len(payloads), chunk):
                        pipe.lpush(key, *payloads[i:i + chunk])
                if expiring and queue in expiring:  # as kombu's put_message does
                    for priority in self.priority_steps:
                        pipe.pexpire(self.queue_key(queue, priority), expiring[queue])
            pipe.execute()

    def stencil(self, prepared: dict, queue: str) -> tuple[str, Stencil] | None:
        """``(list key, stencil)`` to publish the calls of a batch whose prototype is
        ``prepared`` (its :data:`~jobs.batch.HOLES` unfilled) with :meth:`publish_alike`;
        None where that can't be done (a body encoding other than base64, a queue that
        expires)."""
        expiring = self.expiring_queues
        if self.body_encoding != "base64" or (expiring and queue in expiring):
            return None
        key = self.list_key(queue, prepared)
        self.augment_message(prepared, "", queue)
        return key, Stencil(prepared)

    def publish_alike(self, stencil: tuple[str, Stencil], calls: list,
                      chunk: int = PUSH_CHUNK) -> None:
        """Publish ``calls`` (a :class:`~jobs.batch.Batch`'s) from their :meth:`stencil`,
        each call's text filled in: one LPUSH for one call, else one pipeline of LPUSHes of
        ``chunk`` messages."""
        key, stencil = stencil
        # As bytes: redis-py's encoding of a str argument costs more than str.encode.
        texts = [text.encode() for _, text in stencil.texts(calls, self.delivery_tag)]
        if len(texts) == 1:
            prefix = self.global_keyprefix
            self._push_one((prefix + key if prefix else key).encode(), texts[0])
            return
        with self.command_client() as client:
            pipe = client.pipeline(transaction=False)
            for i in range(0, len(texts), chunk):
                pipe.lpush(key, *texts[i:i + chunk])
            pipe.execute()

    def disconnect_pools(self):
        self._shared_client = None
        self._put_connection = self._ack_connection = None  # the pool's disconnect closes them
        self._watchers, self._armed = {}, set()  # likewise
        super().disconnect_pools()

    def start_wait(self, timeout=None):
        queues = self.queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        requests = self._requests.get(tuple(queues)) or self._requests_for(queues)
        connection = self.client.connection
        self._want = self._room()
        watched = False
        if self._waiting and self._watching:
            watched = self._watch(requests.others, connection)
        self.wait_sent(connection)
        if self._waiting and not self._fired:
            # The claim goes right behind the wait: the server runs it the moment the wait
            # returns (a message came, or the time is up), without another round trip.
            wait = WAIT if watched or len(self.active_queues) == 1 else WAIT_MANY
            connection.send_packed_command([requests.wait_then_claim(wait, self._want)])
            self._in_wait = True
        else:
            self._waiting = False  # for read_wait: no wait's reply to read
            connection.send_packed_command([requests.claim(self._want)])
        self._fired = False

    def _requests_for(self, queues: list[str]) -> ClaimRequests:
        if len(self._requests) >= 64:  # queues consumed and cancelled over a long life
            self._requests.clear()
        requests = self._requests[tuple(queues)] = ClaimRequests(self, queues)
        return requests

    # Watching the other lists -------------------------------------------------------------
    #
    # Redis can wait for one list without taking from it (BLMOVE key key), not for several:
    # a worker that consumes several queues, or a queue whose messages have priorities
    # (a list per priority step), would see a message on any list but the one it waits on
    # only when the wait's time is up. So while it waits, each other list has a watcher: a
    # connection of its own, blocked in the same BLMOVE on that list. When one returns, the
    # waiting connection is woken with CLIENT UNBLOCK (:meth:`_unblock`), and the claim
    # behind its wait runs at once. A server that refuses CLIENT (an ACL without it) leaves
    # the lists to be looked at in turn, as before.

    def _watch(self, keys: list[str], connection) -> bool:
        """Arm a watcher on each of ``keys`` (with the key prefix) that has none armed;
        True if they are all watched from now on."""
        if not keys:
            return True
        try:
            if self._waiter is not connection or self._waiter_id is None:
                connection.register_connect_callback(self._reconnected)
                connection.send_command("CLIENT", "ID")
                self._waiter_id, self._waiter = connection.read_response(), connection
            for key in keys:
                if key in self._armed:
                    continue
                watcher = self._watchers.get(key)
                if watcher is None:
                    watcher = self._watchers[key] = self.pool.get_connection()
                watcher.send_command("BLMOVE", key, key, "RIGHT", "RIGHT", WAIT)
                self._armed.add(key)
            for key in list(self._watchers):  # a queue no longer consumed
                if key not in keys and key not in self._armed:
                    self.pool.release(self._watchers.pop(key))
            return True
        except ResponseError as exc:  # CLIENT refused: look at the lists in turn
            self._refuse(exc)
            return False
        except self.connection_errors:
            self._unwatch()  # the waiting connection fails too, and says so
            return False

    def _reconnected(self, connection) -> None:
        """The waiting connection connected again: its client id changed."""
        self._waiter_id = None

    def watch_sockets(self) -> list[int]:
        """The sockets of the watchers armed while the waiting connection waits, for the
        worker's poll (:meth:`Transport.waitable`); when one is readable and kombu finds
        nothing to read, the transport calls :meth:`wake`."""
        self._watching = not self._refused
        if not self._armed or not self._in_wait:
            return []  # nothing to watch; or claims go on, which take from every list
        try:
            return [socket_of(self._watchers[key]).fileno() for key in self._armed]
        except self.connection_errors:
            self._unwatch()
            return []

    def wake(self) -> bool:
        """Read what the watchers have; if one saw a message while the waiting connection
        waits, wake that with CLIENT UNBLOCK: the claim behind its wait runs now, and takes
        what the watcher saw. True if anything was read."""
        if not self._armed and not self._fired:
            return False
        try:
            read = self._service_watchers()
        except (ResponseError, *self.connection_errors):  # a failover's old master, say
            self._unwatch()  # armed again on a fresh connection at the next wait
            return True
        if self._fired and self._in_wait:
            # On a watcher that returned (the others are blocked in their wait).
            watcher = next(w for k, w in self._watchers.items() if k not in self._armed)
            try:
                # Redis reads its connections in no set order: the UNBLOCK, sent right
                # behind the wait on another connection, may be taken before the wait and
                # find nothing to unblock; once more then, the wait taken by now. Still
                # nothing (the wait returned on its own, or Redis holds it back): again at
                # the next turn, until it is unblocked or its reply is read.
                for _ in range(2):
                    if self._unblock(watcher):
                        self._in_wait = self._fired = False
                        break
            except ResponseError as exc:
                if "NOPERM" in str(exc) or "unknown command" in str(exc):
                    self._refuse(exc)
                else:  # READONLY: a failover's old master; the next wait arms them anew
                    self._unwatch()
                return True
            except self.connection_errors:
                self._unwatch()
                return True
            read = True
        return read

    def _unblock(self, watcher) -> bool:
        """Send CLIENT UNBLOCK for the waiting connection on ``watcher``; True if it was
        blocked. The UNBLOCK goes in a transaction with a write that changes nothing, so
        that while writes are paused (CLIENT PAUSE, FAILOVER) the pause holds it too, until
        it no longer holds the wait: Redis before its fix of July 2025 (redis/redis#14164)
        crashed on an UNBLOCK naming a client that a pause held."""
        prefix = self.global_keyprefix or ""
        watcher.send_packed_command(watcher.pack_commands([
            ("MULTI",), ("DEL", prefix + WAKE_KEY), ("CLIENT", "UNBLOCK", self._waiter_id),
            ("EXEC",)]))
        replies = []
        for _ in range(4):  # every reply read, an error's too: the connection stays in step
            try:
                replies.append(watcher.read_response())
            except ResponseError as exc:
                replies.append(exc)
        error = next((r for r in replies if isinstance(r, ResponseError)), None)
        if error is not None:
            raise error
        return bool(replies[-1][-1])

    def _service_watchers(self) -> bool:
        """Read the replies of the armed watchers that have one: a message seen (noted in
        ``_fired``), or the time up (armed again while the waiting connection waits). True
        if there was one."""
        if not self._armed:
            return False
        poller = select.poll()
        by_fd, ready = {}, set()
        for key in self._armed:
            sock = socket_of(self._watchers[key])
            by_fd[sock.fileno()] = key
            poller.register(sock, select.POLLIN)
            if holds_data(sock):  # over TLS: read already, the socket doesn't show it
                ready.add(sock.fileno())
        ready.update(fd for fd, _ in poller.poll(0))
        for fd in ready:
            key = by_fd[fd]
            watcher = self._watchers[key]
            if watcher.read_response() is not None:
                self._armed.discard(key)
                self._fired = True
            elif self._in_wait:  # the time is up: watch on
                watcher.send_command("BLMOVE", key, key, "RIGHT", "RIGHT", WAIT)
            else:
                self._armed.discard(key)
        return bool(ready)

    def _refuse(self, exc: Exception) -> None:
        logger.warning("Redis refused a command that wakes a waiting worker (CLIENT, or "
                       "DEL %s): %s. Without it, a message on a list other than the one the "
                       "worker waits on (another queue's, or one with a priority) is taken "
                       "when that wait is up, within %s s", WAKE_KEY, exc, WAIT)
        self._unwatch()
        self._watching, self._refused = False, True

    def close(self):
        self._unwatch()
        super().close()

    def _unwatch(self) -> None:
        for watcher in self._watchers.values():
            self._discard(watcher)
        self._watchers, self._armed, self._fired = {}, set(), False

    def read_wait(self, **options):
        connection = self.client.connection
        try:
            try:
                self._in_wait = False
                # Read as they come: redis-py's client reads them the same way, and has
                # nothing to convert in either reply.
                if self._waiting:  # the wait's reply: the claim's, next, says what came
                    try:
                        connection.read_response()
                    except ResponseError:
                        connection.disconnect()  # the claim's reply is still unread
                        raise
                reply = connection.read_response()
            except NoScriptError:
                self.client.script_load(CLAIM)
                raise Empty() from None  # claim again at the next turn
            except self.connection_errors:
                connection.disconnect()
                raise
        finally:
            self.wait_read()
            self.flush_reauth()
        # Fewer than asked for: the lists were empty, so the next claim goes behind a wait
        # for the next message; a full claim: claim again at once, while they come.
        self._waiting = not reply or len(reply) < 3 * self._want
        if not reply:
            raise Empty()
        deliver = self.transport_deliver()
        for i in range(0, len(reply), 3):
            self._deliver_claimed(deliver, bytes_to_str(reply[i]), reply[i + 1], reply[i + 2])
        return True

    def _deliver_claimed(self, deliver, key: str, item, tag) -> None:
        if self.global_keyprefix and key.startswith(self.global_keyprefix):
            key = key[len(self.global_keyprefix):]
        queue = key.rsplit(self.sep, 1)[0]
        self.queue_cycle.rotate(queue)
        deliver(self._claimed_envelope(item, tag, queue), queue)

    def _claimed_envelope(self, item, tag, queue: str) -> dict:
        """The envelope of an item the claim script took and recorded as unacknowledged
        under ``tag``. An item that isn't one of kombu's envelopes (pushed on the list by
        hand; the script records none without a delivery tag) comes as a message without
        headers, which the worker refuses and dead-letters."""
        payload = None
        if tag:
            tag = bytes_to_str(tag)
            try:
                payload = _envelope_from_json(item)
                payload["properties"]["delivery_tag"] = tag
            except (ValueError, TypeError, KeyError):
                payload = None
        else:
            tag = f"unreadable-{uuid4()}"
        if payload is None:
            payload = {"body": item if isinstance(item, bytes) else str(item).encode(),
                       "headers": {}, "content-type": "application/octet-stream",
                       "content-encoding": "binary",
                       "properties": {"delivery_tag": tag, "body_encoding": None,
                                      "delivery_info": {"exchange": "", "routing_key": queue}}}
        self.claimed[tag] = True  # recorded by the script, or nothing to record
        return payload

    def get_message(self, queue):
        """One message by direct access (basic_get), claimed the same atomic way."""
        keys = [self.queue_key(queue, pri) for pri in self.claim_order]
        with self.command_client() as client:
            reply = self._claim_now(client, keys, 1)
        if not reply:
            raise Empty()
        return self._claimed_envelope(reply[1], reply[2], queue)


def _encoded(value) -> bytes:
    """An argument of a command as redis-py encodes it (str, int or float)."""
    return value.encode() if isinstance(value, str) else repr(value).encode()


def _bulk(value: bytes) -> bytes:
    """One argument of a command, in the protocol's own terms (RESP)."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


class ClaimRequests:
    """A channel's claim on one list of queues, and its wait for a message, packed once
    (RESP): redis-py's packing of the claim's dozen arguments cost an idle worker more than
    sending it, at every wait. Between two claims only the time and how many to take
    change."""

    __slots__ = ("key", "others", "_head", "_lists", "_waits")

    def __init__(self, channel: Channel, queues: list[str]) -> None:
        keys = [channel.queue_key(queue, pri) for pri in channel.claim_order for queue in queues]
        # The claim's arguments as redis-py would be given them: all but the last three
        # (the time, the number of lists, how many to take) packed here for good.
        *head, _, lists, _ = map(_encoded, channel._claim_args(keys))
        self._head = b"*%d\r\n" % (len(head) + 3) + b"".join(map(_bulk, head))
        self._lists = _bulk(lists)
        self._waits: dict[float, bytes] = {}
        prefix = channel.global_keyprefix or ""
        #: Waited on: the first queue's list of messages without a priority, where most
        #: arrive; the others are watched (Channel._watch).
        self.key = prefix + channel.queue_key(queues[0], 0)
        self.others = [prefix + key for key in keys if prefix + key != self.key]

    def claim(self, want: int) -> bytes:
        """The claim script's request (see CLAIM), for at most ``want`` messages."""
        return self._head + _bulk(_encoded(time())) + self._lists + _bulk(b"%d" % want)

    def wait_then_claim(self, seconds: float, want: int) -> bytes:
        """A wait of up to ``seconds`` for a message on :attr:`key`, then the claim."""
        wait = self._waits.get(seconds)
        if wait is None:
            wait = self._waits[seconds] = b"*6\r\n" + b"".join(map(_bulk, map(_encoded, (
                "BLMOVE", self.key, self.key, "RIGHT", "RIGHT", seconds))))
        return wait + self.claim(want)


def _envelope_from_json(raw) -> dict:
    """The reverse of :func:`_envelope_json`: the standard library's decoder (kombu's calls
    a hook for every object), unless the text holds a value only kombu's restores."""
    text = bytes_to_str(raw)
    return loads(text) if '"__type__"' in text else json.loads(text)


class Transport(kombu_redis.Transport):
    Channel = Channel

    def drain_events(self, connection, timeout=None):
        """kombu's; when it finds nothing, what the channels' watchers have is read (a
        watcher's socket woke the worker's poll): that counts as something read."""
        try:
            return super().drain_events(connection, timeout)
        except TimeoutError:
            woken = False
            for channel in self.channels:
                woken = channel.wake() or woken
            if not woken:
                raise

    def waitable(self, connection) -> list[int] | None:
        """The sockets to wait on (:meth:`jobs.broker.Broker.sockets`), once each channel's
        claim (or its wait for a message) is sent, as kombu's event loop does before every
        poll. Over TLS, None while the TLS layer of one of them holds bytes already read from
        it (a socket shows only what is still to read): the worker then waits in kombu's
        own loop, as it would without this method. redis-py reads a whole TLS record at a
        time, so that is not expected to happen."""
        sockets = wait_sockets(self)
        for channel in self.channels:
            sockets += channel.watch_sockets()
        if self.client.ssl and any(map(holds_data, polled_sockets(self))):
            return None
        return sockets


def holds_data(sock) -> bool:
    """Whether the TLS layer of ``sock`` holds bytes it has read and not yet handed over
    (False for a plain socket)."""
    pending = getattr(sock, "pending", None)  # ssl.SSLSocket
    return pending is not None and pending() > 0


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The same channel on Redis behind Sentinel: kombu's Sentinel channel gives the
    connection pool, which asks the sentinels where the master is (again after a failover);
    ours claims from it atomically."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
    waitable = Transport.waitable
