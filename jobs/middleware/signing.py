"""Signed messages (``JOBS["SIGNING_KEYS"]``): every message sent is signed on its way to
the broker, and a worker dead-letters a message that is unsigned, signed with a key it
doesn't hold, or altered, before anything of it runs (see :mod:`jobs.security`)."""

from __future__ import annotations

import dataclasses

from jobs import security
from jobs.middleware import Middleware


class Signing(Middleware):
    def before_publish(self, job, envelope, options):
        if not security.keys():
            return envelope
        headers = dict(envelope.headers)
        security.sign(headers, envelope.payload, envelope.content_type, envelope.content_encoding)
        return dataclasses.replace(envelope, headers=headers)

    def passes_through(self, job, message, options) -> bool:
        return not security.keys()  # a signature covers each message's own body and id

    def receive(self, worker, delivery):
        forged = security.check_delivery(delivery)
        if forged:
            worker.dead_letter(delivery, forged)
            return None
        return delivery
