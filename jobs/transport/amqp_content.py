"""AMQP content headers decoded for the ``amqp://`` transport (:mod:`jobs.transport.amqp`).

A job's message carries about twenty headers (Celery's protocol 2 layout) in the Basic
properties' field table, and decoding them was the largest single cost of receiving one:
py-amqp reads each value through a generic reader (a chain of type tests, a helper call per
string). Here each type has its reader, looked up by its octet, and strings, most values,
are read inline. The result is the same dictionary py-amqp builds, value for value
(``tests/test_transport_amqp.py`` compares the two on generated tables).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from struct import Struct

from amqp.exceptions import FrameSyntaxError

_B = Struct(">B").unpack_from
_H = Struct(">H").unpack_from
_I = Struct(">I").unpack_from
_i = Struct(">i").unpack_from
_Q = Struct(">Q").unpack_from


def _text(raw):
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw


def _fixed(fmt: str):
    """The reader of a number of the struct format ``fmt``."""
    unpack, size = Struct(fmt).unpack_from, Struct(fmt).size

    def read(buf, offset):
        return unpack(buf, offset)[0], offset + size
    return read


def _long_string(buf, offset):
    end = offset + 4 + _I(buf, offset)[0]
    return _text(buf[offset + 4:end]), end


def _bytes(buf, offset):
    end = offset + 4 + _I(buf, offset)[0]
    return buf[offset + 4:end], end


def _decimal(buf, offset):
    places, = _B(buf, offset)
    value, = _i(buf, offset + 1)
    return Decimal(value) / Decimal(10 ** places), offset + 5


def _timestamp(buf, offset):
    seconds, = _Q(buf, offset)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(tzinfo=None), offset + 8


def _bool(buf, offset):
    return buf[offset] != 0, offset + 1


def _void(buf, offset):
    return None, offset


def _value(buf, offset):
    try:
        read = READERS[buf[offset]]
    except KeyError:
        raise FrameSyntaxError(f"Unknown value in table: {chr(buf[offset])!r}") from None
    return read(buf, offset + 1)


#: Keys of field tables read so far (the same twenty or so in every message), by their
#: bytes: a lookup instead of a decode.
_KEYS: dict[bytes, str] = {}


def _table(buf, offset):
    """A field table: its length, then (short string key, type octet, value) entries."""
    if buf.__class__ is not bytes:  # a bytearray's slices would be no dictionary keys
        buf = bytes(buf)
    end = offset + 4 + _I(buf, offset)[0]
    offset += 4
    table = {}
    readers, keys = READERS, _KEYS
    while offset < end:
        start = offset + 1
        offset = start + buf[offset]
        raw = buf[start:offset]
        key = keys.get(raw)
        if key is None:
            key = _text(raw)
            if len(keys) < 1024 and key.__class__ is str:
                keys[raw] = key
        kind = buf[offset]
        if kind == 83:  # 'S', most values
            start = offset + 5
            offset = start + _I(buf, offset + 1)[0]
            try:
                table[key] = buf[start:offset].decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                table[key] = buf[start:offset]
        else:
            try:
                read = readers[kind]
            except KeyError:
                raise FrameSyntaxError(f"Unknown value in table: {chr(kind)!r}") from None
            table[key], offset = read(buf, offset + 1)
    return table, offset


def _array(buf, offset):
    end = offset + 4 + _I(buf, offset)[0]
    offset += 4
    items = []
    while offset < end:
        item, offset = _value(buf, offset)
        items.append(item)
    return items, offset


#: Type octet -> reader(buf, offset) -> (value, offset after it), for every type py-amqp reads.
READERS = {
    ord("S"): _long_string, ord("x"): _bytes,
    ord("s"): _fixed(">h"), ord("b"): _fixed(">b"), ord("B"): _fixed(">B"),
    ord("U"): _fixed(">h"), ord("u"): _fixed(">H"), ord("I"): _fixed(">i"),
    ord("i"): _fixed(">I"), ord("L"): _fixed(">q"), ord("l"): _fixed(">q"),
    ord("f"): _fixed(">f"), ord("d"): _fixed(">d"), ord("D"): _decimal,
    ord("F"): _table, ord("A"): _array, ord("t"): _bool, ord("T"): _timestamp,
    ord("V"): _void,
}

#: The Basic properties in the order of their flags: (flag, name, kind), kind being s: a
#: short string, F: a field table, o: an octet, T: a timestamp (seconds, as py-amqp keeps it).
BASIC = (
    (0x8000, "content_type", "s"), (0x4000, "content_encoding", "s"),
    (0x2000, "application_headers", "F"), (0x1000, "delivery_mode", "o"),
    (0x0800, "priority", "o"), (0x0400, "correlation_id", "s"), (0x0200, "reply_to", "s"),
    (0x0100, "expiration", "s"), (0x0080, "message_id", "s"), (0x0040, "timestamp", "T"),
    (0x0020, "type", "s"), (0x0010, "user_id", "s"), (0x0008, "app_id", "s"),
    (0x0004, "cluster_id", "s"),
)


def basic_properties(buf, offset: int) -> tuple[dict, int]:
    """The Basic properties at ``offset`` of a content header frame, and the offset after
    them."""
    flags, = _H(buf, offset)
    offset += 2
    properties = {}
    for flag, name, kind in BASIC:
        if not flags & flag:
            continue
        if kind == "s":
            start = offset + 1
            offset = start + buf[offset]
            properties[name] = buf[start:offset].decode("utf-8", "surrogatepass")
        elif kind == "F":
            properties[name], offset = _table(buf, offset)
        elif kind == "o":
            properties[name] = buf[offset]
            offset += 1
        else:
            properties[name], = _Q(buf, offset)
            offset += 8
    return properties, offset
