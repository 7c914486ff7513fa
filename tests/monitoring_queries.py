"""The PromQL of deploy/: every query of the Grafana dashboards and of the Prometheus alert
rules, and what each one reads (metric names, label names), from Prometheus's own parser."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

# Grafana replaces these before Prometheus sees the query; a label value is any string.
_VARIABLE = re.compile(r"\$(\{[a-zA-Z_][a-zA-Z0-9_:]*\}|[a-zA-Z_][a-zA-Z0-9_]*)")
_LABEL_VALUES = re.compile(
    r"^label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$"
)


@dataclass(frozen=True)
class Query:
    where: str  # "backbone.json panel 3 A", "alerts.yml MaillageDeadLetter"
    expr: str


@dataclass
class Reads:
    """What one expression reads: metric → label names it matches on; grouping labels."""

    metrics: dict[str, set[str]] = field(default_factory=dict)
    grouping: list[tuple[set[str], set[str]]] = field(default_factory=list)  # (labels, metrics)


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries() -> list[Query]:
    queries = []
    for path in dashboard_files():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                if "expr" in target:
                    where = f"{path.name} panel {panel['id']} {target['refId']}"
                    queries.append(Query(where, target["expr"]))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable["query"]
                text = query["query"] if isinstance(query, dict) else query
                match = _LABEL_VALUES.match(text)
                assert match, f"{path.name} ${variable['name']}: only label_values(selector, label)"
                queries.append(Query(f"{path.name} ${variable['name']}", match["selector"]))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def alert_queries() -> list[Query]:
    return [Query(f"alerts.yml {rule['alert']}", rule["expr"]) for rule in alert_rules()]


def label_values_labels() -> list[tuple[str, str, str]]:
    """(where, metric selector, label) of each dashboard variable."""
    found = []
    for path in dashboard_files():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable["query"]
                text = query["query"] if isinstance(query, dict) else query
                match = _LABEL_VALUES.match(text)
                if match:
                    found.append(
                        (f"{path.name} ${variable['name']}", match["selector"], match["label"])
                    )
    return found


def parse(expr: str) -> Any:
    """Prometheus's parser on the query as Grafana sends it (variables given a value)."""
    return promql_parser.parse(_VARIABLE.sub("grafana_variable", expr))


def reads(expr: str) -> Reads:
    result = Reads()
    _walk(parse(expr), result)
    return result


def _walk(node: Any, result: Reads) -> set[str]:
    """Fill ``result``; return the metric names under ``node``."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        names = {node.name} if node.name else set()
        labels = set()
        for matcher in node.matchers.matchers:
            if matcher.name == "__name__":
                names.add(matcher.value)
            else:
                labels.add(matcher.name)
        for name in names:
            result.metrics.setdefault(name, set()).update(labels)
        return names
    under: set[str] = set()
    for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, (str, int, float)):
            under |= _walk(child, result)
    for child in getattr(node, "args", None) or []:
        under |= _walk(child, result)
    if (
        kind == "AggregateExpr"
        and node.modifier is not None
        and str(node.modifier.type).endswith("By")
    ):
        result.grouping.append((set(node.modifier.labels), set(under)))
    return under
