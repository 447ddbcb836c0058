"""Job ids: random UUIDs (version 4), as Celery makes them."""

from __future__ import annotations

import os

# The variant bits of RFC 4122 (10xx) over the random high nibble of the fourth group.
_VARIANT = {f"{n:x}": "89ab"[n & 3] for n in range(16)}


def new_id() -> str:
    """A new random id: the text ``str(uuid.uuid4())`` writes, with the same 122 random bits
    from ``os.urandom``, made without a UUID object (a third of the cost, on every enqueue)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"
