"""The message envelope: Celery's protocol v2 layout, so Celery and jobs can share a queue.

A message is headers (task name, id, eta, expires, retries, ...), properties
(correlation_id, content type, priority) and a body ``[args, kwargs, embed]``.
The body is serialized at the call site, so a value that can't be sent fails there.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kombu.serialization import dumps, loads
from kombu.utils.json import dumps as kombu_json_dumps

from jobs.compat.kombu import json_decoder_is_kombus, json_is_kombus
from jobs.exceptions import EncodeError, InvalidMessage, MessageTooLarge

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_REPR_LIMIT = 1024
ID_LIMIT = 255  # characters of the job id columns
_ID_HEADERS = ("id", "task", "root_id", "parent_id", "group")
_MAX_RETRIES = 2**31 - 1


@dataclass(slots=True)
class JobMessage:
    """One call of a job, as it travels to a worker. Not to be changed once made (make
    another with ``dataclasses.replace``); not frozen, because a frozen dataclass's
    ``__init__`` costs a quarter of building a message."""

    id: str
    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    queue: str = "default"
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    priority: int | None = None
    ignore_result: bool = False
    headers: dict = field(default_factory=dict)  # anything else a producer sent
    exchange: str | None = None  # sent to this exchange with routing_key; None: to the queue
    routing_key: str | None = None
    group_index: int | None = None
    embed: dict | None = None  # callbacks, errbacks, chain, chord (jobs.canvas); None: none

    def header_dict(self) -> dict[str, Any]:
        # One dict display: the producer's own headers first, ours over them.
        return {
            **self.headers,
            "lang": "py",
            "task": self.name,
            "id": self.id,
            "shadow": None,
            "eta": _iso(self.eta),
            "expires": _iso(self.expires),
            "group": self.group_id,
            "group_index": self.group_index,
            "retries": self.retries,
            "timelimit": [self.time_limit, self.soft_time_limit],
            "root_id": self.root_id or self.id,
            "parent_id": self.parent_id,
            "argsrepr": short_repr(self.args),
            "kwargsrepr": short_repr(self.kwargs),
            "origin": ORIGIN,
            "ignore_result": self.ignore_result,
        }

    def body(self) -> tuple:
        return (list(self.args), self.kwargs, self.embed or EMBED)


@dataclass(slots=True)
class Envelope:
    """A serialized message, ready for ``Producer.publish``. Not to be changed once made
    (``dataclasses.replace`` makes another), and not frozen, for speed, as JobMessage."""

    message: JobMessage
    payload: bytes | str
    content_type: str
    content_encoding: str
    headers: dict


def encode(message: JobMessage, serializer: str, func=None,
           max_size: int | None = None) -> Envelope:
    """Serialize ``message``; an argument the serializer can't carry is a TypeError here,
    and a body larger than ``max_size`` bytes is a MessageTooLarge."""
    body = message.body()
    try:
        content_type, content_encoding, payload = _json(body, serializer) or dumps(
            body, serializer=serializer)
    except Exception as exc:
        raise _explain_encode_error(message, serializer, func, exc) from exc
    if max_size and len(payload) > max_size:
        raise MessageTooLarge(
            f"{message.name}: the arguments take {len(payload):,} bytes, more than "
            f"TASK_MAX_MESSAGE_SIZE ({max_size:,}); store large data elsewhere (a file, a row) "
            "and pass a reference to it"
        )
    return Envelope(message, payload, content_type, content_encoding, message.header_dict())


_JSON = "application/json"


def _refuse(value):
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: A str as JSON writes it, between quotes.
json_string = json.encoder.encode_basestring_ascii
_json_encoder = getattr(json.encoder, "c_make_encoder", None)
if _json_encoder is not None:
    # json.dumps's settings; no circular check (its markers are shared state): a circular
    # value ends in RecursionError, and the caller's fallback names it.
    _json_encoder = _json_encoder(None, _refuse, json.encoder.encode_basestring_ascii, None,
                                  ": ", ", ", False, False, True)


def _json(body, serializer: str) -> tuple[str, str, str] | None:
    """kombu's JSON serializer's answer, the cheap way, or None: ask kombu."""
    if serializer == "json" and json_is_kombus():
        try:
            return _JSON, "utf-8", json_text(body)
        except (TypeError, ValueError):
            return None  # a type only kombu's encoder knows (a date, a UUID, ...)
    return None


def json_text(value) -> str:
    """The text ``json.dumps(value)`` writes, which kombu's JSON serializer writes too for
    every type JSON has, through one encoder made once (json.dumps makes one per call, half
    the cost of a small message). TypeError or ValueError for a value stdlib json can't
    write: kombu's encoder, which knows more types, is the caller's fallback."""
    if _json_encoder is None:
        return json.dumps(value)
    try:
        return "".join(_json_encoder(value, 0))
    except RecursionError:
        raise ValueError("too deep, or circular") from None


def envelope_json(envelope: dict) -> str:
    """kombu's JSON of a message envelope as a transport stores it. The standard library's
    encoder writes the same text, at half the cost (:func:`json_text`); kombu's is needed
    only for a header it alone can encode (a date)."""
    try:
        return json_text(envelope)
    except (TypeError, ValueError):
        return kombu_json_dumps(envelope)


def _explain_encode_error(message: JobMessage, serializer: str, func, exc) -> EncodeError:
    """Find the argument that can't be serialized and name it."""
    names = _parameter_names(func)
    suspects = [(names[i] if i < len(names) else f"#{i}", v) for i, v in enumerate(message.args)]
    suspects += list(message.kwargs.items())
    for name, value in suspects:
        try:
            dumps(value, serializer=serializer)
        except Exception as inner:
            hint = ""
            if hasattr(value, "_meta") and hasattr(value, "pk"):
                hint = f" Pass its primary key instead ({name}={type(value).__name__}.pk)."
            return EncodeError(
                f"{message.name}: argument {name!r} of type {type(value).__name__} can't be "
                f"serialized with {serializer!r}: {inner}.{hint}"
            )
    return EncodeError(f"{message.name}: arguments can't be serialized with {serializer!r}: {exc}")


def _parameter_names(func) -> list[str]:
    if func is None:
        return []
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def decode(headers: dict, body: bytes | str, content_type: str, content_encoding: str,
           accept: set[str] | None, queue: str = "") -> JobMessage:
    """Build a :class:`JobMessage` from what a broker delivered, or raise InvalidMessage."""
    name, job_id = headers.get("task"), headers.get("id")
    if not isinstance(name, str) or not name or not isinstance(job_id, str) or not job_id:
        raise InvalidMessage("not a job message: the 'task' and 'id' headers are missing")
    _check_ids(headers)
    try:
        decoded = _loads(body, content_type, content_encoding, accept)
    except Exception as exc:
        raise InvalidMessage(f"can't decode the body ({content_type}): {exc}") from exc
    args, kwargs, embed = _split_body(decoded)
    limits = headers.get("timelimit") or (None, None)
    try:
        hard, soft = limits
        return JobMessage(
            id=job_id,
            name=name,
            args=tuple(args),
            kwargs=kwargs,
            queue=queue,
            eta=parse_datetime(headers.get("eta")),
            expires=parse_datetime(headers.get("expires")),
            retries=_retries(headers.get("retries")),
            time_limit=_number(hard),
            soft_time_limit=_number(soft),
            root_id=headers.get("root_id"),
            parent_id=headers.get("parent_id"),
            group_id=headers.get("group"),
            group_index=_index(headers.get("group_index")),
            embed=embed,
            ignore_result=bool(headers.get("ignore_result")),
            headers=headers,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidMessage(f"bad header: {exc}") from exc


def _loads(body, content_type: str, content_encoding: str, accept: set[str] | None):
    """kombu's ``loads``; JSON with none of kombu's own types (most bodies) straight through
    the standard library's decoder, with the same result: kombu's makes a decoder for each
    call and calls its hook for every object. Text that names ``__type__``, or escapes a
    character (a key could spell it so), goes to kombu's."""
    if content_type == "application/json" and body and accept and content_type in accept \
            and body.__class__ in (bytes, str) and json_decoder_is_kombus():
        text = body.decode() if body.__class__ is bytes else body
        if '"__type__"' not in text and "\\u" not in text:
            return json.loads(text)
    return loads(body, content_type, content_encoding, accept=accept)


def _split_body(decoded) -> tuple[list, dict, dict | None]:
    if not isinstance(decoded, (list, tuple)) or len(decoded) != 3:
        raise InvalidMessage("the body is not [args, kwargs, embed] (Celery protocol v2)")
    args, kwargs, embed = decoded
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise InvalidMessage("the body's args must be a list and kwargs a dict")
    if not all(isinstance(k, str) for k in kwargs):
        raise InvalidMessage("the body's kwargs have a key that is not a string")
    return list(args), kwargs, _embed(embed)


def _embed(embed) -> dict | None:
    """The workflow a message carries (what runs after it), checked; None when it carries
    none. One that can't be followed is refused here, so it is dead-lettered with the reason
    rather than dropped."""
    if embed is None:
        return None
    try:  # the common case first, cheaply: a map of four empty places
        if not (embed["callbacks"] or embed["errbacks"] or embed["chain"] or embed["chord"]):
            return None
    except (KeyError, TypeError, IndexError):
        if not isinstance(embed, dict):
            raise InvalidMessage("the body's embed (callbacks, errbacks, chain, chord) is not "
                                 "a map") from None
        if not (embed.get("callbacks") or embed.get("errbacks") or embed.get("chain")
                or embed.get("chord")):
            return None
    for key in ("callbacks", "errbacks", "chain"):
        signatures = embed.get(key)
        if signatures is not None and not (isinstance(signatures, list)
                                           and all(map(_is_signature, signatures))):
            raise InvalidMessage(f"the embed's {key!r} is not a list of signatures")
    chord = embed.get("chord")
    if chord is not None and not _is_signature(chord):
        raise InvalidMessage("the embed's 'chord' is not a signature")
    return {key: embed.get(key) for key in EMBED}


def _is_signature(value) -> bool:
    """A signature in Celery's layout: a map naming its task (a chain, group or chord
    names theirs inside)."""
    if not isinstance(value, dict):
        return False
    if isinstance(value.get("task"), str) and value["task"]:
        return isinstance(value.get("args", ()), (list, tuple)) and isinstance(
            value.get("kwargs") or {}, dict) and isinstance(value.get("options") or {}, dict)
    return value.get("subtask_type") in ("chain", "group", "chord") and isinstance(
        value.get("kwargs"), dict)


def _index(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"group_index={value!r} is not a position")
    return value


def _check_ids(headers: dict) -> None:
    """Ids are stored in 255-character columns, and PostgreSQL refuses NUL in text."""
    for key in _ID_HEADERS:
        value = headers.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > ID_LIMIT
                                  or "\x00" in value or not _utf8(value)):
            raise InvalidMessage(f"bad header {key!r}: not a string of at most {ID_LIMIT} "
                                 "characters without NUL")


def _utf8(text: str) -> bool:
    """Whether ``text`` can be stored (JSON lets a lone surrogate through; UTF-8 can't)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _retries(value) -> int:
    retries = int(value or 0)
    if not 0 <= retries <= _MAX_RETRIES:
        raise ValueError(f"retries={value!r} is out of range")
    return retries


def _number(value) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not 0 <= number < float("inf"):  # NaN, negative or infinite
        raise ValueError(f"time limit {value!r} is not a positive number")
    return number


def parse_datetime(value) -> datetime | None:
    """An aware datetime from an ISO 8601 string (naive means UTC), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59-05:00 is past the last UTC datetime
        raise ValueError(f"{value!r} is out of range") from None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def short_repr(value) -> str:
    """Celery's ``argsrepr``/``kwargsrepr``: the repr, cut at 1,024 characters."""
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."
