"""Logs join traces, secrets stay out of logs, and spans leave over OTLP when configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import httpx
import pytest
from fastapi import APIRouter
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from maillage.common.http import create_app
from maillage.common.logging import get_logger
from maillage.common.settings import ServiceSettings

router = APIRouter()


@router.get("/hello")
async def hello() -> dict[str, str]:
    get_logger("test").info("saying hello", api_password="hunter2")
    return {"hello": "world"}


async def test_every_request_log_line_carries_the_request_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = ServiceSettings(
        service_name="observed",
        database_url="postgresql://maillage:s3cret@127.0.0.1/observed",
        log_format="json",
    )
    app = create_app(settings, title="t", description="t", routers=[router])
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/hello", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 200

    server_span = next(s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER)
    trace_id = format(server_span.context.trace_id, "032x")
    assert server_span.attributes is not None
    assert server_span.attributes["maillage.request_id"] == "req-42"  # a trace found by it
    stderr = capsys.readouterr().err
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    hello = next(line for line in lines if line["event"] == "saying hello")
    request = next(line for line in lines if line["event"] == "request")
    for line in (hello, request):
        assert line["trace_id"] == trace_id
        assert len(line["span_id"]) == 16
        assert line["service"] == "observed"
        assert line["request_id"] == "req-42"
    assert hello["api_password"] == "***"
    assert request["status"] == 200
    assert settings.loggable()["database_url"] == "postgresql://maillage:***@127.0.0.1/observed"
    assert "s3cret" not in repr(settings)


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_spans_are_exported_over_otlp_when_an_endpoint_is_set() -> None:
    """In a process of its own: the global tracer provider can be installed only once."""
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = (
        "from maillage.common.telemetry import configure_telemetry, shutdown_telemetry\n"
        "from opentelemetry import trace\n"
        "configure_telemetry('probe')\n"
        "with trace.get_tracer('t').start_as_current_span('otlp-probe-span'): pass\n"
        "shutdown_telemetry()\n"
    )
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
    try:
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    finally:
        server.shutdown()
    traces = [body for path, body in _Collector.received if path == "/v1/traces"]
    assert traces, _Collector.received
    assert b"otlp-probe-span" in traces[0]
    assert b"maillage-probe" in traces[0]  # service.name
