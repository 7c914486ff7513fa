"""What the staff console allows: who sees which page, which action a role is offered on a
funding object in a given status, and how amounts read in French. Pure rules, no I/O.

Rules (docs/architecture.md decision 53):

1. Only staff sign in: a token whose roles include none of ``CONSOLE_ROLES`` (a partner's, a
   school's) opens no session.
2. A page is shown to the roles of ``PAGES``; any other signed-in role gets 403.
3. An action is offered only when ``ACTIONS`` lists it for the role and the object's status. The
   console never decides in the services' place: an action posted anyway is forwarded, and the
   service's refusal (RFC 9457 problem) is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

OPERATOR_ROLES = frozenset({"operator"})
FUNDING_ROLES = frozenset({"officer", "ordonnateur", "comptable"})
CONSOLE_ROLES = OPERATOR_ROLES | FUNDING_ROLES | {"admin"}

ROLE_LABELS = {
    "operator": "opérateur",
    "officer": "chargé d'instruction",
    "ordonnateur": "ordonnateur",
    "comptable": "comptable",
    "admin": "administrateur",
}


class Page(StrEnum):
    HOME = "home"
    PARTNERS = "partners"
    PARTNER = "partner"
    HEALTH = "health"
    TRACES = "traces"
    PROGRAMMES = "programmes"
    QUEUE = "queue"
    CONVENTION = "convention"
    ENVELOPES = "envelopes"
    EXPORT = "export"


PAGES: dict[Page, frozenset[str]] = {
    Page.HOME: CONSOLE_ROLES,
    Page.PARTNERS: OPERATOR_ROLES,
    Page.PARTNER: OPERATOR_ROLES,
    Page.HEALTH: OPERATOR_ROLES,
    Page.TRACES: OPERATOR_ROLES,
    Page.PROGRAMMES: OPERATOR_ROLES,
    Page.QUEUE: FUNDING_ROLES,
    Page.CONVENTION: FUNDING_ROLES,
    Page.ENVELOPES: FUNDING_ROLES,
    Page.EXPORT: FUNDING_ROLES,
}


def console_roles(roles: frozenset[str]) -> frozenset[str]:
    """The roles of a token that the console knows (rule 1: empty means no session)."""
    return roles & CONSOLE_ROLES


def may_see(roles: frozenset[str], page: Page) -> bool:
    """Rule 2."""
    return not roles.isdisjoint(PAGES[page])


def pages_of(roles: frozenset[str]) -> list[Page]:
    """The pages the roles may open, in menu order."""
    return [page for page in PAGES if may_see(roles, page)]


# (role, object kind, status) -> actions offered, in the funding service's own verbs.
ACTIONS: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("officer", "convention", "draft"): ("instruct",),
    ("ordonnateur", "convention", "instructing"): ("programme", "cancel"),
    ("ordonnateur", "convention", "programmed"): ("sign", "cancel"),
    ("ordonnateur", "convention", "signed"): ("close",),
    ("officer", "tranche", "requested"): ("instruct",),
    ("ordonnateur", "tranche", "instructed"): ("approve", "reject"),
    ("comptable", "tranche", "approved"): ("pay",),
}
CONVENTION_ACTIONS = frozenset({"instruct", "programme", "sign", "cancel", "close"})
TRANCHE_ACTIONS = frozenset({"instruct", "approve", "reject", "pay"})

ACTION_LABELS = {
    "instruct": "Instruire",
    "programme": "Programmer",
    "sign": "Signer",
    "cancel": "Annuler",
    "close": "Clore",
    "approve": "Approuver",
    "reject": "Rejeter",
    "pay": "Enregistrer le paiement",
}

STATUS_LABELS = {
    "draft": "brouillon",
    "instructing": "en instruction",
    "programmed": "programmée",
    "signed": "signée",
    "closed": "close",
    "cancelled": "annulée",
    "planned": "prévue",
    "requested": "demandée",
    "instructed": "instruite",
    "approved": "approuvée",
    "paid": "payée",
    "rejected": "rejetée",
    "pending": "en attente de vérification",
    "verified": "vérifié",
    "suspended": "suspendu",
}


def actions_for(roles: frozenset[str], kind: str, status: str) -> list[str]:
    """Rule 3: the actions offered to these roles on a ``kind`` ("convention", "tranche") in
    ``status``, each once, in the table's order."""
    offered: list[str] = []
    for role in sorted(roles):
        for action in ACTIONS.get((role, kind, status), ()):
            if action not in offered:
                offered.append(action)
    return offered


@dataclass(frozen=True)
class Waiting:
    """A status that waits for a role, and what the work queue calls it."""

    kind: str
    status: str
    label: str


# What each role's work queue lists (rule 3's table, read by status).
QUEUES: dict[str, tuple[Waiting, ...]] = {
    "officer": (
        Waiting("convention", "draft", "Conventions à instruire"),
        Waiting("tranche", "requested", "Tranches demandées, à instruire"),
    ),
    "ordonnateur": (
        Waiting("convention", "instructing", "Conventions à programmer"),
        Waiting("convention", "programmed", "Conventions à signer"),
        Waiting("tranche", "instructed", "Tranches instruites, à approuver"),
    ),
    "comptable": (Waiting("tranche", "approved", "Tranches approuvées, à payer"),),
}


def euros(cents: int | None) -> str:
    """French figure of an amount in cents: ``123456789`` reads ``1 234 567,89 €`` (narrow
    no-break spaces between thousands, as the DSFR tables print them)."""
    if cents is None:
        return "—"
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    grouped = f"{whole:,}".replace(",", "\u202f")
    return f"{sign}{grouped},{rest:02d}\u00a0€"


# ASCII digits only (``\d`` would read full-width and other scripts' digits too).
_EUROS = re.compile(r"^\s*([0-9]{1,13})(?:[,.]([0-9]{1,2}))?\s*(?:€)?\s*$", re.ASCII)


def cents_of(text: str) -> int | None:
    """Cents of an amount typed in euros (``1234,5`` or ``1234.50``, spaces between thousands
    allowed); None when it is not one."""
    match = _EUROS.match(text.replace("\u202f", "").replace("\u00a0", "").replace(" ", ""))
    if match is None:
        return None
    return int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))


# --- traces --------------------------------------------------------------------------------------

KIND_LABELS = {
    "SPAN_KIND_SERVER": "requête reçue",
    "SPAN_KIND_CLIENT": "appel sortant",
    "SPAN_KIND_PRODUCER": "publication Kafka",
    "SPAN_KIND_CONSUMER": "traitement d'un événement",
    "SPAN_KIND_INTERNAL": "interne",
}


@dataclass(frozen=True)
class SpanRow:
    """One line of a waterfall: where the span sits in the trace's time, as percentages."""

    span_id: str
    service: str
    name: str
    kind: str
    depth: int
    offset_percent: float
    width_percent: float
    duration_ms: float
    failed: bool
    attributes: tuple[tuple[str, str], ...]


def _value(value: dict[str, Any]) -> str:
    """An OTLP JSON ``AnyValue`` as text."""
    for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if key in value:
            return str(value[key])
    return str(value)


def spans_of(traces_data: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans of an OTLP JSON ``TracesData`` (as Jaeger's query API v3 answers), each with
    its ``service`` (the resource's ``service.name``, without the ``maillage-`` prefix)."""
    spans: list[dict[str, Any]] = []
    for resource in traces_data.get("resourceSpans", []) or []:
        service = next(
            (
                _value(a.get("value", {}))
                for a in resource.get("resource", {}).get("attributes", [])
                if a.get("key") == "service.name"
            ),
            "?",
        ).removeprefix("maillage-")
        for scope in resource.get("scopeSpans", []):
            spans += [{**span, "service": service} for span in scope.get("spans", [])]
    return spans


def waterfall(spans: list[dict[str, Any]]) -> list[SpanRow]:
    """The spans of one trace as waterfall rows: each child under its parent (depth first,
    siblings by start time), spans whose parent is missing at the top; offsets and widths in
    percent of the whole trace's time (a span of zero length still gets a visible 0.5 %)."""
    if not spans:
        return []
    start = {str(s["spanId"]): int(str(s["startTimeUnixNano"])) for s in spans}
    end = {
        str(s["spanId"]): int(str(s.get("endTimeUnixNano", s["startTimeUnixNano"]))) for s in spans
    }
    first, last = min(start.values()), max(end.values())
    total = max(last - first, 1)
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        parent = str(span.get("parentSpanId") or "")
        children.setdefault(parent if parent in start else "", []).append(span)
    rows: list[SpanRow] = []

    def visit(parent: str, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: start[str(s["spanId"])]):
            span_id = str(span["spanId"])
            duration = end[span_id] - start[span_id]
            attributes = span.get("attributes", []) or []
            rows.append(
                SpanRow(
                    span_id=span_id,
                    service=str(span["service"]),
                    name=str(span.get("name", "")),
                    kind=KIND_LABELS.get(str(span.get("kind", "")), "interne"),
                    depth=depth,
                    offset_percent=round(100 * (start[span_id] - first) / total, 2),
                    width_percent=max(round(100 * duration / total, 2), 0.5),
                    duration_ms=round(duration / 1e6, 2),
                    failed=(span.get("status") or {}).get("code") == "STATUS_CODE_ERROR",
                    attributes=tuple(
                        (str(a.get("key")), _value(a.get("value", {}))) for a in attributes
                    ),
                )
            )
            if depth < 64:  # a malformed trace cannot recurse without end
                visit(span_id, depth + 1)

    visit("", 0)
    return rows
