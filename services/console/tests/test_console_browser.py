"""The console in a real browser: Debian's chromium driven by playwright, one browser for the
whole scenario (each person in their own context, so their own cookies).

An operator verifies a pending partner, replays a dead letter, follows an event's trace across
services as a waterfall, and follows a partner's match request by its request id from the HTTP
call (a collège asks cordées for a cordée) through the proposal cordées publishes and
notifications' consumer to the webhook delivered to the tête de cordée (real spans of the real
services, sent to the trace store); an officer
instructs the requested tranche and is not offered its approval; an ordonnateur approves it; a
comptable records the payment, and the envelope's CP left goes down. Every page shown passes
axe-core's automated rules with no serious or critical violation.

`make test` installs the `chromium` package when it is missing (as root, with apt-get) and stops
with a clear message when it cannot: this test never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_world import PASSWORD, YEAR, World, register, siret, until
from playwright.async_api import Browser, Page, async_playwright

from maillage.console.domain import euros

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).parents[3] / "docs"
PROPOSED = "fr.maillage.cordees.match-request.proposed.v1"
AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the console's browser test needs Debian's chromium "
            "(`make test` installs it as root; otherwise run `apt-get install chromium`)."
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=FLAGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


async def accessible(page: Page) -> None:
    """axe-core's automated rules on the page as shown: no serious or critical violation."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE)
    result: dict[str, Any] = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    grave = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not grave, (page.url, grave)


async def sign_in(browser: Browser, world: World, role: str) -> Page:
    context = await browser.new_context(base_url=world.console_url, locale="fr-FR")
    page = await context.new_page()
    await page.goto("/connexion")
    await accessible(page)
    await page.get_by_label("Adresse électronique").fill(world.accounts[role])
    await page.get_by_label("Mot de passe").fill(PASSWORD)
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url(f"{world.console_url}/")
    await accessible(page)
    return page


async def cp_left(page: Page) -> str:
    await page.goto(f"/financement/enveloppes?annee={YEAR}&departement=94")  # their own
    await accessible(page)
    return await page.locator('tr[data-departement="94"] td.cp-left').inner_text()


async def test_staff_do_their_days_work_in_a_browser(
    browser: Browser,
    world: World,
    funded: dict[str, Any],
    traced: dict[str, str],
    poisoned: str,
    cordee: dict[str, Any],
    tmp_path: Path,
) -> None:
    convention = f"/financement/conventions/{funded['convention_id']}"
    tranche = f"/financement/tranches/{funded['tranche']['id']}"

    # The operator verifies a partner that registered and waits.
    pending = await register(world, "Association en attente (navigateur)", siret(800))
    operator = await sign_in(browser, world, "operator")
    await operator.get_by_role("link", name="Partenaires à vérifier").first.click()
    await accessible(operator)
    await operator.get_by_role("link", name="Association en attente (navigateur)").click()
    await operator.wait_for_url(f"**/partenaires/{pending}")
    await accessible(operator)
    await operator.get_by_label("Motif (vérifier, 3 caractères au moins)").fill("Statuts vus")
    await operator.get_by_role("button", name="Vérifier").click()
    await operator.get_by_text("Fait : vérifier.").wait_for()
    assert "Statuts vus" in await operator.locator("table").nth(0).inner_text()
    await accessible(operator)
    # The operator replays a dead letter from the service's health page.
    await operator.goto("/sante")
    await accessible(operator)
    await operator.locator('a[href="/sante/funding/lettres-mortes"]').click()
    await operator.wait_for_url("**/sante/funding/lettres-mortes")
    await accessible(operator)
    letter = operator.locator("tr", has_text=poisoned)
    await letter.get_by_role("button", name="Rejouer").click()
    await operator.get_by_text(f"Événement {poisoned} rejoué.").wait_for()
    await accessible(operator)
    await operator.goto("/programmes?departement=94")
    await accessible(operator)

    # The operator follows an event to its whole trace, across services, as a waterfall.
    await operator.get_by_role("link", name="Suivre une requête").first.click()
    await operator.get_by_label("Identifiant d'événement").fill(traced["event_id"])
    await operator.get_by_role("button", name="Chercher").click()
    await operator.get_by_role("link", name=traced["trace_id"]).click()
    await operator.locator("tr.span-row").nth(2).wait_for()
    assert await operator.locator("tr.span-row").count() == 3
    process = operator.locator("tr.span-row").nth(2)
    await process.get_by_text("registry.partners process").click()  # opens its attributes
    await process.get_by_text(traced["event_id"]).wait_for()
    await accessible(operator)
    # The operator follows a partner's match request from the HTTP call (the collège asks
    # cordées for a cordée, under its own request id) through the proposal cordées publishes and
    # notifications' consumer to the webhook delivered to the tête de cordée's receiver.
    request_id = f"navigateur-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=world.cordees_url, timeout=10) as cordees:
        asked = await cordees.post(
            "/match-requests",
            json={"school_year": cordee["school_year"], "thematics": ["numerique"]},
            headers={
                **cordee["school_headers"],
                "Idempotency-Key": request_id,
                "X-Request-ID": request_id,
            },
        )
    assert asked.status_code == 202, asked.text
    assert asked.json()["status"] == "proposed", asked.json()
    match_id = asked.json()["id"]

    async def delivered() -> bool:
        spans = world.trace_with("maillage.request_id", request_id)
        return any(
            r["body"].get("type") == PROPOSED and r["body"]["data"].get("request_id") == match_id
            for r in world.received
        ) and any(s.name == "webhook attempt" for s in spans)

    await until(delivered, "the proposal's webhook delivered in the request's trace")
    await world.export_traces("maillage.request_id", request_id)
    await operator.goto("/traces")
    await operator.get_by_label("Identifiant de requête").fill(request_id)
    await operator.get_by_role("button", name="Chercher").click()
    await operator.locator('a[href^="/traces?trace="]').first.click()
    await operator.locator("tr.span-row").first.wait_for()
    rows = operator.locator("tr.span-row")
    services = await rows.evaluate_all("rows => rows.map(r => r.dataset.service)")
    assert services[:2] == ["partenaire", "cordees"], services
    assert "notifications" in services, services
    kinds = await rows.locator("td:nth-child(3)").all_inner_texts()
    hops = {(service, kind) for service, kind in zip(services, kinds, strict=True)}
    assert {
        ("cordees", "requête reçue"),  # the HTTP call
        ("cordees", "publication Kafka"),  # the outbox's relay to the broker
        ("notifications", "traitement d'un événement"),  # its consumer
        ("notifications", "appel sortant"),  # the webhook delivery
    } <= hops, hops
    attempt = rows.filter(has_text="webhook attempt")
    assert await attempt.get_attribute("data-service") == "notifications"
    await attempt.get_by_text("webhook attempt").click()  # opens its attributes
    await attempt.get_by_text(PROPOSED).wait_for()
    await accessible(operator)
    # MAILLAGE_SCREENSHOTS=1 writes the picture to docs/ (the README's); any other run to tmp.
    shots = DOCS if os.environ.get("MAILLAGE_SCREENSHOTS") == "1" else tmp_path
    await operator.set_viewport_size({"width": 1280, "height": 900})
    await operator.screenshot(path=str(shots / "console-waterfall.png"), full_page=True)

    # The officer instructs the requested tranche; approving it is not offered.
    officer = await sign_in(browser, world, "officer")
    await officer.get_by_role("link", name="File de travail").first.click()
    await accessible(officer)
    await officer.get_by_role("link", name="Ateliers de sciences au collège").first.click()
    await officer.wait_for_url(f"**{convention}")
    await accessible(officer)
    await officer.locator(f'form[action="{tranche}/instruct"] button').click()
    await officer.get_by_text("Instruire : fait.").wait_for()
    assert await officer.locator("#tranche-1 .tranche-status").inner_text() == "instruite"
    assert await officer.locator(f'form[action="{tranche}/approve"]').count() == 0
    await accessible(officer)

    # The ordonnateur approves it, declaring no interest in the beneficiary.
    ordonnateur = await sign_in(browser, world, "ordonnateur")
    await ordonnateur.goto(convention)
    approve = ordonnateur.locator(f'form[action="{tranche}/approve"]')
    await approve.get_by_label("Je déclare n'avoir aucun lien d'intérêt").check()
    await approve.get_by_role("button", name="Approuver").click()
    await ordonnateur.get_by_text("Approuver : fait.").wait_for()
    assert await ordonnateur.locator("#tranche-1 .tranche-status").inner_text() == "approuvée"
    await accessible(ordonnateur)

    # The comptable records the payment; the CP left in the envelope go down.
    comptable = await sign_in(browser, world, "comptable")
    before = await cp_left(comptable)
    await comptable.goto(convention)
    pay = comptable.locator(f'form[action="{tranche}/pay"]')
    await pay.get_by_label("Date du paiement").fill(f"{YEAR}-02-16")
    await pay.get_by_label("Référence du paiement").fill("DRFIP94-NAVIGATEUR")
    await pay.get_by_role("button", name="Enregistrer le paiement").click()
    await comptable.get_by_text("Enregistrer le paiement : fait.").wait_for()
    assert await comptable.locator("#tranche-1 .tranche-status").inner_text() == "payée"
    await accessible(comptable)
    after = await cp_left(comptable)
    paid = funded["tranche"]["amount_cents"]  # the form offers the tranche's whole amount
    assert (before, after) == (euros(5_000_000), euros(5_000_000 - paid))
