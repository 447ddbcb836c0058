"""OpenTelemetry: the enqueue span in the caller's trace, the run span in the worker as its
child, linked through the message headers (jobs.middleware.tracing)."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from jobs.conf import DEFAULT_MIDDLEWARE  # noqa: E402
from jobs.testing import running_worker  # noqa: E402
from project.demo import jobs as demo  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)
EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans(settings):
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    settings.JOBS = {**settings.JOBS, "MIDDLEWARE": [
        DEFAULT_MIDDLEWARE[0], "jobs.middleware.tracing.Tracing", *DEFAULT_MIDDLEWARE[1:]]}
    yield EXPORTER


def by_name(exporter) -> dict:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_the_run_span_is_a_child_of_the_enqueue_span_in_the_callers_trace(spans):
    with trace.get_tracer("test").start_as_current_span("GET /checkout"):
        handle = demo.add.delay(2, 3)
    with running_worker():
        assert handle.get(timeout=20) == 5
    found = by_name(spans)
    request, enqueue, run = (found["GET /checkout"], found[f"enqueue {demo.add.name}"],
                             found[f"run {demo.add.name}"])
    assert enqueue.parent.span_id == request.context.span_id
    assert run.parent.span_id == enqueue.context.span_id
    assert run.context.trace_id == request.context.trace_id
    assert (run.attributes["jobs.job_id"], run.attributes["jobs.outcome"]) == (handle.id,
                                                                               "succeeded")


def test_a_failed_run_is_an_error_span_with_the_exception(spans):
    handle = demo.fail.delay("bad input")
    with running_worker():
        with pytest.raises(ValueError):
            handle.get(timeout=20)
    run = by_name(spans)[f"run {demo.fail.name}"]
    assert run.status.status_code.name == "ERROR"
    assert any(event.name == "exception" for event in run.events)


def test_the_trace_header_is_signed_with_the_message(spans, settings):
    settings.JOBS = {**settings.JOBS, "SIGNING_KEYS": ["a long random key for the tests, 0123456789"]}
    with trace.get_tracer("test").start_as_current_span("GET /signed"):
        handle = demo.add.delay(1, 1)
    with running_worker():
        assert handle.get(timeout=20) == 2  # a forged message would be dead-lettered
    run = by_name(spans)[f"run {demo.add.name}"]
    assert run.context.trace_id == by_name(spans)["GET /signed"].context.trace_id
