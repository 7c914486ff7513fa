"""OpenTelemetry: tracer and meter providers named after the service.

Spans and metrics are exported over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the
exporters read the standard ``OTEL_*`` variables themselves); otherwise they are still created, so
trace ids reach the logs and tests can attach an in-memory exporter.
"""

from __future__ import annotations

import os

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure_telemetry(service: str, version: str = "0.1.0") -> TracerProvider:
    """Install the global tracer and meter providers once per process and instrument libraries.

    Returns the tracer provider (tests add span processors to it). Calling it again in the same
    process returns the provider already installed: OpenTelemetry allows one global provider.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current

    resource = Resource.create({SERVICE_NAME: f"maillage-{service}", SERVICE_VERSION: version})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        # Imported here: the exporters pull in protobuf, which a process without OTLP skips.
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))

    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument()
    return tracer_provider


def shutdown_telemetry() -> None:
    """Flush pending spans and metrics (called when the service stops)."""
    tracer_provider = trace.get_tracer_provider()
    if isinstance(tracer_provider, TracerProvider):
        tracer_provider.force_flush()
    meter_provider = metrics.get_meter_provider()
    if isinstance(meter_provider, MeterProvider):
        meter_provider.force_flush()
