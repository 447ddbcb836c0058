"""Signed messages: HMAC over the serialized body and the headers that decide what runs.

With ``JOBS["SIGNING_KEYS"]`` set (a list; the first key signs, any of them verifies, so keys
can be rotated), every message a producer of this project encodes carries the header
``x-jobs-signature``, and a worker refuses (dead-letters) a message that is unsigned, signed
with a key it does not hold, or altered. A process that can write to the broker but doesn't
hold a key can't make a worker run anything. See docs/security.md for the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from jobs.conf import on_reset, settings

HEADER = "x-jobs-signature"
VERSION = "v1"

#: The headers that decide what runs, when, and how often: covered by the signature.
#: Informational ones (argsrepr, kwargsrepr, origin) are not.
SIGNED_HEADERS = ("lang", "task", "id", "shadow", "eta", "expires", "group", "group_index",
                  "retries", "timelimit", "root_id", "parent_id", "ignore_result")

_keys: list[tuple[str, bytes]] | None = None  # (key id, key), the signing key first


def keys() -> list[tuple[str, bytes]]:
    """The configured keys as ``(key id, key bytes)``, the signing key first."""
    global _keys
    if _keys is None:
        _keys = [(key_id(key), as_bytes(key)) for key in settings.SIGNING_KEYS or ()]
    return _keys


@on_reset
def _forget_keys() -> None:
    global _keys
    _keys = None


def as_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def key_id(key: str | bytes) -> str:
    """A short public name for ``key``, so a worker knows which key to verify with without
    the header revealing anything about the key itself."""
    return hashlib.sha256(b"jobs key id\x00" + as_bytes(key)).hexdigest()[:8]


def signature(key: bytes, headers: dict, body: bytes, content_type: str,
              content_encoding: str) -> str:
    mac = hmac.new(key, _signed_text(headers, content_type, content_encoding), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def sign(headers: dict, payload: bytes | str, content_type: str, content_encoding: str) -> None:
    """Add the signature header to ``headers`` (in place) when signing is on."""
    configured = keys()
    if not configured:
        return
    ident, key = configured[0]
    body = _as_body(payload, content_encoding)
    headers[HEADER] = f"{VERSION}:{ident}:" + signature(key, headers, body, content_type,
                                                         content_encoding)


def refusal(headers: dict, body: bytes | str, content_type: str,
            content_encoding: str) -> str | None:
    """Why a message fails verification (unsigned, unknown key, altered), or None if it
    passes or signing is off. ``body`` is the serialized body, decompressed."""
    configured = keys()
    if not configured:
        return None
    value = headers.get(HEADER)
    if value is None:
        return "unsigned message: SIGNING_KEYS is set, so every message must be signed"
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 3 or parts[0] != VERSION:
        return f"malformed signature header {HEADER!r}"
    _, ident, given = parts
    candidates = [key for i, key in configured if i == ident]
    if not candidates:
        return f"signed with a key this worker does not hold (key id {ident[:16]!r})"
    try:
        data = _as_body(body, content_encoding)
        expected = [signature(key, headers, data, content_type or "", content_encoding or "")
                    for key in candidates]
    except Exception as exc:  # hostile header values: not JSON, nested too deep, ...
        return f"the signed headers can't be read: {type(exc).__name__}"
    given_bytes = given.encode("utf-8", "replace")
    if not any(hmac.compare_digest(e.encode(), given_bytes) for e in expected):
        return "bad signature: the message was altered, or signed with another key"
    return None


def _signed_text(headers: dict, content_type: str, content_encoding: str) -> bytes:
    signed = [content_type, content_encoding, [headers.get(name) for name in SIGNED_HEADERS]]
    text = json.dumps(signed, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return f"jobs {VERSION}\n{text}\n".encode()


def _as_body(payload: bytes | str, content_encoding: str) -> bytes:
    if isinstance(payload, str):
        encoding = content_encoding if content_encoding not in (None, "", "binary") else "utf-8"
        return payload.encode(encoding)
    return bytes(payload)


def check_delivery(delivery) -> str | None:
    """:func:`refusal` for a message as a worker received it (its body maybe compressed)."""
    if not keys():
        return None
    body = delivery.body
    compression = delivery.headers.get("compression")
    if compression:
        from jobs.compression import decompress
        from jobs.exceptions import InvalidMessage

        try:
            body = decompress(body, compression, settings.TASK_MAX_MESSAGE_SIZE)
        except InvalidMessage as exc:
            return str(exc)
    return refusal(delivery.headers, body, delivery.content_type, delivery.content_encoding)
