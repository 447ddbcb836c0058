"""kombu's ``amqp://`` transport (py-amqp), with reads in large chunks and acknowledgements
sent in batches.

py-amqp reads each frame with three ``recv`` calls of exactly the bytes it needs (header,
payload, end octet), each behind a ``poll`` and between two changes of the socket's timeout:
a message (three frames) took about 25 system calls to receive, and the worker's loop made
a turn for each message. Here the transport reads whatever the socket holds, up to 64 KB at a
time, and cuts the frames from that buffer; a frame already buffered is returned without
touching the socket or its timeout, and a consumer's ``drain_events`` handles every message
read already, not only the first.

A worker's channel can defer its acknowledgements (:attr:`Channel.defer_acks`, as the Redis
transport's QoS does) and send them with :meth:`Channel.flush_acks`: those whose every lower
delivery tag is settled (acknowledged or rejected) go in one ``basic.ack`` with ``multiple``
set, the others one by one. A message not finished yet is never covered: the channel notes
every delivery it receives with an acknowledgement due, until it is settled. Deferred
acknowledgements also go out as soon as half the prefetch window is finished work, and
before the connection waits for the broker: the broker sends nothing while its window is
full, finished messages included.
"""

from __future__ import annotations

import errno
from contextlib import nullcontext
from struct import unpack_from

from amqp import spec
from amqp.basic_message import Message
from amqp.exceptions import UnexpectedFrame
from kombu.transport import pyamqp

from jobs.compat.amqp import UNAVAILABLE, TCPTransport, deliver_handler
from jobs.transport.amqp_content import basic_properties

#: Bytes asked of the socket at a time (a frame longer than that is read whole).
CHUNK = 65536
#: The octet that ends every AMQP frame.
FRAME_END = 206
#: Frame types.
METHOD, HEADER, BODY, HEARTBEAT = 1, 2, 3, 8
#: Methods followed by a message's header and body frames.
CONTENT_METHODS = frozenset({spec.Basic.Deliver, spec.Basic.GetOk, spec.Basic.Return})


class BufferedTCPTransport(TCPTransport):
    """py-amqp's TCP transport, reading the socket in large chunks into a buffer of its own."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._empty_buffer()

    def connect(self):
        self._empty_buffer()
        super().connect()

    def _empty_buffer(self) -> None:
        self._buffer = bytearray()
        self._position = 0  # where the next frame starts in it

    def read_frame(self, unpack=None):
        """The next frame, as ``(type, channel, payload)``: from the buffer when it holds a
        whole one, else after reading the socket until it does. A timeout leaves the buffer
        as it was (a frame is only taken once it is complete)."""
        while True:
            frame = self._buffered_frame()
            if frame is not None:
                return frame
            self._fill()

    def having_timeout(self, timeout):
        if self.frame_ready():  # nothing to wait for: leave the socket's timeout alone
            return nullcontext(self.sock)
        return super().having_timeout(timeout)

    def read_exactly(self, n, initial=False):
        # py-amqp's read_frame is the only caller, and it is replaced above; kept consistent
        # with the buffer for any other.
        while len(self._buffer) - self._position < n:
            self._fill(initial)
        start = self._position
        self._position += n
        data = bytes(self._buffer[start:self._position])
        self._compact()
        return data

    def frame_ready(self) -> bool:
        """Whether the buffer holds a whole frame (reading it needs no system call)."""
        buffer, position = self._buffer, self._position
        if len(buffer) - position < 7:
            return False
        return len(buffer) - position >= unpack_from(">I", buffer, position + 3)[0] + 8

    def _buffered_frame(self):
        buffer, position = self._buffer, self._position
        if len(buffer) - position < 7:
            return None
        frame_type, channel, size = unpack_from(">BHI", buffer, position)
        end = position + 7 + size
        if len(buffer) <= end:
            return None
        payload = bytes(buffer[position + 7:end])
        frame_end = buffer[end]
        self._position = end + 1
        self._compact()
        if frame_end != FRAME_END:
            raise UnexpectedFrame(f"Received frame_end {frame_end:#04x} while expecting 0xce")
        return frame_type, channel, payload

    def _compact(self) -> None:
        if self._position == len(self._buffer):
            self._buffer.clear()
            self._position = 0
        elif self._position > CHUNK:
            del self._buffer[:self._position]
            self._position = 0

    def _fill(self, initial: bool = True) -> None:
        """Append what the socket holds (waiting for it as its timeout says) to the buffer."""
        pending = len(self._buffer) - self._position
        try:
            data = self.sock.recv(CHUNK)
        except TimeoutError:
            raise
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                if initial and not pending and self.raise_on_initial_eintr:
                    raise TimeoutError() from exc
                return
            if exc.errno not in UNAVAILABLE:
                self.connected = False
            raise
        if not data:
            self.connected = False
            raise OSError("Server unexpectedly closed connection")
        self._buffer += data


class Content(Message):
    """A message received, its Basic properties decoded by :mod:`jobs.transport.amqp_content`."""

    def inbound_header(self, buf, offset=0):
        class_id, self.body_size = unpack_from(">HxxQ", buf, offset)
        if class_id != spec.Basic.CLASS_ID:
            return super().inbound_header(buf, offset)
        self.properties = basic_properties(buf, offset + 12)[0]
        if not self.body_size:
            self.ready = True
        return offset + 12


def frame_handler(connection, callback):
    """py-amqp's ``frame_handler_cls``: a function taking each frame read, which hands every
    method on to ``callback(channel, method_sig, args, content)`` (a message's once its
    header and body frames have come) and returns whether it did."""
    assembling: dict[int, list] = {}  # channel -> [message, the frame type due next]

    def on_frame(frame) -> bool:
        kind, channel, payload = frame
        connection.bytes_recv += 1
        if kind == HEARTBEAT:
            return False
        pending = assembling.get(channel)
        due = pending[1] if pending else METHOD
        if kind != due:
            raise UnexpectedFrame(f"Received frame {kind} while expecting type: {due}")
        if pending is None:
            method = unpack_from(">HH", payload)
            if method in CONTENT_METHODS:
                assembling[channel] = [Content(frame_method=method, frame_args=payload), HEADER]
                return False
            callback(channel, method, payload, None)
            return True
        message = pending[0]
        if kind == HEADER:
            message.inbound_header(payload)
            pending[1] = BODY
        else:
            message.inbound_body(payload)
        if not message.ready:
            return False
        del assembling[channel]
        if message.frame_method != spec.Basic.Deliver or not deliver(connection, channel,
                                                                     message):
            callback(channel, message.frame_method, message.frame_args, message)
        return True

    return on_frame


def deliver(connection, channel_id: int, message: Content) -> bool:
    """Hand a message that came with Basic.Deliver to its channel's consumer, as py-amqp's
    ``dispatch_method`` does, without its generic steps (lookups, and a reader through a
    chain of type tests for each argument): the arguments Basic.Deliver declares (consumer
    tag, delivery tag, redelivered, exchange, routing key) are read here. False where the
    generic dispatch must take it (the connection or the channel closing, a one-shot wait)."""
    channel = connection.channels.get(channel_id) if connection.channels else None
    handler = deliver_handler(channel) if channel is not None else None
    if handler is None:
        return False
    args = message.frame_args
    start, end = 5, 5 + args[4]  # past the method's class and id
    consumer_tag = args[start:end].decode("utf-8", "surrogatepass")
    delivery_tag, = unpack_from(">Q", args, end)
    redelivered = args[end + 8] & 1 == 1
    start, end = end + 10, end + 10 + args[end + 9]
    exchange = args[start:end].decode("utf-8", "surrogatepass")
    start, end = end + 1, end + 1 + args[end]
    routing_key = args[start:end].decode("utf-8", "surrogatepass")
    if channel.auto_decode and "content_encoding" in message.properties:
        try:
            message.body = message.body.decode(message.properties["content_encoding"])
        except Exception:
            pass  # as py-amqp: the body stays bytes
    handler(consumer_tag, delivery_tag, redelivered, exchange, routing_key, message)
    return True


class Channel(pyamqp.Channel):
    """kombu's py-amqp channel, which can send its acknowledgements in batches."""

    def __init__(self, *args, **kwargs) -> None:
        #: Acknowledgements wait for :meth:`flush_acks` (the worker's batches).
        self.defer_acks = False
        self._deferred: list[int] = []
        # Delivery tags received with an acknowledgement due and not settled yet.
        self._unsettled: set[int] = set()
        self._window = 0  # the prefetch count (0: no limit)
        super().__init__(*args, **kwargs)

    def basic_qos(self, prefetch_size, prefetch_count, a_global, **kwargs):
        self._window = prefetch_count
        return super().basic_qos(prefetch_size, prefetch_count, a_global, **kwargs)

    def basic_consume(self, queue="", consumer_tag="", no_local=False, no_ack=False,
                      exclusive=False, nowait=False, callback=None, arguments=None,
                      on_cancel=None, **kwargs):
        if not no_ack and callback is not None:
            callback = self._noting(callback)
        return super().basic_consume(
            queue=queue, consumer_tag=consumer_tag, no_local=no_local, no_ack=no_ack,
            exclusive=exclusive, nowait=nowait, callback=callback, arguments=arguments,
            on_cancel=on_cancel, **kwargs)

    def _noting(self, callback):
        unsettled = self._unsettled

        def noted(message):
            unsettled.add(message.delivery_info["delivery_tag"])
            return callback(message)

        return noted

    def basic_get(self, queue="", no_ack=False, **kwargs):
        message = super().basic_get(queue=queue, no_ack=no_ack, **kwargs)
        if message is not None and not no_ack:
            self._unsettled.add(message.delivery_info["delivery_tag"])
        return message

    def basic_ack(self, delivery_tag, multiple=False, **kwargs):
        if self.defer_acks and not multiple and not kwargs:
            self._unsettled.discard(delivery_tag)
            self._deferred.append(delivery_tag)
            if 0 < self._window <= 2 * len(self._deferred):
                # Half the prefetch window is finished work: the broker must hear of it
                # now, or it would soon have nothing more to send.
                self.flush_acks()
            return
        self._settled(delivery_tag, multiple)
        return super().basic_ack(delivery_tag, multiple=multiple, **kwargs)

    def basic_reject(self, delivery_tag, requeue, **kwargs):
        self._unsettled.discard(delivery_tag)
        return super().basic_reject(delivery_tag, requeue, **kwargs)

    def basic_recover(self, requeue=False):
        # Every unacknowledged message is delivered again, under a new tag.
        self._deferred.clear()
        self._unsettled.clear()
        return super().basic_recover(requeue)

    def has_deferred(self) -> bool:
        """Whether acknowledgements wait to be sent, and the channel can still send them."""
        return bool(self._deferred) and self.is_open and not self.is_closing

    def flush_acks(self, idle: bool = False) -> None:
        """Send the deferred acknowledgements: one ``multiple`` ack for those with no
        unsettled message below them, one ack each for the others (now, ``idle`` or
        not)."""
        deferred = self._deferred
        if not deferred:
            return
        self._deferred = []
        lowest = min(self._unsettled, default=None)
        if lowest is None:
            covered, others = deferred, ()
        else:
            covered = [tag for tag in deferred if tag < lowest]
            others = [tag for tag in deferred if tag > lowest]
        if covered:
            super().basic_ack(max(covered), multiple=True)
        for tag in others:
            super().basic_ack(tag)

    def _settled(self, delivery_tag, multiple: bool) -> None:
        if not multiple:
            self._unsettled.discard(delivery_tag)
        elif delivery_tag == 0:  # AMQP: every message so far
            self._unsettled.clear()
        else:
            self._unsettled.difference_update(
                [tag for tag in self._unsettled if tag <= delivery_tag])


class Connection(pyamqp.Connection):
    Channel = Channel

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("frame_handler", frame_handler)
        super().__init__(*args, **kwargs)

    def blocking_read(self, timeout=None):
        # Before waiting for the broker, send the acknowledgements deferred so far: with
        # its prefetch window full of finished messages, the broker would send nothing.
        if not getattr(self.transport, "frame_ready", bool)():
            self.flush_acks()
        return super().blocking_read(timeout)

    def has_deferred(self) -> bool:
        """Whether acknowledgements wait to be sent, and the channel can still send them."""
        return bool(self._deferred) and self.is_open and not self.is_closing

    def drain_buffered(self) -> None:
        """Handle the frames read already (several messages often come in one read)."""
        ready = getattr(self.transport, "frame_ready", None)
        while ready is not None and ready():
            self.blocking_read()

    def flush_acks(self, idle: bool = False) -> None:
        """Send the deferred acknowledgements of every open channel (now, ``idle`` or
        not)."""
        for channel in list(self.channels.values()):
            if isinstance(channel, Channel) and channel.has_deferred():
                channel.flush_acks()

    def Transport(self, host, connect_timeout, ssl=False, read_timeout=None,  # noqa: N802
                  write_timeout=None, socket_settings=None, **kwargs):
        if ssl:  # TLS: py-amqp's own transport, which reads as the TLS layer hands it
            return super().Transport(host, connect_timeout, ssl, read_timeout, write_timeout,
                                     socket_settings, **kwargs)
        return BufferedTCPTransport(host, connect_timeout=connect_timeout,
                                    read_timeout=read_timeout, write_timeout=write_timeout,
                                    socket_settings=socket_settings, **kwargs)


class Transport(pyamqp.Transport):
    Connection = Connection

    def drain_events(self, connection, **kwargs):
        # The consumer's loop: one wait for the broker, then every message it sent already,
        # rather than a turn of the caller's loop for each.
        connection.drain_events(**kwargs)
        connection.drain_buffered()

    def waitable(self, connection) -> list[int] | None:
        """The socket to wait on for ``connection`` (:meth:`jobs.broker.Broker.sockets`):
        none when a whole frame is read already; before waiting, the acknowledgements
        deferred so far go out, as ``blocking_read`` sends them (the broker sends nothing
        while its window is full, finished messages included)."""
        transport = connection.transport
        if not isinstance(transport, BufferedTCPTransport) or transport.sock is None:
            return None  # TLS: its layer may hold what the socket no longer shows
        if transport.frame_ready():
            return []
        connection.flush_acks()
        return [transport.sock.fileno()]


class SSLTransport(Transport, pyamqp.SSLTransport):
    def waitable(self, connection) -> None:
        return None

