"""What became of one delivered message; the worker acknowledges by it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    REVOKED = "revoked"
    REJECTED = "rejected"  # dead-lettered: no worker can run it
    LOST = "lost"  # the process running it died
    TIME_LIMIT = "time limit"  # killed for running past its hard time limit
    REQUEUE = "requeue"  # it could not run now: deliver again
    NO_DATABASE = "no database"  # it could not start or record its outcome: the database
    # connection failed (jobs.database); deliver again


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    job_id: str = ""
    name: str = ""
    reason: str = ""
    runtime: float = 0.0
    # Known in the process that ran the job only (a prefork child sends the fields above):
    value: Any = None  # SUCCEEDED: what the function returned
    exception: BaseException | None = None  # FAILED, RETRIED: what it raised
    traceback: str = ""
    eta: datetime | None = None  # RETRIED: when it runs again
