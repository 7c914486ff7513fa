"""Writes the Grafana dashboards of deploy/grafana/dashboards/ (committed JSON, provisioned).

    .venv/bin/python deploy/grafana/build_dashboards.py

Edit the panels here, run it, commit both: tests/test_dashboards.py checks the JSON files are
exactly what this script writes, that every query parses as PromQL and names only metrics the
services export, and that the dashboards are valid (schema version, unique panel ids, data source
uids that exist in provisioning/datasources/datasources.yaml).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).parent
OUT = HERE / "dashboards"
SCHEMA_VERSION = 41  # Grafana 12's dashboard JSON model
PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
JAEGER = {"type": "jaeger", "uid": "jaeger"}
WIDTH = 24  # the grid's columns

Panel = dict[str, Any]


def jaeger_link(service: str, operation: str = "") -> dict[str, Any]:
    """A panel link to Grafana Explore, Jaeger data source, searching the service's traces."""
    query: dict[str, Any] = {
        "refId": "A",
        "datasource": JAEGER,
        "queryType": "search",
        "service": service,
    }
    if operation:
        query["operation"] = operation
    panes = {"traces": {"datasource": JAEGER["uid"], "queries": [query]}}
    encoded = quote(json.dumps(panes, separators=(",", ":")), safe="${}")
    return {
        "title": f"Traces of {service} in Jaeger",
        "url": f"/explore?schemaVersion=1&panes={encoded}",
        "targetBlank": True,
    }


class Layout:
    """Places panels left to right, rows of 24 columns; numbers them from 1."""

    def __init__(self) -> None:
        self.panels: list[Panel] = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def add(self, panel: Panel, w: int = 12, h: int = 8) -> None:
        if self.x + w > WIDTH:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, w=WIDTH, h=1)
        self.x, self.y, self.row_height = 0, self.y + 1, 0


def _targets(queries: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"refId": chr(ord("A") + i), "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend}
        for i, (expr, legend) in enumerate(queries)
    ]


def timeseries(
    title: str,
    queries: list[tuple[str, str]],
    unit: str,
    description: str,
    links: list[dict[str, Any]] | None = None,
) -> Panel:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "targets": _targets(queries),
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "links": links or [],
    }


def stat(
    title: str,
    expr: str,
    unit: str,
    description: str,
    thresholds: list[tuple[float | None, str]] | None = None,
) -> Panel:
    steps = [{"value": value, "color": color} for value, color in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "targets": _targets([(expr, "")]),
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
    }


def text(title: str, content: str) -> Panel:
    return {"type": "text", "title": title, "options": {"mode": "markdown", "content": content}}


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROMETHEUS,
        "query": {"query": query, "refId": "variable"},
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def dashboard(
    uid: str, title: str, description: str, layout: Layout, variables: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["maillage"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [],
        "panels": layout.panels,
    }


RED = [(None, "green"), (1, "red")]


def backbone() -> dict[str, Any]:
    page = Layout()
    page.row("Outbox (publishing)")
    page.add(
        timeseries(
            "Outbox backlog",
            [("max by (service) (maillage_outbox_backlog)", "{{service}}")],
            "short",
            "Events written but not yet acknowledged by Kafka, per service.",
        )
    )
    page.add(
        timeseries(
            "Oldest unpublished event",
            [("max by (service) (maillage_outbox_oldest_unpublished_age_seconds)", "{{service}}")],
            "s",
            "Alert MaillageOutboxStale above 60 s.",
        )
    )
    page.add(
        timeseries(
            "Publish rate",
            [("sum by (service) (rate(maillage_outbox_published_total[5m]))", "{{service}}")],
            "ops",
            "Events per second acknowledged by Kafka.",
        )
    )
    page.add(
        timeseries(
            "Publish latency p95",
            [
                (
                    "histogram_quantile(0.95, sum by (le, topic) "
                    "(rate(maillage_outbox_publish_latency_seconds_bucket[5m])))",
                    "{{topic}}",
                )
            ],
            "s",
            "From the outbox insert to the broker's acknowledgement.",
        )
    )
    page.row("Consumers")
    page.add(
        timeseries(
            "Consumer lag",
            [
                (
                    'sum by (group) (max by (group, topic, partition) (maillage_consumer_lag{group=~"$group"}))',
                    "{{group}}",
                )
            ],
            "short",
            "End offset minus committed offset, summed over partitions. Alert "
            "MaillageConsumerLagGrowing when it grows for 5 minutes.",
        ),
        w=24,
    )
    page.add(
        timeseries(
            "Handler duration p95",
            [
                (
                    "histogram_quantile(0.95, sum by (le, group) (rate("
                    'maillage_consumer_handler_duration_seconds_bucket{group=~"$group"}[5m])))',
                    "{{group}}",
                )
            ],
            "s",
            "Inbox transaction and handler, per event.",
            links=[jaeger_link("$service")],
        )
    )
    page.add(
        timeseries(
            "Events handled",
            [
                (
                    "sum by (group, outcome) (rate("
                    'maillage_consumer_handler_duration_seconds_count{group=~"$group"}[5m]))',
                    "{{group}} {{outcome}}",
                )
            ],
            "ops",
            "Per second, by outcome.",
        )
    )
    page.add(
        timeseries(
            "Duplicates skipped",
            [
                (
                    'sum by (group) (rate(maillage_consumer_duplicates_total{group=~"$group"}[5m]))',
                    "{{group}}",
                )
            ],
            "ops",
            "Events already applied (redeliveries made harmless by the inbox).",
        )
    )
    page.add(
        timeseries(
            "Dead letters (last hour)",
            [
                (
                    'sum by (group) (increase(maillage_consumer_dead_letters_total{group=~"$group"}[1h]))',
                    "{{group}}",
                )
            ],
            "short",
            "Events sent to dlq.<group>. Alert MaillageDeadLetter on any; replay with "
            "`maillage dlq replay`. A dead letter's trace is always recorded.",
            links=[jaeger_link("$service")],
        )
    )
    return dashboard(
        "maillage-backbone",
        "Maillage · event backbone",
        "Outbox, consumer lag, handlers, duplicates and dead letters of every service.",
        page,
        [
            variable("group", "Consumer group", "label_values(maillage_consumer_lag, group)"),
            variable("service", "Service", "label_values(maillage_service_ready, service_name)"),
        ],
    )


HTTP_SELECTOR = 'service_name=~"$service"'


def http() -> dict[str, Any]:
    page = Layout()
    page.add(
        timeseries(
            "Requests per second",
            [
                (
                    f"sum by (service_name, http_route) (rate(http_server_request_duration_seconds_count{{{HTTP_SELECTOR}}}[5m]))",
                    "{{service_name}} {{http_route}}",
                )
            ],
            "reqps",
            "Per service and route template (http.route).",
            links=[jaeger_link("$service")],
        ),
        w=24,
    )
    page.add(
        timeseries(
            "Server errors (5xx) ratio",
            [
                (
                    f'sum by (service_name, http_route) (rate(http_server_request_duration_seconds_count{{{HTTP_SELECTOR}, http_response_status_code=~"5.."}}[5m]))'
                    f" / sum by (service_name, http_route) (rate(http_server_request_duration_seconds_count{{{HTTP_SELECTOR}}}[5m]))",
                    "{{service_name}} {{http_route}}",
                )
            ],
            "percentunit",
            "Share of answers that are 5xx (a problem+json 500 or 503).",
            links=[jaeger_link("$service")],
        )
    )
    page.add(
        timeseries(
            "Client errors (4xx) per second",
            [
                (
                    f'sum by (service_name, http_response_status_code) (rate(http_server_request_duration_seconds_count{{{HTTP_SELECTOR}, http_response_status_code=~"4.."}}[5m]))',
                    "{{service_name}} {{http_response_status_code}}",
                )
            ],
            "reqps",
            "Refused requests: authentication, validation, conflicts.",
        )
    )
    page.add(
        timeseries(
            "Duration p95 per route",
            [
                (
                    f"histogram_quantile(0.95, sum by (le, service_name, http_route) (rate(http_server_request_duration_seconds_bucket{{{HTTP_SELECTOR}}}[5m])))",
                    "{{service_name}} {{http_route}}",
                )
            ],
            "s",
            "95th percentile of http.server.request.duration.",
            links=[jaeger_link("$service")],
        )
    )
    page.add(
        timeseries(
            "Duration p50 per route",
            [
                (
                    f"histogram_quantile(0.5, sum by (le, service_name, http_route) (rate(http_server_request_duration_seconds_bucket{{{HTTP_SELECTOR}}}[5m])))",
                    "{{service_name}} {{http_route}}",
                )
            ],
            "s",
            "Median of http.server.request.duration.",
        )
    )
    page.add(
        timeseries(
            "Readiness checks",
            [("min by (service, check) (maillage_service_ready)", "{{service}} {{check}}")],
            "short",
            "1 ready, 0 failing (the checks of /readyz). Alert MaillageNotReady after 2 minutes.",
        ),
        w=24,
    )
    return dashboard(
        "maillage-http",
        "Maillage · HTTP",
        "Rate, errors and duration per service and route; readiness.",
        page,
        [
            variable(
                "service",
                "Service",
                "label_values(http_server_request_duration_seconds_count, service_name)",
            )
        ],
    )


def webhooks_and_mail() -> dict[str, Any]:
    page = Layout()
    attempts = "maillage_webhook_deliveries_total"
    page.add(
        stat(
            "Webhook success (15 min)",
            f'sum(rate({attempts}{{outcome="delivered"}}[15m])) / sum(rate({attempts}[15m]))',
            "percentunit",
            "Attempts answered 2xx. Alert MaillageWebhookSuccessLow below 90 %.",
            [(None, "red"), (0.9, "green")],
        ),
        w=6,
    )
    page.add(
        stat(
            "Disabled endpoints",
            "max(maillage_webhook_endpoints_disabled)",
            "short",
            "410 Gone, failing for too long, or disabled by their partner.",
            RED,
        ),
        w=6,
    )
    page.add(
        stat(
            "Deliveries waiting",
            "max(maillage_webhook_deliveries_pending)",
            "short",
            "Webhook deliveries waiting for their next attempt.",
        ),
        w=6,
    )
    page.add(
        stat(
            "Mail pending",
            "max(maillage_mail_pending)",
            "short",
            "E-mails not sent yet, retries included.",
        ),
        w=6,
    )
    page.add(
        timeseries(
            "Webhook attempts by outcome",
            [(f"sum by (outcome) (rate({attempts}[5m]))", "{{outcome}}")],
            "ops",
            "delivered, retry (another attempt scheduled), failed (schedule exhausted), disabled.",
            links=[jaeger_link("maillage-notifications", "webhook attempt")],
        )
    )
    page.add(
        timeseries(
            "Webhook attempt latency",
            [
                (
                    "histogram_quantile(0.95, sum by (le) "
                    "(rate(maillage_webhook_attempt_duration_seconds_bucket[5m])))",
                    "p95",
                ),
                (
                    "histogram_quantile(0.5, sum by (le) "
                    "(rate(maillage_webhook_attempt_duration_seconds_bucket[5m])))",
                    "p50",
                ),
            ],
            "s",
            "Connection, request and reading the answer of one attempt.",
            links=[jaeger_link("maillage-notifications", "webhook attempt")],
        )
    )
    page.add(
        timeseries(
            "Webhook retries per second",
            [(f'sum(rate({attempts}{{outcome="retry"}}[5m]))', "retries")],
            "ops",
            "Attempts that failed and were rescheduled.",
        )
    )
    page.add(
        timeseries(
            "Mail attempts by outcome",
            [("sum by (outcome) (rate(maillage_mail_attempts_total[5m]))", "{{outcome}}")],
            "ops",
            "sent, retry (server unavailable), failed (refused for good).",
        )
    )
    return dashboard(
        "maillage-webhooks-mail",
        "Maillage · webhooks and mail",
        "What partners receive: webhook success, latency, retries, disabled endpoints, mail.",
        page,
        [],
    )


def programmes() -> dict[str, Any]:
    # Domain gauges: every replica reads the same database, so series are combined with max.
    page = Layout()
    page.row("Cordées de la réussite")
    paired = "max by (priority) (maillage_cordees_pairings_active)"
    waiting = "max by (priority) (maillage_cordees_requests_waiting)"
    page.add(
        timeseries(
            "Coverage by priority class",
            [(f"{paired} / ({paired} + {waiting})", "{{priority}}")],
            "percentunit",
            "Schools paired among schools asking (paired + waiting), REP+ first by the rules.",
        ),
        w=24,
    )
    page.add(
        stat("Open offers", "max(maillage_cordees_offers_open)", "short", "Open cordée offers."),
        w=6,
    )
    page.add(
        stat(
            "Open places",
            "max(maillage_cordees_places_open)",
            "short",
            "Capacity of open offers minus their active pairings.",
        ),
        w=6,
    )
    page.add(
        timeseries(
            "Requests waiting by priority class",
            [(waiting, "{{priority}}")],
            "short",
            "Requested, proposed or unmatched.",
        )
    )
    page.row("Stages de 3e")
    page.add(
        timeseries(
            "Seats in the weeks to come",
            [("max by (state) (maillage_stages3e_seats)", "{{state}}")],
            "short",
            "Seats of published offers from this week on: free, or held by an accepted or "
            "confirmed application.",
        ),
        w=18,
    )
    page.add(
        stat(
            "Published offers",
            "max(maillage_stages3e_offers_published)",
            "short",
            "Offers collèges can find.",
        ),
        w=6,
    )
    page.row("Funding (programme 147)")
    envelope = "by (departement, year)"
    page.add(
        timeseries(
            "AE left per envelope",
            [
                (
                    f"max {envelope} (maillage_funding_envelope_ae_left) / 100",
                    "{{departement}} {{year}}",
                )
            ],
            "currencyEUR",
            "Autorisations d'engagement not engaged yet (delegated minus conventions signed).",
        )
    )
    page.add(
        timeseries(
            "CP left per envelope",
            [
                (
                    f"max {envelope} (maillage_funding_envelope_cp_left) / 100",
                    "{{departement}} {{year}}",
                )
            ],
            "currencyEUR",
            "Crédits de paiement not paid yet (delegated minus tranches paid).",
        )
    )
    page.add(
        timeseries(
            "Envelopes consumed",
            [
                (
                    f"1 - max {envelope} (maillage_funding_envelope_ae_left) / max {envelope} (maillage_funding_envelope_ae)",
                    "AE {{departement}} {{year}}",
                ),
                (
                    f"1 - max {envelope} (maillage_funding_envelope_cp_left) / max {envelope} (maillage_funding_envelope_cp)",
                    "CP {{departement}} {{year}}",
                ),
            ],
            "percentunit",
            "Share of each envelope engaged (AE) and paid (CP).",
        ),
        w=24,
    )
    return dashboard(
        "maillage-programmes",
        "Maillage · programmes",
        "Cordées coverage of REP+ and REP, offers and places; stage seats; funding envelopes.",
        page,
        [],
    )


DASHBOARDS = {
    "backbone.json": backbone,
    "http.json": http,
    "webhooks-and-mail.json": webhooks_and_mail,
    "programmes.json": programmes,
}


def render() -> dict[str, str]:
    """File name → the JSON text this script writes."""
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Write deploy/grafana/dashboards/*.json.")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a dashboard is stale"
    )
    if parser.parse_args(arguments).check:
        stale = [
            n
            for n, c in render().items()
            if not (OUT / n).exists() or (OUT / n).read_text(encoding="utf-8") != c
        ]
        if stale:
            print(
                f"out of date: {', '.join(stale)}; run deploy/grafana/build_dashboards.py",
                file=sys.stderr,
            )
        return 1 if stale else 0
    OUT.mkdir(exist_ok=True)
    for name, content in render().items():
        (OUT / name).write_text(content, encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
