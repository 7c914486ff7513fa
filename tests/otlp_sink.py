"""A minimal OTLP/HTTP collector for end-to-end tests: keeps every span and metric exported."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int


@dataclass(frozen=True)
class ExportedMetric:
    """One metric of one export: what a Prometheus exporter needs to name it."""

    service: str
    name: str
    unit: str
    kind: str  # the OTLP data field: sum, gauge, histogram, exponential_histogram, summary
    monotonic: bool  # sums only: a counter (True) or an up-down counter (False)
    labels: frozenset[str]  # attribute keys of its data points


class OtlpSink:
    """``OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint``; ``sink.spans`` and ``sink.metrics`` grow
    as services export."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.metrics: list[ExportedMetric] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces":
                    sink._keep(body)
                elif self.path == "/v1/metrics":
                    sink._keep_metrics(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _keep(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource in request.resource_spans:
            service = next(
                (
                    attribute.value.string_value
                    for attribute in resource.resource.attributes
                    if attribute.key == "service.name"
                ),
                "",
            )
            for scope in resource.scope_spans:
                for span in scope.spans:
                    spans.append(
                        ExportedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                        )
                    )
        with self._lock:
            self.spans.extend(spans)

    def _keep_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        kept = []
        for resource in request.resource_metrics:
            service = next(
                (
                    attribute.value.string_value
                    for attribute in resource.resource.attributes
                    if attribute.key == "service.name"
                ),
                "",
            )
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data") or ""
                    data = getattr(metric, kind)
                    labels = frozenset(
                        attribute.key
                        for point in data.data_points
                        for attribute in point.attributes
                    )
                    monotonic = kind == "sum" and data.is_monotonic
                    kept.append(
                        ExportedMetric(service, metric.name, metric.unit, kind, monotonic, labels)
                    )
        with self._lock:
            self.metrics.extend(kept)

    def trace(self, trace_id: str) -> list[ExportedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
