"""kombu's virtual-transport Message, made to survive headers that are not a mapping.

On Redis and the database broker a message's envelope is JSON that any producer writes, so
its headers can be a list or a number; kombu's Message would raise reading them, inside the
worker's event loop, and the worker would die (and die again on the redelivery). Here such
headers are replaced by a mapping that keeps what was sent, and the worker dead-letters the
message ("not a job message") like any other it can't run.
"""

from __future__ import annotations


def tolerant(message_class: type) -> type:
    """A subclass of a kombu virtual ``Message`` class that accepts any headers."""

    class Message(message_class):
        def __init__(self, payload, channel=None, **kwargs):
            headers = payload.get("headers")
            if headers is not None and not isinstance(headers, dict):
                payload = {**payload, "headers": {"x-jobs-unreadable-headers": repr(headers)[:1000]}}
            super().__init__(payload, channel=channel, **kwargs)

    Message.__qualname__ = f"Tolerant{message_class.__qualname__}"
    return Message
