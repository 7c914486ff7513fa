"""The console over HTTP, in front of the real registry and funding services: sign-in and its
session (cookie flags, CSRF, expiry, a partner refused), every page for its roles only, the
operator's partner verification, and the funding duties (officer, ordonnateur, comptable) with
the envelope's figures moving. No token, password or secret in any page or log line."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest
from console_world import (
    PASSWORD,
    ROLES,
    YEAR,
    World,
    csrf_of,
    register,
    signed_in,
    siret,
    until,
)

from maillage.console import domain
from maillage.console.domain import Page
from maillage.console.services import Refused
from maillage.funding.consumers import CONSUMERS as FUNDING_CONSUMERS


def _form_csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def _path(page: Page, ids: dict[str, Any]) -> str:
    return {
        Page.HOME: "/",
        Page.PARTNERS: "/partenaires",
        Page.PARTNER: f"/partenaires/{ids['partner_id']}",
        Page.HEALTH: "/sante",
        Page.TRACES: "/traces",
        Page.PROGRAMMES: "/programmes?departement=94",
        Page.QUEUE: "/financement",
        Page.CONVENTION: f"/financement/conventions/{ids['convention_id']}",
        Page.ENVELOPES: f"/financement/enveloppes?annee={YEAR}",
        Page.EXPORT: f"/financement/export-scdl.csv?annee={YEAR}",
    }[page]


async def test_every_page_answers_200_for_its_roles_and_403_for_the_others(
    world: World, funded: dict[str, Any]
) -> None:
    for role in ROLES:
        async with signed_in(world, role) as browser:
            for page in Page:
                response = await browser.get(_path(page, funded))
                expected = 200 if domain.may_see(frozenset({role}), page) else 403
                assert response.status_code == expected, (role, page, response.text[:500])
                if expected == 200 and response.headers["content-type"].startswith("text/html"):
                    # the page's title is text only (a template once put a whole section in it)
                    title = re.search(r"<title>(.*?)</title>", response.text, re.S)
                    assert title is not None, page
                    assert "<" not in title.group(1), (page, title.group(1))
                    assert title.group(1).strip().endswith("— Maillage"), (page, title.group(1))
    async with world.browser() as anonymous:
        for page in Page:
            response = await anonymous.get(_path(page, funded))
            assert response.status_code == 303
            assert response.headers["location"] == "/connexion"


async def test_the_session_cookie_is_httponly_strict_and_the_token_stays_on_the_server(
    world: World, funded: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    browser = world.browser()
    csrf = await csrf_of(browser)
    response = await browser.post(
        "/connexion",
        data={"csrf": csrf, "username": world.accounts["ordonnateur"], "password": PASSWORD},
    )
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie.replace("Strict", "strict")
    [session] = [
        s
        for s in world.console.state.sessions._sessions.values()
        if s.signed_in and s.username == world.accounts["ordonnateur"] and s.id in cookie
    ]
    pages = [await browser.get(_path(page, funded)) for page in Page]
    pages.append(await browser.get("/sante/registry/lettres-mortes"))
    await browser.aclose()
    logs = capfd.readouterr()
    secrets = [session.token, PASSWORD, funded["partner_token"], session.token.split(".")[2]]
    for secret in secrets:
        assert all(secret not in page.text for page in pages)
        assert secret not in logs.err
        assert secret not in logs.out
    assert all("no-store" in page.headers["cache-control"] for page in pages)


async def test_a_form_without_the_session_csrf_token_is_refused_and_changes_nothing(
    world: World,
) -> None:
    pending = await register(world, "Partenaire CSRF", siret(701))
    async with signed_in(world, "operator") as browser:
        for csrf in (None, "forged", _form_csrf((await browser.get("/")).text)[:-1] + "x"):
            data = {"reason": "vu"} | ({"csrf": csrf} if csrf else {})
            response = await browser.post(f"/partenaires/{pending}/verify", data=data)
            assert response.status_code == 403
            assert "formulaire a expiré" in response.text
        page = await browser.get(f"/partenaires/{pending}")
        assert "en attente de vérification" in page.text
        # Another browser's token is no better: CSRF tokens belong to one session.
        async with signed_in(world, "operator") as other:
            foreign = _form_csrf((await other.get("/")).text)
        response = await browser.post(
            f"/partenaires/{pending}/verify", data={"csrf": foreign, "reason": "vu"}
        )
        assert response.status_code == 403
    async with world.browser() as anonymous:
        response = await anonymous.post("/connexion", data={"username": "x", "password": "y"})
        assert response.status_code == 403


async def test_wrong_credentials_show_a_french_message(world: World) -> None:
    async with world.browser() as browser:
        csrf = await csrf_of(browser)
        response = await browser.post(
            "/connexion",
            data={"csrf": csrf, "username": world.accounts["officer"], "password": "faux"},
        )
        assert response.status_code == 401
        assert "Adresse ou mot de passe incorrect" in response.text
        assert (await browser.get("/")).status_code == 303


async def test_an_expired_session_or_token_goes_back_to_sign_in(world: World) -> None:
    async with signed_in(world, "officer") as browser:
        assert (await browser.get("/financement")).status_code == 200
        [session] = [
            s
            for s in world.console.state.sessions._sessions.values()
            if s.id == browser.cookies["maillage_console"]
        ]
        session.expires_at = time.time() - 1
        response = await browser.get("/financement")
        assert (response.status_code, response.headers["location"]) == (303, "/connexion")
        assert "Votre session a expiré" in (await browser.get("/connexion")).text
    async with signed_in(world, "officer") as browser:
        [session] = [
            s
            for s in world.console.state.sessions._sessions.values()
            if s.id == browser.cookies["maillage_console"]
        ]
        session.token = session.token[:-4] + "AAAA"  # as if revoked: the service answers 401
        response = await browser.get("/financement")
        assert (response.status_code, response.headers["location"]) == (303, "/connexion")
        assert session.id not in world.console.state.sessions._sessions
    async with signed_in(world, "officer") as browser:
        response = await browser.post(
            "/deconnexion", data={"csrf": _form_csrf((await browser.get("/")).text)}
        )
        assert (response.status_code, response.headers["location"]) == (303, "/connexion")
        assert (await browser.get("/")).status_code == 303


async def test_a_partner_token_opens_no_session(world: World, funded: dict[str, Any]) -> None:
    from maillage.console.api import open_session

    class FakeRequest:  # open_session reads only the app
        app = world.console

    with pytest.raises(Refused) as refused:
        await open_session(
            FakeRequest(),  # type: ignore[arg-type]
            None,
            {"access_token": funded["partner_token"], "expires_in": 900},
            "partner",
        )
    assert (refused.value.status, refused.value.code) == (403, "not_staff")


async def test_an_operator_verifies_a_pending_partner_with_a_reason(world: World) -> None:
    pending = await register(world, "Partenaire à vérifier", siret(702))
    async with signed_in(world, "operator") as browser:
        listing = await browser.get("/partenaires")
        assert "Partenaire à vérifier" in listing.text
        page = await browser.get(f"/partenaires/{pending}")
        response = await browser.post(
            f"/partenaires/{pending}/verify",
            data={"csrf": _form_csrf(page.text), "reason": "Kbis contrôlé"},
        )
        assert response.status_code == 303
        page = await browser.get(f"/partenaires/{pending}")
        assert "Fait : vérifier." in page.text
        # The real notifications service: this partner has no endpoint and no channel.
        assert "Aucun point de réception." in page.text
        assert "Aucun canal." in page.text
        assert "Kbis contrôlé" in page.text
        assert ">vérifié<" in page.text
        # A transition the registry refuses comes back as its French problem.
        response = await browser.post(
            f"/partenaires/{pending}/verify",
            data={"csrf": _form_csrf(page.text), "reason": "encore une fois"},
        )
        assert "Impossible depuis ce statut" in (await browser.get(f"/partenaires/{pending}")).text
        assert "Partenaire à vérifier" not in (await browser.get("/partenaires")).text


async def test_each_funding_duty_by_its_own_role_and_the_envelope_moves(
    world: World, funded: dict[str, Any]
) -> None:
    convention = f"/financement/conventions/{funded['convention_id']}"
    tranche = funded["tranche"]
    act = f"/financement/tranches/{tranche['id']}"
    async with signed_in(world, "comptable") as comptable:
        before = await comptable.get(f"/financement/enveloppes?annee={YEAR}")
        assert "50\u202f000,00\u00a0€" in before.text  # CP left: all of it
    async with signed_in(world, "officer") as officer:
        queue = await officer.get("/financement")
        assert "Tranches demandées, à instruire" in queue.text
        assert "Ateliers de sciences au collège" in queue.text
        page = await officer.get(convention)
        assert f'action="{act}/instruct"' in page.text
        assert f'action="{act}/approve"' not in page.text
        csrf = _form_csrf(page.text)
        await officer.post(
            f"{act}/instruct", data={"csrf": csrf, "convention_id": funded["convention_id"]}
        )
        page = await officer.get(convention)
        assert "Instruire : fait." in page.text
        assert "instruite" in page.text
        assert f'action="{act}/approve"' not in page.text  # not offered ...
        await officer.post(  # ... and refused by the service when tried anyway
            f"{act}/approve",
            data={
                "csrf": csrf,
                "convention_id": funded["convention_id"],
                "declares_no_interest": "oui",
            },
        )
        assert "Accès refusé" in (await officer.get(convention)).text
    async with signed_in(world, "ordonnateur") as ordonnateur:
        assert "Tranches instruites, à approuver" in (await ordonnateur.get("/financement")).text
        page = await ordonnateur.get(convention)
        assert f'action="{act}/approve"' in page.text
        await ordonnateur.post(
            f"{act}/approve",
            data={
                "csrf": _form_csrf(page.text),
                "convention_id": funded["convention_id"],
                "declares_no_interest": "oui",
            },
        )
        page = await ordonnateur.get(convention)
        assert "Approuver : fait." in page.text, page.text
        assert "Journal d&#39;audit" in page.text or "Journal d'audit" in page.text
    async with signed_in(world, "comptable") as comptable:
        page = await comptable.get(convention)
        assert f'action="{act}/pay"' in page.text
        await comptable.post(
            f"{act}/pay",
            data={
                "csrf": _form_csrf(page.text),
                "convention_id": funded["convention_id"],
                "date": f"{YEAR}-02-16",
                "amount": "9 000,00",
                "payment_reference": "DRFIP94-CONSOLE-1",
            },
        )
        page = await comptable.get(convention)
        assert "Enregistrer le paiement : fait." in page.text, page.text
        assert "DRFIP94-CONSOLE-1" in page.text
        after = await comptable.get(f"/financement/enveloppes?annee={YEAR}")
        assert "41\u202f000,00\u00a0€" in after.text  # CP left: 50,000 - 9,000
        export = await comptable.get(f"/financement/export-scdl.csv?annee={YEAR}")
        assert export.status_code == 200
        assert "attachment" in export.headers["content-disposition"]
        assert "Ateliers de sciences au collège" in export.text


async def test_a_funding_staff_member_sees_the_envelopes_of_their_departements(
    world: World, funded: dict[str, Any]
) -> None:
    """Funding answers only the départements of the person's token (decision 64): the world's
    officer (94) sees 94's envelope and not the one an ordonnateur of 93 opened, a 93-94 officer
    sees both and may narrow the page to one of them, in their own session, until they name
    another or none; a département outside their territory is ignored."""
    async with httpx.AsyncClient(base_url=world.funding_url, timeout=10) as funding:
        other = await funding.post(
            "/envelopes",
            json={"departement": "93", "year": YEAR, "ae_cents": 2_000_000, "cp_cents": 1_000_000},
            headers=await world.bearer("ordonnateur-93"),
        )
        assert other.status_code == 201, other.text
        outside = await funding.post(
            "/envelopes",
            json={"departement": "92", "year": YEAR, "ae_cents": 1, "cp_cents": 1},
            headers=await world.bearer("ordonnateur-93"),
        )
        assert (outside.status_code, outside.json()["code"]) == (403, "departement_not_in_scope")

    def shown(page: httpx.Response) -> list[str]:
        assert page.status_code == 200, page.text
        return sorted(re.findall(r'<tr data-departement="([0-9AB]+)">', page.text))

    path = "/financement/enveloppes"
    async with (
        signed_in(world, "officer") as officer,
        signed_in(world, "officer-93-94") as both,
        signed_in(world, "officer-93-94") as colleague,
    ):
        mine = await officer.get(path, params={"annee": YEAR})
        assert shown(mine) == ["94"]
        assert "Enveloppes 2027 — département 94" in mine.text
        assert "Votre périmètre : 94." in mine.text
        assert shown(await officer.get(path, params={"annee": YEAR, "departement": "93"})) == ["94"]
        assert shown(await both.get(path, params={"annee": YEAR})) == ["93", "94"]
        narrowed = await both.get(path, params={"annee": YEAR, "departement": "94"})
        assert shown(narrowed) == ["94"]
        assert 'id="departement" name="departement" maxlength="3" value="94"' in narrowed.text
        assert shown(await both.get(path, params={"annee": YEAR})) == ["94"]  # remembered
        assert shown(await colleague.get(path, params={"annee": YEAR})) == ["93", "94"]
        assert shown(await both.get(path, params={"annee": YEAR, "departement": "93"})) == ["93"]
        assert (
            "Aucune enveloppe pour ce département"
            in (await both.get(path, params={"annee": YEAR - 1})).text
        )
        assert shown(await both.get(path, params={"annee": YEAR, "departement": ""})) == [
            "93",
            "94",
        ]


async def test_an_operator_follows_an_event_to_its_whole_trace_as_a_waterfall(
    world: World, traced: dict[str, str]
) -> None:
    async with signed_in(world, "operator") as browser:
        found = await browser.get("/traces", params={"evenement": traced["event_id"]})
        assert found.status_code == 200
        assert f'href="/traces?trace={traced["trace_id"]}"' in found.text
        page = await browser.get("/traces", params={"trace": traced["trace_id"]})
        assert page.status_code == 200
        rows = re.findall(r'<tr class="span-row" data-service="([a-z0-9]+)">', page.text)
        assert rows == ["registry", "registry", "notifications"]  # request, publish, process
        assert page.text.index("POST /partners") < page.text.index("registry.partners process")
        assert "· · registry.partners process" in page.text  # under the publish, under the request
        assert traced["event_id"] in page.text  # the span's attributes
        unknown = await browser.get("/traces", params={"trace": "0" * 32})
        assert "Aucune trace" in unknown.text
        invalid = await browser.get("/traces", params={"trace": "pas-une-trace"})
        assert "Identifiant invalide" in invalid.text


async def test_an_operator_follows_a_request_from_its_request_id(world: World) -> None:
    """The id of a real request to the registry (as its answer and log lines give it) finds its
    trace, whose server span holds it."""
    request_id = f"console-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=world.registry_url, timeout=10) as registry:
        answer = await registry.get(
            "/partners", headers={"X-Request-ID": request_id, **await world.bearer("operator")}
        )
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == request_id
    await world.export_traces("maillage.request_id", request_id)
    async with signed_in(world, "operator") as browser:
        found = await browser.get("/traces", params={"requete": request_id})
        assert found.status_code == 200
        [trace_id] = re.findall(r'href="/traces\?trace=([0-9a-f]{32})"', found.text)
        page = await browser.get("/traces", params={"trace": trace_id})
        assert "GET /partners" in page.text
        assert f"<dt>maillage.request_id</dt><dd>{request_id}</dd>" in page.text
        nothing = await browser.get("/traces", params={"requete": "inconnue"})
        assert "Aucune trace" in nothing.text


async def test_a_partners_page_shows_its_webhook_endpoints_and_email_channels(
    world: World, funded: dict[str, Any], hooked: dict[str, Any]
) -> None:
    """The partner subscribes an endpoint and an address in the real notifications service; the
    operator reads them on the partner's page."""
    partner = {"Authorization": f"Bearer {funded['partner_token']}"}
    async with httpx.AsyncClient(base_url=world.notifications_url, timeout=10) as notifications:
        channel = await notifications.post(
            "/email-channels", json={"address": "contact@beneficiaire.example"}, headers=partner
        )
        assert channel.status_code == 201, channel.text
    async with signed_in(world, "operator") as browser:
        page = await browser.get(f"/partenaires/{funded['partner_id']}")
        assert page.status_code == 200
        assert f"<h3>{world.webhook_url}</h3>" in page.text
        assert "contact@beneficiaire.example : en attente de confirmation" in page.text
        assert "Notifications indisponibles" not in page.text


async def test_an_operator_reads_the_coverage_and_runs_a_campaign_simulation(world: World) -> None:
    async with signed_in(world, "operator") as browser:
        page = await browser.get("/programmes", params={"departement": "94"})
        assert page.status_code == 200
        assert "aucun collège REP+ ou REP dans les données de référence" in page.text
        form = {"csrf": _form_csrf(page.text), "departement": "94", "simulation": "oui"}
        response = await browser.post("/programmes/campagne", data=form)
        assert response.status_code == 303
        assert "campagne=" in response.headers["location"]
        result = await browser.get(response.headers["location"])
        assert "Campagne calculée." in result.text
        assert "(simulation) : 0 demandes" in result.text
        refused = await browser.post("/programmes/campagne", data={**form, "csrf": "x"})
        assert refused.status_code == 403


async def test_the_stage_statistics_count_the_offers_a_partner_publishes(
    world: World, funded: dict[str, Any]
) -> None:
    """The funded partner (a company of the 94) publishes a stage offer in the real stages3e
    service: the statistics the operator reads count it, its places and its weeks; those of
    another département do not."""
    figures = r"Année scolaire {year} : (\d+) offres, (\d+) places, (\d+) stages confirmés"
    line = figures.format(year=f"{YEAR - 1}-{YEAR}")  # the world's stages3e clock: autumn

    async def shown(departement: str) -> tuple[str, str]:
        page = await browser.get("/programmes", params={"departement": departement})
        assert "Stages indisponibles" not in page.text
        found = re.search(line, page.text)
        assert found, page.text
        return page.text, f"{found[1]} offres, {found[2]} places, {found[3]} confirmés"

    async with signed_in(world, "operator") as browser:
        _, before = await shown("94")
        assert before == "0 offres, 0 places, 0 confirmés"
        offer = {
            "title": "Découverte des métiers de l'aéroport",
            "description": "Une semaine avec les équipes au sol.",
            "sector": "N",
            "latitude": 48.7262,
            "longitude": 2.3652,
            "weeks": [
                {"week": f"{YEAR}-W05", "seats": 3, "reserved": 1},
                {"week": f"{YEAR}-W06", "seats": 2},
            ],
        }
        partner = {
            "Authorization": f"Bearer {funded['partner_token']}",
            "Idempotency-Key": f"console-{uuid.uuid4()}",
        }
        async with httpx.AsyncClient(base_url=world.stages3e_url, timeout=10) as stages3e:

            async def published() -> httpx.Response | None:
                response = await stages3e.post("/offers", json=offer, headers=partner)
                return None if response.status_code == 403 else response  # not known yet

            response = await until(published, "stages3e to know the verified partner")
        assert response.status_code == 201, response.text
        page, after = await shown("94")
        assert after == "1 offres, 5 places, 0 confirmés"
        weeks = re.findall(r"<tr><td>(\d{4}-W\d{2})</td><td>(\d+)</td><td>(\d+)</td>"
                           r"<td>(\d+)</td><td>(\d+)</td></tr>", page)  # fmt: skip
        assert weeks == [(f"{YEAR}-W05", "1", "3", "1", "0"), (f"{YEAR}-W06", "1", "2", "0", "0")]
        _, elsewhere = await shown("75")
        assert elsewhere == "0 offres, 0 places, 0 confirmés"


async def test_an_operator_reads_a_services_dead_letters_and_a_replay_is_the_services_answer(
    world: World,
) -> None:
    async with signed_in(world, "operator") as browser:
        health = await browser.get("/sante")
        assert 'href="/sante/funding/lettres-mortes"' in health.text  # funding answers /admin/dlq
        # Funding's /admin/backlog: its outbox's backlog, and its consumer group's lag.
        funding = health.text[health.text.index("<td>funding</td>") :]
        funding = funding[: funding.index("</tr>")]
        assert re.search(r'<td class="outbox">\d+ en attente', funding), funding
        groups = [c.group for c in FUNDING_CONSUMERS]
        assert all(re.search(rf"{re.escape(g)} : \d+", funding) for g in groups), funding
        page = await browser.get("/sante/funding/lettres-mortes")
        assert page.status_code == 200
        assert "Lettres mortes de funding" in page.text
        unknown = str(uuid.uuid4())
        response = await browser.post(
            "/sante/funding/lettres-mortes/rejouer",
            data={"csrf": _form_csrf(page.text), "event_id": unknown},
        )
        assert response.status_code == 303
        after = await browser.get("/sante/funding/lettres-mortes")
        assert "Lettre morte introuvable" in after.text
        assert (await browser.get("/sante/inconnu/lettres-mortes")).status_code == 404


async def test_a_bad_path_parameter_is_a_console_page_on_every_route(world: World) -> None:
    """Every route with a path parameter, each given a value that names nothing: without a
    session the sign-in page (as every page), with one the console's French page, never
    FastAPI's JSON."""
    from fastapi.routing import APIRoute

    routes = [
        route
        for route in world.console.routes
        if isinstance(route, APIRoute) and route.param_convertors
    ]
    assert routes
    async with world.browser() as anonymous, signed_in(world, "operator") as operator:
        for route in routes:
            path = route.path_format
            for name in route.param_convertors:
                path = path.replace(f"{{{name}}}", "zz")
            for method in sorted(route.methods):
                alone = await anonymous.request(method, path)
                assert (alone.status_code, alone.headers.get("location")) == (
                    303,
                    "/connexion",
                ), (method, path, alone.text[:300])
                page = await operator.request(method, path)
                assert page.status_code in (403, 404), (method, path, page.text[:300])
                assert page.headers["content-type"].startswith("text/html"), (method, path)
                if method != "HEAD":
                    assert "<h1>" in page.text, (method, path)


async def test_head_is_answered_where_get_is(world: World) -> None:
    async with world.browser() as anonymous, signed_in(world, "operator") as operator:
        assert (await anonymous.head("/connexion")).status_code == 200
        assert (await anonymous.head("/")).status_code == 303
        head = await operator.head("/partenaires")
        assert head.status_code == 200
        assert head.content == b""


async def test_an_unknown_departement_is_refused_never_read_as_national(world: World) -> None:
    async with signed_in(world, "operator") as browser:
        page = await browser.get("/programmes", params={"departement": "99"})
        assert (page.status_code, page.headers["location"]) == (303, "/programmes")
        shown = await browser.get("/programmes")
        assert "Département « 99 » inconnu" in shown.text
        csrf = _form_csrf(shown.text)
        campaigns = await browser.post(
            "/programmes/campagne", data={"csrf": csrf, "departement": "9Z"}
        )
        assert (campaigns.status_code, campaigns.headers["location"]) == (303, "/programmes")
        after = await browser.get("/programmes")
        assert "Département « 9Z » inconnu" in after.text
        assert "Aucune campagne lancée" in after.text
        assert "Campagne lancée" not in after.text
        nul = await browser.post(
            "/programmes/campagne", data={"csrf": csrf, "departement": "9\x00"}
        )
        assert nul.status_code == 403
        assert "caractère nul" in nul.text
        assert "trop long" not in nul.text
    async with signed_in(world, "officer-93-94") as both:
        path = "/financement/enveloppes"
        narrowed = await both.get(path, params={"annee": YEAR, "departement": "94"})
        assert 'name="departement" maxlength="3" value="94"' in narrowed.text
        unknown = await both.get(path, params={"annee": YEAR, "departement": "XX"})
        assert "Département « XX » inconnu" in unknown.text
        assert 'name="departement" maxlength="3" value="94"' in unknown.text  # not widened
