"""A Celery app, for the interoperability tests: the other side of a shared queue.

Configured from the environment by tests/test_celery_interop.py:
``CELERY_SIDE_BROKER_URL``, ``CELERY_SIDE_TRANSPORT_OPTIONS`` (JSON) and ``CELERY_SIDE_OUT``,
a folder where each task run leaves ``<task id>.json`` with what the task received.
Its task is named like a job of the demo project, so messages sent by either side run on
the other.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from celery import Celery

app = Celery("celery_side", broker=os.environ.get("CELERY_SIDE_BROKER_URL", "memory://"))
app.conf.update(
    broker_transport_options=json.loads(os.environ.get("CELERY_SIDE_TRANSPORT_OPTIONS", "{}")),
    task_default_queue="default",
    accept_content=["json"],
    task_serializer="json",
    result_backend=None,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="project.demo.jobs.add", bind=True)
def add(self, x, y):
    """What project.demo.jobs.add does, leaving a note of what it received."""
    note = {
        "result": x + y,
        "args": [x, y],
        "retries": self.request.retries,
        "eta": self.request.eta,
        "expires": self.request.expires,
        "parent_id": self.request.parent_id,
        "root_id": self.request.root_id,
        "ran_at": datetime.now(UTC).isoformat(),
    }
    out = Path(os.environ["CELERY_SIDE_OUT"])
    temporary = out / f".{self.request.id}.tmp"
    temporary.write_text(json.dumps(note, default=str))
    temporary.rename(out / f"{self.request.id}.json")  # appears whole or not at all
    return x + y


@app.task(name="celery_side.long", bind=True, acks_late=True)
def long(self, seconds):
    """A long acks_late task: each run adds a line to ``<task id>.runs``, then sleeps."""
    out = Path(os.environ["CELERY_SIDE_OUT"])
    with open(out / f"{self.request.id}.runs", "a") as runs:
        runs.write(datetime.now(UTC).isoformat() + "\n")
    time.sleep(seconds)
    return seconds
