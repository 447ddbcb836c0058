"""A log line, with the job id, for each way a job ends."""

from __future__ import annotations

import logging

from jobs.middleware import Middleware
from jobs.outcome import Kind

logger = logging.getLogger("jobs.worker")


class Logging(Middleware):
    def finished(self, execution, outcome) -> None:
        message, kind = execution.message, outcome.kind
        extra = {"job_id": message.id}
        if kind is Kind.SUCCEEDED:
            logger.info("Job %s[%s] succeeded in %.6fs", message.name, message.id,
                        outcome.runtime, extra=extra)
        elif kind is Kind.FAILED:
            logger.error("Job %s[%s] raised %s", message.name, message.id, outcome.reason,
                         extra=extra)
        elif kind is Kind.RETRIED:
            logger.info("Job %s[%s] will retry: %s", message.name, message.id, outcome.reason,
                        extra=extra)
        elif kind is Kind.REVOKED:
            logger.info("Job %s[%s] revoked: %s", message.name, message.id, outcome.reason,
                        extra=extra)
