"""Operations metrics reach an OTLP collector from running services (issue 12, "done when").

cordees, notifications, stages3e and funding run in a process of their own
(metrics_export_probe.py) with OTLP export to a sink in this process; every metric the
dashboards and alert rules name must be in that real export, translated to the names the
collector's Prometheus exporter writes (prometheus_names.py), with the labels they select and
group by.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jwt_fixtures import JWKSServer, SigningKey
from monitoring_queries import alert_queries, dashboard_queries, label_values_labels, reads
from otlp_sink import ExportedMetric, OtlpSink
from prometheus_names import escape, prometheus_name, series_names

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import drop_database, ensure_database

PROBE = Path(__file__).parent / "metrics_export_probe.py"
pytestmark = pytest.mark.slow


async def export_from_services(
    postgres_server_url: str, bootstrap: str, jwks_url: str
) -> list[ExportedMetric]:
    names = {
        f"{service}_db": f"metrics_{service}"
        for service in ("cordees", "notifications", "stages3e", "funding")
    }
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


@pytest.fixture(scope="module")
async def exported_metrics(
    postgres_server_url: str,
    kafka_bootstrap_servers: str,
    jwks: tuple[JWKSServer, SigningKey],
) -> list[ExportedMetric]:
    """What the four services export over OTLP in one real run."""
    server, _ = jwks
    return await export_from_services(postgres_server_url, kafka_bootstrap_servers, server.url)


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
    "maillage.stages3e.seats": ("gauge", "{seat}", {"service", "state"}),
    "maillage.stages3e.offers.published": ("gauge", "{offer}", {"service"}),
    "maillage.funding.envelope.ae_left": ("gauge", "{cent}", {"service", "departement", "year"}),
    "maillage.funding.envelope.cp_left": ("gauge", "{cent}", {"service", "departement", "year"}),
    "maillage.funding.envelope.ae": ("gauge", "{cent}", {"service", "departement", "year"}),
    "maillage.funding.envelope.cp": ("gauge", "{cent}", {"service", "departement", "year"}),
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


# Labels every series gets from the exporter: the resource's attributes
# (resource_to_telemetry_conversion in deploy/otel-collector.yaml), job and instance.
RESOURCE_LABELS = {"job", "instance", "service_name", "service_version"}


def prometheus_series(exported: list[ExportedMetric]) -> dict[str, set[str]]:
    """Series name → label names, as Prometheus stores the export."""
    series: dict[str, set[str]] = {}
    for metric in by_name(exported).values():
        labels = {escape(label) for label in metric.labels} | RESOURCE_LABELS
        for name in series_names(metric.name, metric.unit, metric.kind, metric.monotonic):
            series[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    return series


def test_dashboards_and_alerts_name_only_exported_metrics(
    exported_metrics: list[ExportedMetric],
) -> None:
    series = prometheus_series(exported_metrics)
    for query in dashboard_queries() + alert_queries():
        read = reads(query.expr)
        for metric, labels in read.metrics.items():
            assert metric in series, f"{query.where}: {metric} is not exported"
            assert labels <= series[metric], f"{query.where}: {metric} has no {labels}"
        for grouping, metrics in read.grouping:
            available = set().union(*(series[metric] for metric in metrics))
            assert grouping <= available, f"{query.where}: by {grouping} of {metrics}"
    for where, selector, label in label_values_labels():
        metric = next(iter(reads(selector).metrics))
        assert label in series[metric], f"{where}: {metric} has no label {label}"
