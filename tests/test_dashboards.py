"""deploy/grafana and deploy/prometheus without Grafana or Prometheus running.

Every dashboard query and alert expression parses with Prometheus's own parser (promql-parser);
the dashboards are what deploy/grafana/build_dashboards.py writes and valid Grafana dashboard
JSON. That they name only metrics the services really export is checked against a real OTLP
export in test_metrics_export.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from monitoring_queries import (
    ROOT,
    alert_queries,
    alert_rules,
    dashboard_files,
    dashboard_queries,
    panels,
    parse,
    reads,
)
from prometheus_names import prometheus_name

GRAFANA = ROOT / "deploy" / "grafana"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", GRAFANA / "build_dashboards.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def provisioned_uids() -> dict[str, str]:
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text(encoding="utf-8")
    )["datasources"]
    return {source["uid"]: source["type"] for source in sources}


def datasource_problems(dashboard: dict[str, Any], uids: dict[str, str]) -> list[str]:
    """Every data source reference (panel, target, variable) names a provisioned uid and type."""
    problems = []
    references = []
    for panel in panels(dashboard):
        references.append((f"panel {panel['id']}", panel.get("datasource")))
        references += [
            (f"panel {panel['id']}", t.get("datasource")) for t in panel.get("targets", [])
        ]
    for variable in dashboard.get("templating", {}).get("list", []):
        references.append((f"${variable['name']}", variable.get("datasource")))
    for where, reference in references:
        if reference is None:
            continue
        if reference.get("uid") not in uids:
            problems.append(f"{where}: data source uid {reference.get('uid')!r} not provisioned")
        elif uids[reference["uid"]] != reference.get("type"):
            problems.append(f"{where}: {reference['uid']} is a {uids[reference['uid']]}")
    return problems


def layout_problems(dashboard: dict[str, Any]) -> list[str]:
    problems = []
    ids = [panel["id"] for panel in panels(dashboard)]
    if len(ids) != len(set(ids)):
        problems.append(f"panel ids repeat: {sorted(ids)}")
    for panel in panels(dashboard):
        grid = panel.get("gridPos", {})
        if not {"x", "y", "w", "h"} <= set(grid) or grid["x"] + grid["w"] > 24:
            problems.append(f"panel {panel['id']}: gridPos {grid}")
        if panel["type"] not in ("row", "text") and not panel.get("targets"):
            problems.append(f"panel {panel['id']}: no query")
    return problems


def test_dashboards_are_what_the_builder_writes() -> None:
    rendered = _builder().render()
    assert sorted(rendered) == [path.name for path in dashboard_files()]
    for name, content in rendered.items():
        assert (GRAFANA / "dashboards" / name).read_text(encoding="utf-8") == content, (
            f"{name}: run .venv/bin/python deploy/grafana/build_dashboards.py"
        )


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.name)
def test_dashboard_is_valid_grafana_json(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 39  # Grafana 11 and later
    assert dashboard["uid"]
    assert len(dashboard["uid"]) <= 40
    assert dashboard["title"].startswith("Maillage")
    assert layout_problems(dashboard) == []
    assert datasource_problems(dashboard, provisioned_uids()) == []


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(path.read_text(encoding="utf-8"))["uid"] for path in dashboard_files()]
    assert len(uids) == len(set(uids))


def test_the_rules_catch_broken_dashboards() -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "backbone.json").read_text(encoding="utf-8"))
    dashboard["panels"][2]["id"] = dashboard["panels"][1]["id"]
    dashboard["panels"][1]["datasource"] = {"type": "prometheus", "uid": "nowhere"}
    assert layout_problems(dashboard)
    assert datasource_problems(dashboard, provisioned_uids())


def test_every_query_and_rule_parses() -> None:
    queries = dashboard_queries() + alert_queries()
    assert len(queries) > 20
    for query in queries:
        parse(query.expr)  # raises on a syntax error
        assert reads(query.expr).metrics, f"{query.where}: reads no metric"


def test_the_parser_refuses_broken_promql() -> None:
    with pytest.raises(ValueError, match="parenthesis"):
        parse("sum by (group (rate(x[5m]))")


def test_each_alert_has_a_severity_a_summary_and_a_runbook_paragraph() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert {
        "MaillageOutboxStale",
        "MaillageConsumerLagGrowing",
        "MaillageDeadLetter",
        "MaillageWebhookSuccessLow",
        "MaillageNotReady",
    } <= set(names)
    runbook = OPERATIONS_DOC.read_text(encoding="utf-8")
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert f"### {rule['alert']}" in runbook, f"docs/operations.md: no runbook for {rule}"
        assert f"docs/operations.md#{rule['alert'].lower()}" in rule["annotations"]["description"]


# ---- the name translation, on any OTLP name ----------------------------------------------------

OTLP_NAMES = st.from_regex(r"[a-z][a-z0-9_.\-/]{0,40}", fullmatch=True)
UNITS = st.sampled_from(["", "1", "s", "ms", "By", "{event}", "{request}", "By/s", "%"])
KINDS = st.sampled_from([("sum", True), ("sum", False), ("gauge", False), ("histogram", False)])


@settings(max_examples=200, deadline=None)
@given(name=OTLP_NAMES, unit=UNITS, kind=KINDS)
def test_every_translated_name_is_a_valid_prometheus_name(
    name: str, unit: str, kind: tuple[str, bool]
) -> None:
    translated = prometheus_name(name, unit, *kind)
    assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", translated), translated
    parse(translated)  # selectable as written
    assert translated.endswith("_total") == (kind == ("sum", True))
    # Translating the Prometheus name again adds nothing: suffixes already there are kept once.
    assert prometheus_name(translated, unit, *kind) == translated
