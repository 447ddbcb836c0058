"""Values as the ``JobRecord`` JSON columns can hold them, whatever a message carried.

A message's arguments come from a producer and may hold what no JSON column takes: bytes
(kombu's JSON carries them), NaN and infinities (which kombu's JSON parser accepts), NUL
characters (PostgreSQL refuses them in text and jsonb). Unstorable, they would make every
attempt to record the job fail, and the job would be delivered again forever. Stored as
their repr instead, they stay readable in the admin, and the job runs with the real values.
"""

from __future__ import annotations

import math
from datetime import date, time, timedelta
from decimal import Decimal
from uuid import UUID

#: Types DjangoJSONEncoder writes as strings (datetime is a date).
_ENCODED = (date, time, timedelta, Decimal, UUID)


def storable(value):
    """``value`` with whatever a JSON column can't hold replaced by a readable string."""
    kind = type(value)
    if kind is int or kind is bool or value is None:
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(k) if isinstance(k, str) else repr(k): storable(v)
                for k, v in value.items()}
    if isinstance(value, _ENCODED):
        return value
    return repr(value)


def _text(value: str) -> str:
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate, which JSON allows and UTF-8 doesn't
            value = value.encode("utf-8", "backslashreplace").decode()
    return value
