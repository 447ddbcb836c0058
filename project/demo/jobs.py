"""Jobs of the demo project (and of the end-to-end tests)."""

import os
import time

from jobs import job


@job
def add(x, y):
    return x + y


@job
def sleep_then_add(seconds, x, y):
    time.sleep(seconds)
    return x + y


@job
def fail(message="it went wrong"):
    raise ValueError(message)


@job(bind=True)
def whoami(self):
    return {"id": self.request.id, "retries": self.request.retries, "pid": os.getpid(),
            "hostname": self.request.hostname}


@job(bind=True, max_retries=3, default_retry_delay=0)
def flaky(self, succeed_on):
    """Fails until its ``succeed_on``-th try."""
    if self.request.retries + 1 < succeed_on:
        raise self.retry(exc=RuntimeError(f"try {self.request.retries + 1} failed"))
    return self.request.retries


@job(queue="other")
def on_other_queue(x):
    return x * 2
