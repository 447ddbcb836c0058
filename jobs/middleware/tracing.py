"""OpenTelemetry tracing (``pip install 'jobs-for-django[otel]'``): a span for each enqueue, in
the caller (a web request's trace), and one for each run, in the worker, its child through
the message's headers (W3C ``traceparent``, by the configured propagator).

Not in the default middleware: list it right after ``Signing``, so that the headers it adds
are signed and a call another middleware answered (``Unique``) has no span::

    JOBS = {"MIDDLEWARE": [DEFAULT_MIDDLEWARE[0], "jobs.middleware.tracing.Tracing",
                           *DEFAULT_MIDDLEWARE[1:]]}

Spans go wherever the project's OpenTelemetry SDK sends them; with none set up, the API's
no-op tracer makes this cost next to nothing.
"""

from __future__ import annotations

import dataclasses

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from jobs.middleware import Middleware
from jobs.outcome import Kind

tracer = trace.get_tracer("jobs")


class Tracing(Middleware):
    def __init__(self) -> None:
        self._sending: dict[str, trace.Span] = {}  # job id -> its enqueue span, until sent

    def before_publish(self, job, envelope, options):
        message = envelope.message
        span = tracer.start_span(f"enqueue {message.name}", kind=SpanKind.PRODUCER,
                                 attributes=_attributes(message))
        headers = dict(envelope.headers)
        propagate.inject(headers, context=trace.set_span_in_context(span))
        self._sending[message.id] = span
        return dataclasses.replace(envelope, headers=headers)

    def after_publish(self, job, message) -> None:
        span = self._sending.pop(message.id, None)
        if span is not None:
            span.end()

    def publish_failed(self, job, envelope, exc) -> None:
        span = self._sending.pop(envelope.message.id, None)
        if span is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end()

    def execute(self, execution, call_next):
        message = execution.message
        with tracer.start_as_current_span(
                f"run {message.name}", context=propagate.extract(message.headers),
                kind=SpanKind.CONSUMER, attributes=_attributes(message)) as span:
            outcome = call_next(execution)
            span.set_attribute("jobs.outcome", outcome.kind.value)
            if outcome.kind is Kind.FAILED:
                if outcome.exception is not None:
                    span.record_exception(outcome.exception)
                span.set_status(Status(StatusCode.ERROR, outcome.reason))
            return outcome


def _attributes(message) -> dict:
    return {"jobs.job_id": message.id, "jobs.name": message.name, "jobs.queue": message.queue,
            "jobs.retries": message.retries}
