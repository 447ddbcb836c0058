"""The project's settings with a broadcast queue (kombu's ``Broadcast``), for the worker
processes of tests/test_broadcast.py (``DJANGO_SETTINGS_MODULE``): TASK_QUEUES can't travel
in an environment variable."""

from kombu import Exchange, Queue
from kombu.common import Broadcast

from project.settings import *  # noqa: F403
from project.settings import JOBS

BROADCAST_QUEUE = "broadcast_tasks"


def broadcast_jobs() -> dict:
    """JOBS keys declaring ``broadcast_tasks`` beside the tests' two queues, with
    ``note_worker`` routed to it, as a Celery project would write them."""
    return {
        "TASK_QUEUES": [
            Queue("default", Exchange("default"), routing_key="default"),
            Queue("other", Exchange("other"), routing_key="other"),
            Broadcast(BROADCAST_QUEUE),
        ],
        "TASK_ROUTES": {"tests.jobs_app.jobs.note_worker": {"queue": BROADCAST_QUEUE}},
    }


JOBS = {**JOBS, **broadcast_jobs()}
