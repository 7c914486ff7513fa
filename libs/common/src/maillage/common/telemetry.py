"""OpenTelemetry: tracer and meter providers named after the service, sampled at the head.

Spans and metrics are exported over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the
exporters read the standard ``OTEL_*`` variables themselves); otherwise they are still created, so
trace ids reach the logs and tests can attach an in-memory exporter.

What is recorded (docs/architecture.md decision 50, figures in docs/performance.md):

- **Parent-based sampling.** A trace is decided once, where it starts (an HTTP request without a
  ``traceparent``, an outbox row written outside any trace): kept with probability
  ``sample_ratio`` (the setting ``<SERVICE>_TRACE_SAMPLE_RATIO``). Every later span follows its
  parent's decision, which travels in the ``traceparent`` flags: HTTP headers, the outbox row's
  headers, the Kafka record's headers, a queued webhook delivery. A sampled request keeps its
  whole trace; an unsampled one leaves no span anywhere (its trace id still reaches the logs).
- **Failures always.** :func:`failure_span` records a dead letter or a failure even in an unsampled
  trace: as the root of a trace of its own, linked to the unsampled one (never a child of a span
  that was not exported: no orphans).
- **SQL statements only where they help.** asyncpg statements get a span only inside a recorded
  span (never a trace of their own), and never for transaction control (``BEGIN``, ``COMMIT``,
  ``ROLLBACK``, savepoints), advisory lock calls or the pool's reset on release: the unit of work's
  span (the HTTP request, the consumer's ``process`` span) already covers them.
- **An unsampled trace costs checks** (decisions 65 and 68): a child of an unsampled span is
  made without the sampler (:func:`start_child_span`), made current without ``use_span``'s
  generator (:func:`in_span`), and the outbox relay passes an unsampled ``traceparent`` on as
  it is (:func:`is_unsampled`).
- **Batch export sized for the load**: ``span_queue_size`` spans wait at most (the queue drops
  beyond), exported ``span_export_batch_size`` at a time.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

FORCED = "maillage.sampling.forced"
"""Attribute of a span recorded whatever the sampling ratio (a failure, a dead letter)."""

DEFAULT_SPAN_QUEUE_SIZE = 8192
DEFAULT_SPAN_EXPORT_BATCH_SIZE = 1024


class _RatioUnlessForced(Sampler):
    """Root sampler: a span carrying :data:`FORCED` is kept, the others with probability
    ``ratio`` (by trace id, so every service decides a given root trace the same way)."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self._by_ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if attributes and attributes.get(FORCED):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self._by_ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RatioUnlessForced{{{self.ratio}}}"


def sampler_for(ratio: float) -> Sampler:
    """Parent-based: a span with a parent follows the parent's decision (``traceparent`` flags);
    a root span is kept with probability ``ratio`` (0 to 1), or always when :data:`FORCED`."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"a sampling ratio is between 0 and 1, not {ratio}")
    return ParentBased(root=_RatioUnlessForced(ratio))


_DRAWN_TRACE_ID: ContextVar[int] = ContextVar("maillage_drawn_trace_id", default=0)


class DrawnTraceIds(RandomIdGenerator):
    """The SDK's random ids, except that a root span started where :func:`use_drawn_trace_id`
    left a trace id takes that one (once). A request's sampling can so be decided before its
    span exists, on the trace id the span will have (decision 70)."""

    def generate_trace_id(self) -> int:
        drawn = _DRAWN_TRACE_ID.get()
        if drawn:
            _DRAWN_TRACE_ID.set(0)
            return drawn
        return super().generate_trace_id()


def use_drawn_trace_id(trace_id: int) -> Any:
    """The next root span started in this context takes ``trace_id`` (see
    :class:`DrawnTraceIds`); returns the token to give :func:`forget_drawn_trace_id`."""
    return _DRAWN_TRACE_ID.set(trace_id)


def forget_drawn_trace_id(token: Any) -> None:
    _DRAWN_TRACE_ID.reset(token)


# Statements that say nothing an operator needs: transaction control, advisory locks (alone in
# their statement), the pool's reset on release (``SELECT pg_advisory_unlock_all(); ...``).
_BOOKKEEPING = re.compile(
    r"""^\s*(?:/\*.*?\*/\s*)?(?:
        (?:BEGIN|COMMIT|ROLLBACK|END|ABORT|SAVEPOINT|RELEASE|START\s+TRANSACTION)\b
      | SELECT\s+pg_(?:try_)?advisory_(?:xact_)?(?:lock|unlock)\w*\s*\([^;]*\)\s*;?\s*$
      | SELECT\s+pg_advisory_unlock_all\s*\(\s*\)
    )""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


def is_bookkeeping(query: object) -> bool:
    """True for a statement that gets no span of its own: transaction control, a lone advisory
    lock call, the pool's reset."""
    return isinstance(query, str) and _BOOKKEEPING.match(query) is not None


class StatementInstrumentor(AsyncPGInstrumentor):
    """asyncpg's instrumentation, with a span per statement only inside a recorded span and
    never for :func:`is_bookkeeping` statements.

    The wrappers are plain functions: outside a recorded span they hand back asyncpg's own
    coroutine, so an unsampled statement costs one check, not one more coroutine frame resumed
    at every step of the statement (decision 65)."""

    def _do_execute(self, func: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not trace.get_current_span().is_recording() or (args and is_bookkeeping(args[0])):
            return func(*args, **kwargs)
        return super()._do_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]

    def _do_cursor_execute(
        self, func: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        if not trace.get_current_span().is_recording():
            return func(*args, **kwargs)
        return super()._do_cursor_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]

    def _do_prepared_execute(
        self, func: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        if not trace.get_current_span().is_recording():
            return func(*args, **kwargs)
        return super()._do_prepared_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]


def start_child_span(
    tracer: trace.Tracer,
    name: str,
    parent: otel_context.Context,
    kind: SpanKind,
    attributes: Callable[[], Attributes],
) -> trace.Span:
    """A span under ``parent`` (a context extracted from ``traceparent``), its attributes built
    only when it is recorded. When the parent is known and not sampled, parent-based sampling
    drops the child anyway: this skips the sampler and the attributes and returns the
    non-recording span the SDK would (same trace and flags, a span id of its own, so the logs
    and the ``traceparent`` sent on are what they were). Decision 65."""
    parent_context = trace.get_current_span(parent).get_span_context()
    if parent_context.is_valid and not parent_context.trace_flags.sampled:
        return trace.NonRecordingSpan(
            trace.SpanContext(
                parent_context.trace_id,
                _span_id(),
                is_remote=False,
                trace_flags=parent_context.trace_flags,
                trace_state=parent_context.trace_state,
            )
        )
    return tracer.start_span(name, context=parent, kind=kind, attributes=attributes())


class _Current:
    """Makes a span the current one for a block, nothing else (see :func:`in_span`)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *_exc: object) -> None:
        otel_context.detach(self._token)


def in_span(
    span: trace.Span,
    *,
    end_on_exit: bool = False,
    record_exception: bool = True,
    set_status_on_exception: bool = True,
) -> AbstractContextManager[trace.Span]:
    """``trace.use_span`` for a recorded span. A non-recording one (99 events in 100 at the
    production ratio) records no exception or status and ends as a no-op, so it is only made
    current, without ``use_span``'s generator: a third of its cost (decision 68)."""
    if span.is_recording():
        return trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        )
    return _Current(span)


# A W3C traceparent of version 00 with valid ids: its flags (the last two digits) say whether the
# trace is sampled.
_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-([0-9a-f]{2})")


def is_unsampled(headers: Mapping[str, str]) -> bool:
    """True when ``headers`` carry a valid ``traceparent`` of a trace that is not sampled: a
    component that would only add a non-recording span to it can pass the headers on as they
    are (the outbox relay, decision 68). False without one, or for anything it cannot read."""
    value = headers.get("traceparent")
    if not isinstance(value, str):
        return False
    match = _TRACEPARENT.fullmatch(value)
    return match is not None and not int(match.group(1), 16) & 1


def _span_id() -> int:
    span_id = random.getrandbits(64)
    while span_id == trace.INVALID_SPAN_ID:
        span_id = random.getrandbits(64)
    return span_id


def configure_telemetry(
    service: str,
    version: str = "0.1.0",
    *,
    sample_ratio: float = 1.0,
    span_queue_size: int = DEFAULT_SPAN_QUEUE_SIZE,
    span_export_batch_size: int = DEFAULT_SPAN_EXPORT_BATCH_SIZE,
) -> TracerProvider:
    """Install the global tracer and meter providers once per process and instrument libraries.

    ``sample_ratio`` (0 to 1) is the share of root traces kept (see the module docstring);
    ``span_queue_size`` and ``span_export_batch_size`` size the OTLP batch span processor
    (the export waits ``OTEL_BSP_SCHEDULE_DELAY`` ms, 5,000 by default, or a full batch).
    Returns the tracer provider (tests add span processors to it). Calling it again in the same
    process returns the provider already installed: OpenTelemetry allows one global provider.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    # The stable HTTP semantic conventions: http.server.request.duration in seconds, labelled
    # http.route, http.request.method and http.response.status_code (the dashboards read these),
    # instead of the instrumentations' default, the older http.server.duration in milliseconds.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")

    resource = Resource.create({SERVICE_NAME: f"maillage-{service}", SERVICE_VERSION: version})
    tracer_provider = TracerProvider(
        resource=resource, sampler=sampler_for(sample_ratio), id_generator=DrawnTraceIds()
    )
    readers: list[MetricReader] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        # Imported here: the exporters pull in protobuf, which a process without OTLP skips.
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(),
                max_queue_size=span_queue_size,
                max_export_batch_size=min(span_export_batch_size, span_queue_size),
            )
        )
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))

    StatementInstrumentor().instrument()  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument()
    return tracer_provider


@contextmanager
def failure_span(
    name: str,
    *,
    parent: otel_context.Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[trace.Span]:
    """A span that is recorded whatever the sampling: a dead letter, a failure an operator must
    find. Under ``parent`` (default: the current context) when that trace is sampled; otherwise
    the root of a trace of its own with a link to the unsampled span (its trace id is the one in
    the logs), so no exported span ever points at a parent that was not exported."""
    context = parent if parent is not None else otel_context.get_current()
    parent_span = trace.get_current_span(context).get_span_context()
    tracer = trace.get_tracer("maillage.telemetry")
    if parent_span.is_valid and parent_span.trace_flags.sampled:
        with tracer.start_as_current_span(
            name, context=context, kind=kind, attributes=dict(attributes or {})
        ) as span:
            yield span
        return
    with tracer.start_as_current_span(
        name,
        context=otel_context.Context(),  # a new root
        kind=kind,
        attributes={**(attributes or {}), FORCED: True},
        links=[Link(parent_span)] if parent_span.is_valid else None,
    ) as span:
        yield span


def record_failure(
    name: str, error: BaseException, *, attributes: Mapping[str, Any] | None = None
) -> None:
    """A :func:`failure_span` holding ``error`` (its exception event and an ERROR status)."""
    with failure_span(name, attributes=attributes) as span:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:300]))


def shutdown_telemetry() -> None:
    """Flush pending spans and metrics (called when the service stops)."""
    tracer_provider = trace.get_tracer_provider()
    if isinstance(tracer_provider, TracerProvider):
        tracer_provider.force_flush()
    meter_provider = metrics.get_meter_provider()
    if isinstance(meter_provider, MeterProvider):
        meter_provider.force_flush()
