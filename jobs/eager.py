"""Running a job in the calling process: ``job.apply()`` and ``JOBS["ALWAYS_EAGER"]``."""

from __future__ import annotations

import traceback as tb
import uuid

from jobs import context, coroutines
from jobs.conf import settings
from jobs.exceptions import Retry
from jobs.models import States
from jobs.results import EagerResult


def run_eagerly(job, args: tuple, kwargs: dict, options: dict) -> EagerResult:
    """Run ``job`` now, retrying in place as a worker would; nothing is written or sent."""
    job_id = options.get("task_id") or options.get("job_id") or str(uuid.uuid4())
    parent = context.current.get()
    retries = options.get("retries", 0)
    while True:
        request = context.Request(
            id=job_id, name=job.name, args=args, kwargs=kwargs, retries=retries,
            queue=options.get("queue") or job.queue, is_eager=True,
            root_id=parent.root_id or parent.id or job_id, parent_id=parent.id,
        )
        token = context.current.set(request)
        try:
            value = job(*args, **kwargs)
            if job.is_async:
                value = coroutines.run(value)
        except Retry:
            retries += 1
            continue
        except Exception as exc:
            if (job.autoretry_for and isinstance(exc, job.autoretry_for)
                    and not isinstance(exc, job.dont_autoretry_for)):
                limit = job.max_retries
                if limit is None or retries < limit:
                    retries += 1
                    continue
            propagate = options.get("propagate")
            if propagate if propagate is not None else settings.EAGER_PROPAGATES:
                raise
            return EagerResult(job_id, job.name, States.FAILURE, exc, tb.format_exc(), retries)
        finally:
            context.current.reset(token)
        return EagerResult(job_id, job.name, States.SUCCESS, value, retries=retries)
