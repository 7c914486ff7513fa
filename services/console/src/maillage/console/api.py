"""The console's pages. Each route: who may see it (``domain.PAGES``), the services' calls with
the staff member's token, one template. Forms post back here with the session's CSRF token,
then redirect (post/redirect/get) with a message of what the service answered.

Errors, in French: no session (or an expired one) redirects to ``/connexion``; a page not for
the caller's roles is a 403 page; a form without the right CSRF token is a 403 page and changes
nothing; a service's refusal is shown as its problem's title and detail; a service's 401 (the
token expired or was revoked) ends the session.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from maillage.common.logging import get_logger
from maillage.common.messages import status_title
from maillage.common.problems import Problem
from maillage.console import domain
from maillage.console.domain import Page
from maillage.console.services import SERVICES, Refused, ServiceClients
from maillage.console.sessions import Session, Sessions

log = get_logger(__name__)

COOKIE = "maillage_console"
MAX_FORM_BYTES = 16_384
# Documented limits of every field a form sends (longer: refused before any call).
FIELD_LIMITS = {
    "csrf": 100,
    "username": 254,
    "password": 1024,
    "reason": 2000,
    "payment_reference": 100,
    "ej_number": 10,
    "amount": 30,
    "date": 10,
    "event_id": 36,
    "convention_id": 36,
    "departement": 3,
    "simulation": 3,
    "declares_no_interest": 3,
}
VERBS = {"verify": "Vérifier", "reject": "Rejeter", "suspend": "Suspendre", "reinstate": "Rétablir"}

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["euros"] = domain.euros
templates.env.globals.update(
    role_labels=domain.ROLE_LABELS,
    status_labels=domain.STATUS_LABELS,
    action_labels=domain.ACTION_LABELS,
    Page=Page,
)


class NotSignedIn(Exception):
    """No live session: go to the sign-in page (``expired`` when a cookie named a dead one)."""

    def __init__(self, expired: bool) -> None:
        self.expired = expired


class Forbidden(Exception):
    """A page or form the session may not use (role, or CSRF)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail


# --- sessions, forms, rendering ------------------------------------------------------------------


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def _clients(request: Request) -> ServiceClients:
    clients: ServiceClients = request.app.state.clients
    return clients


def _session(request: Request, page: Page) -> Session:
    """The signed-in session allowed to see ``page``; NotSignedIn, or Forbidden (403)."""
    cookie = request.cookies.get(COOKIE)
    session = _sessions(request).find(cookie, time.time())
    if session is None or not session.signed_in:
        raise NotSignedIn(expired=bool(cookie) and session is None)
    if not domain.may_see(session.roles, page):
        raise Forbidden("Cette page n'est pas ouverte à votre rôle.")
    return session


async def _form(request: Request, session: Session | None) -> dict[str, str]:
    """The urlencoded form, each field within ``FIELD_LIMITS``, its CSRF token checked against
    the session's (Forbidden otherwise: nothing is called)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Forbidden("Formulaire trop long.")
    fields = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    if session is None or not session.csrf_ok(fields.get("csrf")):
        raise Forbidden("Le formulaire a expiré ou ne vient pas de la console ; rechargez la page.")
    for name, value in fields.items():
        if len(value) > FIELD_LIMITS.get(name, 100):
            raise Forbidden(f"Le champ {name} est trop long.")
        if "\x00" in value:
            raise Forbidden(f"Le champ {name} contient un caractère nul (U+0000), non permis.")
    return fields


def _render(
    request: Request,
    template: str,
    session: Session | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    flash = list(session.flash) if session else []
    if session:
        session.flash.clear()
    response = templates.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "pages": domain.pages_of(session.roles) if session and session.signed_in else [],
            "flash": flash,
            **context,
        },
        status_code=status_code,
    )
    return response


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _set_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        session.id,
        httponly=True,
        samesite="strict",
        secure=request.app.state.settings.cookie_secure,
        path="/",
    )


def _after(session: Session, outcome: Refused | None, success: str) -> None:
    """Keep the outcome of a form for the next page."""
    if outcome is None:
        session.flash.append(("success", success))
    else:
        session.flash.append(("error", str(outcome)))


async def _call(
    request: Request, session: Session, service: str, method: str, path: str, **options: Any
) -> Any:
    """The service's JSON answer with the session's token; a 401 ends the session."""
    try:
        response = await _clients(request).call(
            service, method, path, token=session.token, **options
        )
    except Refused as refused:
        if refused.status == 401:
            _sessions(request).forget(session.id)
            raise NotSignedIn(expired=True) from refused
        raise
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


# --- sign-in and out -----------------------------------------------------------------------------


async def sign_in_page(request: Request) -> HTMLResponse:
    cookie = request.cookies.get(COOKIE)
    sessions = _sessions(request)
    existing = sessions.find(cookie, time.time())
    if existing is not None and existing.signed_in:
        return _render(request, "home.html", existing)
    session = existing or sessions.anonymous(time.time())
    if cookie and existing is None:
        session.flash.append(("info", "Votre session a expiré : reconnectez-vous."))
    response = _render(request, "sign_in.html", session)
    _set_cookie(request, response, session)
    return response


async def sign_in(request: Request) -> Response:
    """The registry's password grant; the token must carry a console role (rule 1)."""
    sessions = _sessions(request)
    anonymous = sessions.find(request.cookies.get(COOKIE), time.time())
    fields = await _form(request, anonymous)
    assert anonymous is not None
    username, password = fields.get("username", ""), fields.get("password", "")
    try:
        grant = await _clients(request).password_grant(username, password)
        session = await open_session(request, anonymous, grant, username)
    except Refused as refused:
        anonymous.flash.append(("error", str(refused)))
        log.info("console sign-in refused", code=refused.code)
        return _render(request, "sign_in.html", anonymous, status_code=refused.status)
    log.info("console sign-in", subject=session.subject, roles=sorted(session.roles))
    response = _redirect("/")
    _set_cookie(request, response, session)
    return response


async def open_session(
    request: Request, anonymous: Session | None, grant: dict[str, Any], username: str
) -> Session:
    """A signed-in session for a token from the registry; Refused (403) for a token without a
    console role (a partner's, a school's) or one that does not verify."""
    try:
        caller = await request.app.state.token_verifier.verify(grant["access_token"])
    except Problem as problem:
        raise Refused(401, "Jeton refusé", str(problem.detail or ""), "invalid_token") from problem
    roles = domain.console_roles(caller.roles)
    if not roles or caller.partner_id is not None:
        raise Refused(
            403,
            "Accès réservé au personnel",
            "La console n'ouvre pas de session aux partenaires ni aux établissements.",
            "not_staff",
        )
    now = time.time()
    return _sessions(request).sign_in(
        anonymous,
        token=grant["access_token"],
        subject=caller.subject,
        username=username,
        roles=roles,
        token_expires_at=now + float(grant.get("expires_in", 0)),
        now=now,
        departements=caller.departements,
        national=caller.national,
    )


async def sign_out(request: Request) -> Response:
    sessions = _sessions(request)
    session = sessions.find(request.cookies.get(COOKIE), time.time())
    await _form(request, session)
    assert session is not None
    sessions.forget(session.id)
    response = _redirect("/connexion")
    response.delete_cookie(COOKIE, path="/")
    return response


async def home(request: Request) -> HTMLResponse:
    session = _session(request, Page.HOME)
    return _render(request, "home.html", session)


# --- operators: partners -------------------------------------------------------------------------

PENDING_SCAN_PAGES = 10  # x 100 pending partners (the registry filters them: status=pending)


async def partners(request: Request) -> HTMLResponse:
    """Partners awaiting verification, oldest first (the registry's order)."""
    session = _session(request, Page.PARTNERS)
    pending: list[dict[str, Any]] = []
    cursor: str | None = None
    error: Refused | None = None
    try:
        for _ in range(PENDING_SCAN_PAGES):
            params = {"status": "pending", "limit": 100, **({"cursor": cursor} if cursor else {})}
            found = await _call(request, session, "registry", "GET", "/partners", params=params)
            pending += [p for p in found["items"] if p.get("status") == "pending"]
            cursor = found.get("next_cursor")
            if not cursor:
                break
    except Refused as refused:
        error = refused
    return _render(request, "partners.html", session, partners=pending, error=error)


async def partner(request: Request, partner_id: uuid.UUID) -> HTMLResponse:
    """A partner's record, status history and API clients."""
    session = _session(request, Page.PARTNER)
    try:
        record = await _call(request, session, "registry", "GET", f"/partners/{partner_id}")
        history = await _call(
            request, session, "registry", "GET", f"/partners/{partner_id}/history"
        )
        clients = await _call(
            request, session, "registry", "GET", f"/partners/{partner_id}/clients"
        )
    except Refused as refused:
        return _render(request, "error.html", session, refused.status, error=refused)
    notifications: dict[str, Any] = {"endpoints": [], "channels": [], "error": None}
    try:
        scope = {"partner_id": str(partner_id), "limit": 100}
        endpoints = await _call(
            request, session, "notifications", "GET", "/webhook-endpoints", params=scope
        )
        for endpoint in endpoints["items"]:
            last = await _call(
                request,
                session,
                "notifications",
                "GET",
                f"/webhook-endpoints/{endpoint['id']}/deliveries",
                params={"limit": 5},
            )
            notifications["endpoints"].append({**endpoint, "deliveries": last["items"]})
        channels = await _call(
            request, session, "notifications", "GET", "/email-channels", params=scope
        )
        notifications["channels"] = channels["items"]
    except Refused as refused:  # the partner's record still shows without its notifications
        notifications["error"] = refused
    return _render(
        request,
        "partner.html",
        session,
        partner=record,
        history=history,
        clients=clients,
        verbs=VERBS,
        notifications=notifications,
    )


async def change_partner_status(request: Request, partner_id: uuid.UUID, verb: str) -> Response:
    session = _session(request, Page.PARTNER)
    fields = await _form(request, session)
    if verb not in VERBS:
        raise StarletteHTTPException(404)
    outcome: Refused | None = None
    try:
        await _call(
            request,
            session,
            "registry",
            "POST",
            f"/partners/{partner_id}/{verb}",
            json={"reason": fields.get("reason") or None},
        )
    except Refused as refused:
        outcome = refused
    _after(session, outcome, f"Fait : {VERBS[verb].lower()}.")
    return _redirect(f"/partenaires/{partner_id}")


# --- operators: health and dead letters ----------------------------------------------------------


async def health(request: Request) -> HTMLResponse:
    """Each service's readiness (its checks), its outbox backlog (events not yet published and
    the oldest's age), each consumer group's lag (records not yet consumed) and its count of
    dead letters not yet replayed."""
    session = _session(request, Page.HEALTH)
    rows = []
    for service in SERVICES:
        row: dict[str, Any] = {"service": service}
        try:
            ready = await _call(request, session, service, "GET", "/readyz")
            row.update(ready=True, checks=ready.get("checks", {}))
        except Refused as refused:
            row.update(ready=False, checks={}, error=str(refused))
        try:
            letters = await _call(request, session, service, "GET", "/admin/dlq")
            row["dead_letters"] = sum(1 for item in letters["items"] if not item["replayed"])
        except Refused as refused:
            row["dead_letters"] = None
            row.setdefault("error", str(refused))
        try:
            backlog = await _call(request, session, service, "GET", "/admin/backlog")
            row.update(outbox=backlog["outbox"], consumers=backlog["consumers"])
        except Refused as refused:
            row.update(outbox=None, consumers=[])
            row.setdefault("error", str(refused))
        rows.append(row)
    template = "health_table.html" if request.headers.get("hx-request") else "health.html"
    return _render(request, template, session, rows=rows)


async def dead_letters(request: Request, service: str) -> HTMLResponse:
    session = _session(request, Page.HEALTH)
    if service not in SERVICES:
        raise StarletteHTTPException(404)
    try:
        letters = await _call(request, session, service, "GET", "/admin/dlq")
    except Refused as refused:
        return _render(request, "error.html", session, refused.status, error=refused)
    return _render(request, "dead_letters.html", session, service=service, letters=letters["items"])


async def replay(request: Request, service: str) -> Response:
    session = _session(request, Page.HEALTH)
    fields = await _form(request, session)
    if service not in SERVICES:
        raise StarletteHTTPException(404)
    try:
        event_id = str(uuid.UUID(fields.get("event_id", "")))
    except ValueError:
        raise Forbidden("Identifiant d'événement invalide.") from None
    outcome: Refused | None = None
    try:
        await _call(
            request, session, service, "POST", "/admin/dlq/replay", json={"event_id": event_id}
        )
    except Refused as refused:
        outcome = refused
    _after(session, outcome, f"Événement {event_id} rejoué.")
    return _redirect(f"/sante/{service}/lettres-mortes")


# --- operators: follow a request ----------------------------------------------------------------

_HEX = re.compile(r"^[0-9a-f]{32}$")
# What an operator may start from, and the span attribute that holds it (decision 54).
TRACE_SEARCHES = {
    "requete": ("maillage.request_id", "Identifiant de requête (en-tête X-Request-ID, journaux)"),
    "evenement": ("messaging.message.id", "Identifiant d'événement"),
    "partenaire": ("messaging.kafka.message.key", "Identifiant de partenaire (clé des événements)"),
}


async def traces(request: Request) -> HTMLResponse:
    """Follow a request: one trace as a waterfall from its id, or the traces holding a request
    id, an event id or a partner id (newest first, 20 at most) to choose from."""
    session = _session(request, Page.TRACES)
    query = request.query_params
    trace_id = query.get("trace", "").strip().lower()[:32]
    rows: list[domain.SpanRow] = []
    found: list[dict[str, Any]] = []
    error: Refused | None = None
    try:
        if trace_id:
            if not _HEX.match(trace_id):
                raise Refused(
                    400,
                    "Identifiant invalide",
                    "Une trace a 32 chiffres hexadécimaux.",
                    "invalid_trace_id",
                )
            answer = await _call(request, session, "traces", "GET", f"/api/v3/traces/{trace_id}")
            rows = domain.waterfall(domain.spans_of(answer.get("result", {})))
        else:
            for field_name, (attribute, _label) in TRACE_SEARCHES.items():
                value = query.get(field_name, "").strip()[:128]
                if value:
                    answer = await _call(
                        request,
                        session,
                        "traces",
                        "GET",
                        "/api/v3/traces",
                        params={
                            "query.attributes": json.dumps({attribute: value}),
                            "query.search_depth": 20,
                        },
                    )
                    found = _trace_list(domain.spans_of(answer.get("result", {})))
                    break
    except Refused as refused:
        error = (
            refused
            if refused.status != 404
            else Refused(
                404,
                "Aucune trace",
                "Aucune trace ne correspond (les plus anciennes sont effacées).",
                "trace_not_found",
            )
        )
    return _render(
        request,
        "traces.html",
        session,
        rows=rows,
        found=found,
        trace_id=trace_id,
        error=error,
        searches=TRACE_SEARCHES,
        query=query,
    )


def _trace_list(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per trace among ``spans``: its id, first span, services, start (ns)."""
    traces_found: dict[str, dict[str, Any]] = {}
    for span in sorted(spans, key=lambda s: int(s["startTimeUnixNano"])):
        entry = traces_found.setdefault(
            span["traceId"],
            {"trace_id": span["traceId"], "first": span.get("name", ""), "services": set()},
        )
        entry["services"].add(span["service"])
    return list(traces_found.values())


# --- operators: cordées and stages ---------------------------------------------------------------

_DEPARTEMENT = re.compile(r"^(0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-6])$")


def _unknown_departement(code: str) -> str:
    return (
        f"Département « {code[:3]} » inconnu : indiquez un code comme 94, 2A ou 971 "
        "(vide : national)."
    )


async def programmes(request: Request) -> HTMLResponse:
    """Cordées coverage of REP+/REP collèges (with the uncovered REP+ ones), stage statistics
    per week, and a campaign's result when one was just run; by département or national. A
    service that does not answer leaves its part empty with a warning."""
    session = _session(request, Page.PROGRAMMES)
    departement = request.query_params.get("departement", "").strip().upper()
    if departement and not _DEPARTEMENT.match(departement):
        # Never read as national: say so, on the national page the operator then sees named.
        session.flash.append(("error", _unknown_departement(departement)))
        return _redirect("/programmes")
    scope = {"departement": departement} if departement else {}
    parts: dict[str, Any] = {}
    for name, service, path in (
        ("coverage", "cordees", "/coverage"),
        ("stats", "stages3e", "/stats"),
    ):
        try:
            parts[name] = await _call(request, session, service, "GET", path, params=scope)
        except Refused as refused:
            parts[f"{name}_error"] = refused
    campaign_id = request.query_params.get("campagne", "")
    if campaign_id:
        try:
            parts["campaign"] = await _call(
                request, session, "cordees", "GET", f"/campaigns/{uuid.UUID(campaign_id)}"
            )
        except (Refused, ValueError) as error:
            parts["campaign_error"] = error
    return _render(
        request, "programmes.html", session, departement=scope.get("departement", ""), **parts
    )


async def run_campaign(request: Request) -> Response:
    """Run a cordées campaign on a département (or nationally), as a simulation when asked:
    the cordées service computes the optimum (operators only, its own check)."""
    session = _session(request, Page.PROGRAMMES)
    fields = await _form(request, session)
    departement = fields.get("departement", "").strip().upper()
    if departement and not _DEPARTEMENT.match(departement):
        # An unknown code must not become a national campaign: nothing is run.
        session.flash.append(
            ("error", _unknown_departement(departement) + " Aucune campagne lancée.")
        )
        return _redirect("/programmes")
    body = {"departement": departement or None, "dry_run": fields.get("simulation") == "oui"}
    try:
        campaign = await _call(
            request,
            session,
            "cordees",
            "POST",
            "/campaigns",
            json=body,
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
    except Refused as refused:
        _after(session, refused, "")
        return _redirect(f"/programmes?departement={quote(departement)}")
    _after(session, None, "Campagne calculée." if body["dry_run"] else "Campagne lancée.")
    return _redirect(f"/programmes?departement={quote(departement)}&campagne={campaign['id']}")


# --- funding -------------------------------------------------------------------------------------


async def _conventions(request: Request, session: Session, status: str) -> list[dict[str, Any]]:
    """Every convention in ``status`` (all pages, 100 at a time)."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"status": status, "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = await _call(request, session, "funding", "GET", "/conventions", params=params)
        found += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return found


async def queue(request: Request) -> HTMLResponse:
    """What waits for the caller's roles (``domain.QUEUES``), oldest first."""
    session = _session(request, Page.QUEUE)
    sections = []
    try:
        for role in sorted(session.roles & domain.FUNDING_ROLES):
            for waiting in domain.QUEUES[role]:
                items: list[dict[str, Any]] = []
                if waiting.kind == "convention":
                    items = await _conventions(request, session, waiting.status)
                    items.sort(key=lambda c: c["updated_at"])
                else:
                    for convention in await _conventions(request, session, "signed"):
                        items += [
                            {**t, "convention": convention}
                            for t in convention["tranches"]
                            if t["status"] == waiting.status
                        ]
                    items.sort(key=lambda t: t["requested_at"] or t["updated_at"])
                sections.append({"waiting": waiting, "entries": items})
    except Refused as refused:
        return _render(request, "error.html", session, refused.status, error=refused)
    return _render(request, "queue.html", session, sections=sections)


async def convention(request: Request, convention_id: uuid.UUID) -> HTMLResponse:
    """A convention: plan, schedule, tranches with the actions the roles are offered, comptes-
    rendus, and the audit trail when the role may read it."""
    session = _session(request, Page.CONVENTION)
    try:
        found = await _call(request, session, "funding", "GET", f"/conventions/{convention_id}")
    except Refused as refused:
        return _render(request, "error.html", session, refused.status, error=refused)
    try:
        audit = await _call(
            request, session, "funding", "GET", "/audit", params={"object_id": str(convention_id)}
        )
        trail = audit["items"]
    except Refused:
        trail = None  # the audit log is for ordonnateurs, operators and admins
    return _render(
        request,
        "convention.html",
        session,
        convention=found,
        actions=domain.actions_for(session.roles, "convention", found["status"]),
        tranche_actions={
            t["id"]: domain.actions_for(session.roles, "tranche", t["status"])
            for t in found["tranches"]
        },
        trail=trail,
        today=date.today().isoformat(),
    )


def _action_body(action: str, fields: dict[str, str]) -> dict[str, Any] | None:
    """The funding service's body for ``action`` from the form (amounts typed in euros)."""
    declares = fields.get("declares_no_interest") == "oui"
    if action == "programme":
        return {"committee_date": fields.get("date")}
    if action == "sign":
        return {
            "ej_number": fields.get("ej_number"),
            "signed_on": fields.get("date"),
            "declares_no_interest": declares,
        }
    if action in ("cancel", "close", "reject"):
        return {"reason": fields.get("reason")}
    if action == "approve":
        return {"declares_no_interest": declares}
    if action == "pay":
        amount = domain.cents_of(fields.get("amount", ""))
        return {
            "paid_on": fields.get("date"),
            "amount_cents": amount if amount is not None else -1,
            "payment_reference": fields.get("payment_reference"),
        }
    return None


async def act(request: Request, kind: str, object_id: uuid.UUID, action: str) -> Response:
    """Forward an action to the funding service as it is (rule 3: the service decides)."""
    session = _session(request, Page.CONVENTION)
    fields = await _form(request, session)
    allowed = domain.CONVENTION_ACTIONS if kind == "conventions" else domain.TRANCHE_ACTIONS
    if action not in allowed:
        raise StarletteHTTPException(404)
    back = object_id
    if kind == "tranches":
        try:
            back = uuid.UUID(fields.get("convention_id", ""))
        except ValueError:
            raise Forbidden("Convention inconnue.") from None
    outcome: Refused | None = None
    try:
        await _call(
            request,
            session,
            "funding",
            "POST",
            f"/{kind}/{object_id}/{action}",
            json=_action_body(action, fields),
        )
    except Refused as refused:
        outcome = refused
    _after(session, outcome, f"{domain.ACTION_LABELS[action]} : fait.")
    return _redirect(f"/financement/conventions/{back}")


async def envelopes(request: Request) -> HTMLResponse:
    """The envelopes of a year (default: this year), AE engaged and left, CP paid and left, of
    the départements the person acts for: funding answers only those (their token's territory,
    decisions 61 and 64). A person acting for several may narrow the page to one of them
    (``departement``, kept in their session until they name another, or none for all of
    theirs); a département outside their territory is not offered and is ignored."""
    session = _session(request, Page.ENVELOPES)
    year = _year(request)
    if "departement" in request.query_params:
        named = request.query_params["departement"].strip().upper()
        ours = session.national or named in session.departements
        if not named or (_DEPARTEMENT.match(named) and ours):
            session.departement = named
        elif not _DEPARTEMENT.match(named):
            # Unknown: the page keeps its scope (never widened to all of theirs) and says so.
            session.flash.append(("error", _unknown_departement(named)))
    params: dict[str, Any] = {"year": year, "limit": 200}
    if session.departement:
        params["departement"] = session.departement
    elif not session.national and len(session.departements) == 1:
        [params["departement"]] = session.departements
    try:
        found = await _call(request, session, "funding", "GET", "/envelopes", params=params)
    except Refused as refused:
        return _render(request, "error.html", session, refused.status, error=refused)
    return _render(
        request,
        "envelopes.html",
        session,
        envelopes=found["items"],
        year=year,
        departement=params.get("departement", ""),
        territory="national" if session.national else ", ".join(sorted(session.departements)),
    )


def _year(request: Request) -> int:
    text = request.query_params.get("annee", "")
    return int(text) if text.isdigit() and 2000 <= int(text) <= 2100 else date.today().year


async def scdl_export(request: Request) -> Response:
    """The SCDL subventions CSV of a year, as the funding service writes it, for download."""
    session = _session(request, Page.EXPORT)
    year = _year(request)
    try:
        text = await _call(
            request,
            session,
            "funding",
            "GET",
            "/exports/scdl-subventions.csv",
            params={"year": year},
        )
    except Refused as refused:
        return _render(request, "error.html", session, refused.status, error=refused)
    filename = quote(f"scdl-subventions-{year}.csv")
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename={filename}"},
    )


# --- wiring --------------------------------------------------------------------------------------

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


async def livez() -> dict[str, str]:
    return {"status": "alive"}


def install(app: FastAPI) -> None:
    """Routes, error pages and security headers."""
    get, post = ["GET", "HEAD"], ["POST"]
    routes: list[tuple[str, Any, list[str]]] = [
        ("/livez", livez, get),
        ("/readyz", livez, get),
        ("/connexion", sign_in_page, get),
        ("/connexion", sign_in, post),
        ("/deconnexion", sign_out, post),
        ("/", home, get),
        ("/partenaires", partners, get),
        ("/partenaires/{partner_id}", partner, get),
        ("/partenaires/{partner_id}/{verb}", change_partner_status, post),
        ("/sante", health, get),
        ("/traces", traces, get),
        ("/programmes", programmes, get),
        ("/programmes/campagne", run_campaign, post),
        ("/sante/{service}/lettres-mortes", dead_letters, get),
        ("/sante/{service}/lettres-mortes/rejouer", replay, post),
        ("/financement", queue, get),
        ("/financement/conventions/{convention_id}", convention, get),
        ("/financement/enveloppes", envelopes, get),
        ("/financement/export-scdl.csv", scdl_export, get),
    ]
    for path, endpoint, methods in routes:
        app.add_api_route(path, endpoint, methods=methods, include_in_schema=False)

    async def act_route(request: Request, kind: str, object_id: uuid.UUID, action: str) -> Response:
        if kind not in ("conventions", "tranches"):
            raise StarletteHTTPException(404)
        return await act(request, kind, object_id, action)

    app.add_api_route(
        "/financement/{kind}/{object_id}/{action}", act_route, methods=post, include_in_schema=False
    )

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, error: NotSignedIn) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": "/connexion"})
        return _redirect("/connexion")

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, error: Forbidden) -> Response:
        session = _sessions(request).find(request.cookies.get(COOKIE), time.time())
        refused = Refused(403, "Accès refusé", error.detail, "forbidden")
        return _render(request, "error.html", session, 403, error=refused)

    @app.exception_handler(StarletteHTTPException)
    async def not_found(request: Request, error: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/static/"):
            return Response(status_code=error.status_code)
        session = _sessions(request).find(request.cookies.get(COOKIE), time.time())
        title = "Page introuvable" if error.status_code == 404 else "Requête refusée"
        refused = Refused(error.status_code, title, "", "not_found")
        return _render(request, "error.html", session, error.status_code, error=refused)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        """A path parameter that names nothing (``/partenaires/pas-un-uuid``): the page of a
        missing thing, and only for a signed-in session (as every page)."""
        session = _sessions(request).find(request.cookies.get(COOKIE), time.time())
        if session is None or not session.signed_in:
            return await not_signed_in(request, NotSignedIn(expired=False))
        in_path = all(e.get("loc", ("",))[0] == "path" for e in error.errors())
        status = 404 if in_path else 422
        detail = "Cette adresse ne désigne rien." if in_path else "Un paramètre est mal formé."
        refused = Refused(status, status_title(status), detail, "invalid")
        return _render(request, "error.html", session, status, error=refused)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> Response:
        """Whatever failed, a page in French (the error is logged, never shown)."""
        log.exception("console page failed", path=request.url.path)
        session = _sessions(request).find(request.cookies.get(COOKIE), time.time())
        refused = Refused(500, status_title(500), "Réessayez dans un instant.", "internal")
        return _render(request, "error.html", session, 500, error=refused)

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> Response:
        session = _sessions(request).find(request.cookies.get(COOKIE), time.time())
        return _render(request, "error.html", session, error.status, error=error)

    @app.middleware("http")
    async def headers_and_log(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        log.info(
            "request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
        )
        return response
