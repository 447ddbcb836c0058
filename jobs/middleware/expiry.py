"""``expires=``: a job received after its expiry time is recorded REVOKED and not run."""

from __future__ import annotations

from django.utils import timezone

from jobs.middleware import Middleware
from jobs.middleware.results import revoke


class Expiry(Middleware):
    def execute(self, execution, call_next):
        expires = execution.message.expires
        if expires is not None and expires <= timezone.now():
            return revoke(execution, f"expired at {expires.isoformat()}")
        return call_next(execution)
