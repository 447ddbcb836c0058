"""The request a job is running for: ``self.request`` inside a bound job."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Request:
    """What the running job knows about the call that started it (Celery's ``task.request``)."""

    id: str | None = None
    name: str | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    retries: int = 0
    queue: str | None = None
    eta: datetime | None = None
    expires: datetime | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    hostname: str | None = None
    is_eager: bool = False
    delivery_info: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    group_index: int | None = None
    embed: dict | None = None  # what runs after the job (jobs.canvas): Celery's embed

    @property
    def callbacks(self) -> list | None:
        return self.embed and self.embed.get("callbacks")

    @property
    def errbacks(self) -> list | None:
        return self.embed and self.embed.get("errbacks")

    @property
    def chain(self) -> list | None:
        return self.embed and self.embed.get("chain")

    @property
    def chord(self) -> dict | None:
        return self.embed and self.embed.get("chord")


EMPTY = Request()
current: contextvars.ContextVar[Request] = contextvars.ContextVar("jobs_request", default=EMPTY)
