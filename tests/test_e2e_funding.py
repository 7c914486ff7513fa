"""End to end, as a préfecture and a cité éducative live it: the five services as real processes
under ``maillage dev``.

Staff accounts come from the CLI (an officer, an ordonnateur, a comptable: three people). The
Collège Robert Desnos and the Ville d'Orly register (an operator verifies both), subscribe
webhook endpoints (verified with the official ``standardwebhooks`` library) and e-mail
channels. The ordonnateur opens the Val-de-Marne 2027 envelope; the officer records and
instructs the cité éducative's convention, co-financed by the Ville d'Orly; the ordonnateur
programmes and signs it; the collège requests its advance through the API; the officer
instructs it, the ordonnateur approves it, the comptable pays it. Both partners receive the
signed webhooks and French e-mails; the request and the payment are each one trace, from the
HTTP call in funding to the webhook sent by notifications; no staff subject is in any event.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from otlp_sink import ExportedSpan, OtlpSink
from test_e2e_cordee import (
    CLIENT,
    DATA,
    Stack,
    Webhooks,
    bearer,
    demo_partner,
    maillage,
    partner_token,
    partner_trace,
    sink,
    stack,
    until,
)

pytestmark = pytest.mark.slow
__all__ = ["sink", "stack"]  # the fixtures, shared with the cordée end to end

PASSWORD = "e2e-funding-password"
STAFF = ("operator", "officer", "ordonnateur", "comptable")


def _login(http: httpx.Client, registry: str, role: str) -> dict[str, str]:
    login = http.post(
        f"{registry}/oauth/token",
        data={"grant_type": "password", "username": f"{role}@e2e.test", "password": PASSWORD},
    )
    assert login.status_code == 200, login.text
    return bearer(login.json()["access_token"])


def _confirm_channels(stack: Stack, addresses: list[str]) -> None:
    url = stack.registry_database_url.rsplit("/", 1)[0] + "/notifications"

    async def confirm() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "UPDATE email_channels SET confirmed_at = now(), confirmation_token_hash = NULL"
                " WHERE address = ANY($1::text[])",
                addresses,
            )
        finally:
            await connection.close()

    asyncio.run(confirm())


def _subjects(mail_dir: Path, address: str) -> list[str]:
    subjects = []
    for path in sorted(mail_dir.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if address in str(message["To"]):
            # French typography: narrow no-break spaces in amounts, a no-break space before ":".
            subjects.append(str(message["Subject"]).replace("\u202f", " ").replace("\xa0", " "))
    return subjects


def test_a_convention_from_recording_to_the_paid_advance(stack: Stack, sink: OtlpSink) -> None:
    registry, funding, notifications = (
        stack.urls["registry"],
        stack.urls["funding"],
        stack.urls["notifications"],
    )
    maillage(
        "registry",
        "import-annuaire",
        str(DATA / "annuaire-education-demo-94.csv"),
        "--education-prioritaire",
        str(DATA / "education-prioritaire-demo-94.csv"),
        "--database-url",
        stack.registry_database_url,
    )
    for role in STAFF:
        maillage(
            "registry",
            "create-staff",
            f"{role}@e2e.test",
            "--role",
            role,
            # Funding staff act for Val-de-Marne, the convention's département (decision 64).
            *(() if role == "operator" else ("--departement", "94")),
            "--database-url",
            stack.registry_database_url,
            MAILLAGE_STAFF_PASSWORD=PASSWORD,
        )

    with Webhooks() as webhooks, httpx.Client(timeout=15) as http:
        operator, officer, ordonnateur, comptable = (_login(http, registry, role) for role in STAFF)
        # Both verified by the operator (a collège may instead prove its mailbox: decision 41,
        # the cordée end to end does that).
        college = http.post(f"{registry}/partners", json=demo_partner("Collège Robert Desnos"))
        assert college.status_code == 201, college.text
        college_id = college.json()["id"]
        orly = http.post(f"{registry}/partners", json=demo_partner("Ville d'Orly"))
        assert orly.status_code == 201, orly.text
        orly_id = orly.json()["id"]
        for partner_id in (college_id, orly_id):
            verified = http.post(
                f"{registry}/partners/{partner_id}/verify",
                json={"reason": "e2e"},
                headers=operator,
            )
            assert verified.status_code == 200, verified.text
        tokens = {
            "college": partner_token(http, registry, operator["Authorization"][7:], college_id),
            "orly": partner_token(http, registry, operator["Authorization"][7:], orly_id),
        }
        addresses = {"college": "desnos@e2e.test", "orly": "orly@e2e.test"}
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
        _confirm_channels(stack, list(addresses.values()))

        envelope = http.post(
            f"{funding}/envelopes",
            json={
                "departement": "94",
                "year": 2027,
                "ae_cents": 100_000_000,
                "cp_cents": 50_000_000,
            },
            headers=ordonnateur,
        )
        assert envelope.status_code == 201, envelope.text

        def record() -> httpx.Response | None:
            response = http.post(
                f"{funding}/conventions",
                json={
                    "beneficiary_partner_id": college_id,
                    "departement": "94",
                    "object": "Cité éducative d'Orly : ateliers et continuité éducative",
                    "cite_educative": "Orly",
                    "first_year": 2027,
                    "yearly_amounts_cents": [16_000_000, 16_000_000, 16_000_000],
                    "budget_cents": 66_000_000,
                    "cofinancements": [
                        {"name": "Ville d'Orly", "partner_id": orly_id, "amount_cents": 18_000_000}
                    ],
                },
                headers={**officer, "Idempotency-Key": "e2e-convention"},
            )
            return response if response.status_code == 201 else None

        convention = until(record, "the partners to be known to funding").json()
        path = f"{funding}/conventions/{convention['id']}"
        assert http.post(f"{path}/instruct", headers=officer).status_code == 200
        programmed = http.post(
            f"{path}/programme", json={"committee_date": "2027-01-12"}, headers=ordonnateur
        )
        assert programmed.status_code == 200, programmed.text
        signed = http.post(
            f"{path}/sign",
            json={
                "ej_number": "2103000147",
                "signed_on": "2027-01-20",
                "declares_no_interest": True,
            },
            headers=ordonnateur,
        )
        assert signed.status_code == 200, signed.text
        advance = signed.json()["tranches"][0]
        for name in ("college", "orly"):
            webhooks.wait_for(name, "fr.maillage.funding.convention.signed.v1")

        tranche = f"{funding}/tranches/{advance['id']}"
        with partner_trace("the collège requests its advance") as request_trace:
            requested = http.post(f"{tranche}/request", headers=bearer(tokens["college"]))
        assert requested.status_code == 200, requested.text
        assert http.post(f"{tranche}/instruct", headers=officer).status_code == 200
        approved = http.post(
            f"{tranche}/approve", json={"declares_no_interest": True}, headers=ordonnateur
        )
        assert approved.status_code == 200, approved.text
        with partner_trace("the comptable pays") as pay_trace:
            paid = http.post(
                f"{tranche}/pay",
                json={
                    "paid_on": "2027-02-16",
                    "amount_cents": advance["amount_cents"],
                    "payment_reference": "DRFIP94-000147",
                },
                headers=comptable,
            )
        assert paid.status_code == 200, paid.text

        for name in ("college", "orly"):
            asked = webhooks.wait_for(name, "fr.maillage.funding.tranche.requested.v1")
            assert asked["trace_id"] == request_trace
            payment = webhooks.wait_for(name, "fr.maillage.funding.tranche.paid.v1")
            assert payment["data"]["amount_cents"] == 8_000_000
            assert payment["data"]["beneficiary_partner_id"] == college_id
            assert payment["trace_id"] == pay_trace
        deliveries = [(item["partner"], item["webhook_id"]) for item in webhooks.received]
        assert len(deliveries) == len(set(deliveries))
        staff_subjects = {
            jwt.decode(headers["Authorization"][7:], options={"verify_signature": False})["sub"]
            for headers in (officer, ordonnateur, comptable)
        }
        published = str([item["data"] for item in webhooks.received])
        assert not any(subject in published for subject in staff_subjects)

    mail_dir = stack.mail_dir

    def mails_up_to_the_payment(address: str) -> list[str] | None:
        subjects = _subjects(mail_dir, address)
        return subjects if any("versée" in subject for subject in subjects) else None

    for address in addresses.values():
        subjects = until(
            lambda a=address: mails_up_to_the_payment(a), f"the mails of {address}", timeout=60
        )
        assert any(s.startswith("Convention signée : 480 000,00 €") for s in subjects), subjects
        assert any(s.startswith("Tranche n° 1 versée : 80 000,00 €") for s in subjects), subjects

    def whole_trace(trace_id: str) -> list[ExportedSpan] | None:
        spans = sink.trace(trace_id)
        webhook_sent = any(
            span.kind == CLIENT and span.name == "webhook attempt"
            for span in spans
            if span.service == "maillage-notifications"
        )
        return spans if webhook_sent else None

    for trace_id in (request_trace, pay_trace):
        spans: list[Any] = until(
            lambda t=trace_id: whole_trace(t), f"the spans of {trace_id}", timeout=30
        )
        ids = {span.span_id for span in spans}
        roots = [span for span in spans if span.parent_span_id not in ids]
        assert len(roots) == 1, roots
        assert roots[0].service == "maillage-funding"
