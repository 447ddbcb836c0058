"""Jobs of the demo project: the demo page enqueues them, and its periodic schedule (in
project/settings.py) sends ``add``. The tests run them too; the jobs only the tests run are in
tests/jobs_app/jobs.py."""

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
