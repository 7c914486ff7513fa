"""Operations metrics reach an OTLP collector from running services (issue 12, "done when").

cordees and notifications run in a process of their own (metrics_export_probe.py) with OTLP
export to a sink in this process; every metric the dashboards and alert rules name must be in
that real export (tests/test_dashboards.py reads ``exported_series`` through the fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from otlp_sink import ExportedMetric, OtlpSink
from prometheus_names import prometheus_name, series_names

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import drop_database, ensure_database

PROBE = Path(__file__).parent / "metrics_export_probe.py"
pytestmark = pytest.mark.slow


async def export_from_services(
    postgres_server_url: str, bootstrap: str, jwks_url: str
) -> list[ExportedMetric]:
    names = {"cordees_db": "metrics_cordees", "notifications_db": "metrics_notifications"}
    for name in names.values():
        await drop_database(postgres_server_url, name)
        await ensure_database(postgres_server_url, name)
    arguments = {key: database_url_for(postgres_server_url, name) for key, name in names.items()}
    arguments |= {"bootstrap": bootstrap, "jwks_url": jwks_url}
    try:
        with OtlpSink() as sink:
            env = {
                **os.environ,
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
                "OTEL_METRIC_EXPORT_INTERVAL": "300",
            }
            subprocess.run(
                [sys.executable, str(PROBE), json.dumps(arguments)],
                env=env,
                check=True,
                timeout=240,
            )
            return list(sink.metrics)
    finally:
        for name in names.values():
            await drop_database(postgres_server_url, name)


def by_name(exported: list[ExportedMetric]) -> dict[str, ExportedMetric]:
    """One metric per name, with the union of its labels over every export."""
    merged: dict[str, ExportedMetric] = {}
    for metric in exported:
        known = merged.get(metric.name)
        labels = metric.labels | (known.labels if known else frozenset())
        merged[metric.name] = ExportedMetric(
            metric.service, metric.name, metric.unit, metric.kind, metric.monotonic, labels
        )
    return merged


EXPECTED = {
    # name: (kind, unit, labels it must carry)
    "http.server.request.duration": (
        "histogram",
        "s",
        {"http.route", "http.request.method", "http.response.status_code"},
    ),
    "maillage.consumer.lag": ("gauge", "{message}", {"group", "topic", "partition"}),
    "maillage.service.ready": ("gauge", "", {"service", "check"}),
    "maillage.outbox.published": ("sum", "{event}", {"service"}),
    "maillage.outbox.backlog": ("gauge", "{event}", {"service"}),
    "maillage.outbox.oldest_unpublished_age": ("gauge", "s", {"service"}),
    "maillage.consumer.handler.duration": ("histogram", "s", {"group", "type", "outcome"}),
    "maillage.consumer.duplicates": ("sum", "{event}", {"group", "type"}),
    "maillage.consumer.dead_letters": ("sum", "{event}", {"group"}),
    "maillage.webhook.deliveries": ("sum", "{attempt}", {"outcome"}),
    "maillage.webhook.attempt.duration": ("histogram", "s", {"outcome"}),
    "maillage.webhook.endpoints.disabled": ("gauge", "{endpoint}", {"service"}),
    "maillage.webhook.deliveries.pending": ("gauge", "{delivery}", {"service"}),
    "maillage.mail.attempts": ("sum", "{mail}", {"outcome"}),
    "maillage.mail.pending": ("gauge", "{mail}", {"service"}),
    "maillage.cordees.offers.open": ("gauge", "{offer}", {"service"}),
    "maillage.cordees.places.open": ("gauge", "{place}", {"service"}),
    "maillage.cordees.requests.waiting": ("gauge", "{request}", {"service", "priority"}),
    "maillage.cordees.pairings.active": ("gauge", "{pairing}", {"service", "priority"}),
}


def test_services_export_the_operations_metrics(exported_metrics: list[ExportedMetric]) -> None:
    metrics = by_name(exported_metrics)
    for name, (kind, unit, labels) in EXPECTED.items():
        assert name in metrics, f"{name} not exported (got {sorted(metrics)})"
        metric = metrics[name]
        assert (metric.kind, metric.unit) == (kind, unit), name
        assert labels <= metric.labels, f"{name}: labels {sorted(metric.labels)}"
    assert "http.server.duration" not in metrics  # the old convention, in milliseconds


def test_prometheus_names_follow_the_collector() -> None:
    assert (
        prometheus_name("http.server.request.duration", "s", "histogram", False)
        == "http_server_request_duration_seconds"
    )
    assert (
        prometheus_name("maillage.outbox.published", "{event}", "sum", True)
        == "maillage_outbox_published_total"
    )
    assert prometheus_name("maillage.service.ready", "", "gauge", False) == (
        "maillage_service_ready"
    )
    assert prometheus_name("x.ratio", "1", "gauge", False) == "x_ratio"
    assert prometheus_name("x.up", "1", "gauge", False) == "x_up_ratio"
    assert prometheus_name("maillage.consumer.lag", "{message}", "gauge", False) == (
        "maillage_consumer_lag"
    )
    assert series_names("maillage.webhook.attempt.duration", "s", "histogram", False) == {
        "maillage_webhook_attempt_duration_seconds_bucket",
        "maillage_webhook_attempt_duration_seconds_sum",
        "maillage_webhook_attempt_duration_seconds_count",
    }
