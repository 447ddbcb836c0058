"""Signed messages (``JOBS["SIGNING_KEYS"]``): producers sign what they encode (see
:mod:`jobs.security`); a worker dead-letters a message that is unsigned, signed with a key
it doesn't hold, or altered, before anything of it runs."""

from __future__ import annotations

from jobs import security
from jobs.middleware import Middleware


class Signing(Middleware):
    def receive(self, worker, delivery):
        forged = security.check_delivery(delivery)
        if forged:
            worker.dead_letter(delivery, forged)
            return None
        return delivery
