"""Counts each job's outcome for Prometheus (:mod:`jobs.metrics`), in the worker's main
process, where every pool reports its outcomes: so prefork children need no multiprocess
mode. Costs one attribute read per job unless the worker serves metrics (``--metrics-port``).
Listed last, it counts outcomes as the other middleware left them (a hard time limit is a
failure by then). An error here is logged and changes no outcome.
"""

from __future__ import annotations

import logging

from jobs.middleware import Middleware

logger = logging.getLogger("jobs.metrics")

#: The counters of this worker (a :class:`jobs.metrics.WorkerMetrics`) once it serves them.
recorder = None


class Metrics(Middleware):
    def completed(self, worker, delivery, outcome):
        if recorder is not None:
            try:
                recorder.count(outcome)
            except Exception:
                logger.exception("Counting the outcome of %s failed; ignored", outcome.job_id)
        return outcome
