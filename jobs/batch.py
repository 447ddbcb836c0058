"""Many messages of one job from one: what ``delay_many`` sends where the messages of a call
differ only in their ids and arguments.

A :class:`Batch` holds the call's one message with :data:`HOLES` where they differ, and for
each call its id, arguments and encoded body. A transport that stores messages as text
(Redis, ``django://``) writes the prototype's text once and fills it for every call
(:class:`Stencil`), instead of building, encoding and serializing every message; the texts
are those the one-by-one path stores. Every other consumer of a batch takes it as the
sequence of :class:`jobs.messages.Envelope` it stands for.
"""

from __future__ import annotations

import os
import re
from base64 import b64encode
from collections.abc import Sequence
from operator import itemgetter

from jobs.ids import new_id
from jobs.messages import (
    EMBED,
    Envelope,
    JobMessage,
    envelope_json,
    json_string,
    json_text,
    short_repr,
)

#: Stand-ins for what differs between the messages of one bulk call (:class:`Batch`), in
#: the one message built for all of them: random, so no argument or header can hold one.
_TOKEN = os.urandom(8).hex()
HOLES = {name: f"\x00{name}:{_TOKEN}\x00"
         for name in ("id", "body", "argsrepr", "kwargsrepr", "tag")}


class Batch(Sequence):
    """The envelopes of many calls of one job with the same options (``delay_many``): alike
    but for their ids and arguments, and what derives from them (the root id of a call
    without a parent, the body, the arguments' reprs).

    A transport that stores them as text (Redis, ``django://``) writes one message with
    :data:`HOLES` where they differ, then fills it for each call (:class:`Stencil`), rather
    than building and encoding every message. As a sequence it gives each call's
    :class:`~jobs.messages.Envelope`, made when asked, as :func:`jobs.messages.encode` makes it, for the hooks
    and the transports that take messages one by one.
    """

    __slots__ = ("calls", "prototype", "_fields")

    def __init__(self, prototype: Envelope, calls: list[tuple], fields: dict | None = None
                 ) -> None:
        #: The envelope with holes: the id, the body and the arguments' reprs.
        self.prototype = prototype
        #: Per call: (id, args, kwargs, body, argsrepr, kwargsrepr), the reprs as JSON
        #: writes them between quotes.
        self.calls = calls
        if fields is None:
            message = prototype.message
            fields = {name: getattr(message, name) for name in JobMessage.__slots__
                      if name not in ("id", "args", "kwargs")}
        self._fields = fields

    def __len__(self) -> int:
        return len(self.calls)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        message = self.message(index)
        prototype = self.prototype
        return Envelope(message, self.calls[index][3], prototype.content_type,
                        prototype.content_encoding, message.header_dict())

    def message(self, index: int) -> JobMessage:
        job_id, args, kwargs = self.calls[index][:3]
        return JobMessage(id=job_id, args=args, kwargs=kwargs, **self._fields)

    def messages(self):
        """Each call's :class:`JobMessage`, in order."""
        fields = self._fields
        for job_id, args, kwargs, *_ in self.calls:
            yield JobMessage(id=job_id, args=args, kwargs=kwargs, **fields)


class Alike:
    """What the calls of one job with the same options share: the message with
    :data:`HOLES`, as an envelope, and the end of every body. Made once per bulk call, or
    once per job for ``delay()`` (:func:`jobs.bulk.delay_one`); :meth:`batch` fills it."""

    __slots__ = ("prototype", "tail", "fields")

    def __init__(self, prototype: JobMessage) -> None:
        headers = prototype.header_dict()
        headers["argsrepr"], headers["kwargsrepr"] = HOLES["argsrepr"], HOLES["kwargsrepr"]
        self.prototype = Envelope(prototype, HOLES["body"], "application/json", "utf-8",
                                  headers)
        # The body is [args, kwargs, embed]; the embed is the same for every call.
        self.tail = ", " + json_text(prototype.embed or EMBED) + "]"
        self.fields = {name: getattr(prototype, name) for name in JobMessage.__slots__
                       if name not in ("id", "args", "kwargs")}

    def batch(self, pairs, max_size: int | None = None) -> Batch | None:
        """The calls ``pairs`` (``(args, kwargs)`` each) as a :class:`Batch` of JSON
        messages, or None where a call needs more than this (a value only kombu's encoder
        knows, a body over ``max_size``): the caller then encodes each call on its own,
        which raises what is wrong."""
        tail = self.tail
        calls = []
        try:
            for args, kwargs in pairs:
                body = json_text([args, kwargs])[:-1] + tail
                if max_size and len(body) > max_size:
                    return None
                calls.append((new_id(), args, kwargs, body,
                              json_string(short_repr(args))[1:-1],
                              json_string(short_repr(kwargs))[1:-1]))
        except (TypeError, ValueError):
            return None
        return Batch(self.prototype, calls, self.fields)


def batch(prototype: JobMessage, pairs, max_size: int | None = None) -> Batch | None:
    """The calls ``pairs`` of ``prototype`` (a message whose id is ``HOLES["id"]``) as a
    :class:`Batch`, or None (see :meth:`Alike.batch`)."""
    return Alike(prototype).batch(pairs, max_size)


class Stencil:
    """The stored text of one prepared message with :data:`HOLES` in it, made into a
    ``%``-template: :meth:`texts` writes each call's text with one ``%`` (``str.format``
    with named fields, or joining the pieces in Python, costs several times more)."""

    __slots__ = ("order", "template")

    def __init__(self, stored: dict) -> None:
        """``stored``: a batch's prototype as a kombu transport stores it (its body encoded,
        its delivery tag and info set); its body and delivery tag become holes here."""
        stored["body"] = HOLES["body"]
        stored["properties"]["delivery_tag"] = HOLES["tag"]
        text = envelope_json(stored).replace("%", "%%")
        # Each hole as JSON writes it (between quotes), and its place in a call's values.
        holes = {json_string(hole)[1:-1]: i for i, hole in enumerate(HOLES.values())}
        found = re.compile("|".join(map(re.escape, holes)))
        #: Which of a call's values goes in each ``%s``, in order: (id, body, argsrepr,
        #: kwargsrepr, tag), by position.
        self.order = itemgetter(*[holes[m.group()] for m in found.finditer(text)], 0)
        self.template = found.sub("%s", text) + "%.0s"  # the extra value, written as nothing

    def texts(self, calls, tag=None):
        """``(delivery tag, text)`` of each call of a :class:`Batch`, its body in base64
        (kombu's body encoding), each with a new delivery tag."""
        template, order, tag = self.template, self.order, tag or new_id
        for job_id, _, _, body, argsrepr, kwargsrepr in calls:
            delivery_tag = tag()
            yield delivery_tag, template % order((job_id, b64encode(body.encode()).decode(),
                                                  argsrepr, kwargsrepr, delivery_tag))
