"""The backbone's OpenTelemetry metrics reach an OTLP collector with the right values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)


class _Collector(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/metrics":
            self.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def last_values(bodies: list[bytes]) -> dict[str, float]:
    """The latest value of each metric (sums and gauges) or count (histograms)."""
    values: dict[str, float] = {}
    for body in bodies:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    points = getattr(metric, kind).data_points
                    if kind == "histogram":
                        values[metric.name] = sum(point.count for point in points)
                    else:
                        values[metric.name] = sum(
                            point.as_int or point.as_double for point in points
                        )
    return values


def test_backbone_metrics_are_exported(
    database_url: str, kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    arguments = {
        "database_url": database_url,
        "bootstrap": kafka_bootstrap_servers,
        "workdir": str(tmp_path),
    }
    probe = Path(__file__).parent / "metrics_probe.py"
    try:
        subprocess.run(
            [sys.executable, str(probe), json.dumps(arguments)], env=env, check=True, timeout=120
        )
    finally:
        server.shutdown()
    values = last_values(_Collector.bodies)
    assert values["maillage.outbox.published"] == 3
    assert values["maillage.outbox.publish.latency"] == 3  # three measurements
    assert values["maillage.outbox.backlog"] == 0
    assert "maillage.outbox.oldest_unpublished_age" in values
    assert values["maillage.consumer.handler.duration"] >= 3
    assert values["maillage.consumer.duplicates"] == 1
    assert values["maillage.consumer.dead_letters"] == 1
