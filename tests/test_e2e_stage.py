"""End to end, a stage de 3e as partners live it: the five services as real processes under
``maillage dev`` (the stack, receiver and helpers are the cordée end-to-end test's).

A company registers and an operator verifies it; the Collège Robert Desnos (REP+) registers and
is verified by its UAI; each gets API credentials, subscribes a webhook endpoint (verified with
the official ``standardwebhooks`` library) and an e-mail channel. The company publishes an offer
near Orly; the collège finds it by distance from its own place, applies for a pupil (by its own
reference), the company accepts by API, the collège confirms. Both receive each transition as a
webhook and as a French e-mail, no delivery names the pupil, and the confirmation is one trace
from the collège's HTTP call to the webhooks.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta

import asyncpg
import httpx
from otlp_sink import OtlpSink
from test_e2e_cordee import (  # the stack and helpers, shared with the cordée flow
    CLIENT,
    DATA,
    Stack,
    Webhooks,
    bearer,
    demo_partner,
    mailed_code,
    maillage,
    partner_token,
    partner_trace,
    pytestmark,  # noqa: F401  (slow)
    sink,  # noqa: F401  (fixture)
    stack,  # noqa: F401  (fixture)
    until,
)

from maillage.stages3e import domain

PUPIL = "E2E-PUPIL-3B07"


def stage_week() -> str:
    day = date.today() + timedelta(weeks=4)
    while domain.school_year_of_week(domain.IsoWeek.of(day)) is None:
        day += timedelta(weeks=1)
    return str(domain.IsoWeek.of(day))


def confirm_channels(database_url: str, addresses: list[str]) -> None:
    """The addresses are fictitious: confirm them in the database, as the demo does."""

    async def run() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                "UPDATE email_channels SET confirmed_at = now(), confirmation_token_hash = NULL"
                " WHERE address = ANY($1::text[])",
                addresses,
            )
        finally:
            await connection.close()

    asyncio.run(run())


def test_a_stage_from_registration_to_confirmation(
    stack: Stack,  # noqa: F811
    sink: OtlpSink,  # noqa: F811
) -> None:
    registry, stages, notifications = (
        stack.urls["registry"],
        stack.urls["stages3e"],
        stack.urls["notifications"],
    )
    maillage(
        "registry", "import-annuaire", str(DATA / "annuaire-education-demo-94.csv"),
        "--education-prioritaire", str(DATA / "education-prioritaire-demo-94.csv"),
        "--database-url", stack.registry_database_url,
    )  # fmt: skip
    maillage(
        "registry", "create-staff", "operator@e2e.test", "--role", "operator",
        "--database-url", stack.registry_database_url,
        MAILLAGE_STAFF_PASSWORD="e2e-operator-password",
    )  # fmt: skip
    week = stage_week()
    addresses = {"host": "stages@orly-services.e2e", "college": "ce.0940123y@ac-creteil.e2e"}
    with Webhooks() as webhooks, httpx.Client(timeout=15) as http:
        login = http.post(
            f"{registry}/oauth/token",
            data={"grant_type": "password", "username": "operator@e2e.test",
                  "password": "e2e-operator-password"},
        )  # fmt: skip
        operator = login.json()["access_token"]
        company = http.post(f"{registry}/partners", json=demo_partner("Aéroport d'Orly"))
        assert company.status_code == 201, company.text
        host_id = company.json()["id"]
        verified = http.post(
            f"{registry}/partners/{host_id}/verify",
            json={"reason": "e2e"},
            headers=bearer(operator),
        )
        assert verified.status_code == 200, verified.text
        college = http.post(f"{registry}/partners", json=demo_partner("Collège Robert Desnos"))
        assert college.status_code == 201, college.text
        assert college.json()["education_prioritaire"] == "REP+"
        college_id = college.json()["id"]
        # The collège proves control of its institutional mailbox (decision 41).
        mailbox = college.json()["school_claim"]["mailbox"]
        code = until(lambda: mailed_code(stack.mail_dir, mailbox), f"the code mailed to {mailbox}")
        proven = http.post(
            f"{registry}/partners/{college_id}/school-claim",
            json={"code": code},
            headers=bearer(college.json()["registration_access_token"]),
        )
        assert proven.json()["status"] == "verified", proven.text
        tokens = {
            "host": partner_token(http, registry, operator, host_id),
            "college": partner_token(http, registry, operator, college_id),
        }
        for name, token in tokens.items():
            endpoint = http.post(
                f"{notifications}/webhook-endpoints",
                json={"url": webhooks.url(name), "event_types": []},
                headers=bearer(token),
            )
            assert endpoint.status_code == 201, endpoint.text
            webhooks.secrets[name] = endpoint.json()["secret"]
            channel = http.post(
                f"{notifications}/email-channels",
                json={"address": addresses[name]},
                headers=bearer(token),
            )
            assert channel.status_code in (201, 202), channel.text
        confirm_channels(
            stack.registry_database_url.rsplit("/", 1)[0] + "/notifications",
            list(addresses.values()),
        )

        # The company publishes once stages3e has heard of it from the registry's events.
        def publish() -> httpx.Response | None:
            response = http.put(
                f"{stages}/offers/by-remote-id/e2e-stage",
                json={"title": "Les métiers de l'aéroport", "description": "Une semaine.",
                      "sector": "O", "latitude": 48.7262, "longitude": 2.3652,
                      "weeks": [{"week": week, "seats": 2, "reserved": 1}]},
                headers=bearer(tokens["host"]),
            )  # fmt: skip
            return response if response.status_code == 201 else None

        offer_id = until(publish, "the company to be known to stages3e").json()["id"]
        webhooks.wait_for("host", "fr.maillage.stages3e.offer.published.v1")

        # The collège finds it by distance from its own place, and applies.
        def find() -> httpx.Response | None:
            response = http.get(
                f"{stages}/offers",
                params={"radius_km": 10, "week": week},
                headers=bearer(tokens["college"]),
            )
            return response if response.status_code == 200 else None

        found = until(find, "the collège to be known to stages3e").json()["items"]
        assert [offer["id"] for offer in found] == [offer_id]
        assert found[0]["distance_km"] < 10
        assert found[0]["weeks"][0]["free"] == 2  # REP+: the reserved seat is its to take too
        applied = http.post(
            f"{stages}/applications",
            json={"offer_id": offer_id, "week": week, "pupil_reference": PUPIL},
            headers={**bearer(tokens["college"]), "Idempotency-Key": "e2e-application"},
        )
        assert applied.status_code == 201, applied.text
        application_id = applied.json()["id"]
        accepted = http.post(
            f"{stages}/applications/{application_id}/accept", headers=bearer(tokens["host"])
        )
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["pupil_reference"] is None  # the host never sees it
        with partner_trace("the collège confirms") as confirm_trace:
            confirmed = http.post(
                f"{stages}/applications/{application_id}/confirm",
                headers=bearer(tokens["college"]),
            )
        assert confirmed.status_code == 200, confirmed.text
        for partner in ("host", "college"):
            for verb in ("submitted", "accepted", "confirmed"):
                delivered = webhooks.wait_for(
                    partner, f"fr.maillage.stages3e.application.{verb}.v1"
                )
                assert delivered["data"]["application_id"] == application_id
                assert delivered["data"]["school_partner_id"] == college_id
                assert delivered["data"]["offer_partner_id"] == host_id
            assert (
                webhooks.wait_for(partner, "fr.maillage.stages3e.application.confirmed.v1")[
                    "trace_id"
                ]
                == confirm_trace
            )
        assert PUPIL not in json.dumps(webhooks.received)

    # French e-mails for both, in the development mailbox, none naming the pupil.
    def mails() -> list[str] | None:
        texts = [path.read_text() for path in sorted(stack.mail_dir.glob("*.eml"))]
        confirmations = [t for t in texts if "confirm" in t and "Stage de 3e" in t]
        return texts if len(confirmations) >= 2 else None

    texts = until(mails, "the confirmation e-mails", timeout=60)
    for address in addresses.values():
        assert any(f"To: {address}" in text and "Bonjour" in text for text in texts), address
    assert not any(PUPIL in text for text in texts)

    # The confirmation is one trace, from stages3e's HTTP call to the webhooks.
    def whole_trace() -> list | None:
        spans = sink.trace(confirm_trace)
        sent = [s for s in spans if s.service == "maillage-notifications" and s.kind == CLIENT
                and s.name == "webhook attempt"]  # fmt: skip
        return (
            spans
            if len(sent) >= 2 and any(s.service == "maillage-stages3e" for s in spans)
            else None
        )

    spans = until(whole_trace, "the confirmation's spans", timeout=30)
    ids = {span.span_id for span in spans}
    roots = [span for span in spans if span.parent_span_id not in ids]
    assert len(roots) == 1
    assert roots[0].service == "maillage-stages3e"
