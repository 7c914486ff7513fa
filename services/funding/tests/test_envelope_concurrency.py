"""Envelopes never go below zero, even with concurrent decisions: 40 signatures at once that
together ask for more AE than the envelope holds, and payments at once beyond its CP, through
the HTTP API on the real PostgreSQL (each request on its own pooled connection)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from funding_world import YEAR, Funding


async def test_forty_concurrent_signatures_never_overspend_the_ae(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    async with funding.client() as http:
        # 40 conventions of 10,000.00 EUR; the envelope holds 25 of them and a bit.
        envelope = await funding.envelope(http, ae_cents=25_500_000, cp_cents=1)
        conventions = [await funding.programmed(http, beneficiary, [1_000_000]) for _ in range(40)]
        answers = await asyncio.gather(
            *(
                funding.sign(http, convention["id"], who=f"ordonnateur-{index % 4}")
                for index, convention in enumerate(conventions)
            )
        )
        final = (await http.get(f"/envelopes/{envelope['id']}", headers=funding.officer())).json()
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 25 + [409] * 15
    refused = [answer.json() for answer in answers if answer.status_code == 409]
    assert {problem["code"] for problem in refused} == {"envelope_exhausted"}
    assert all(problem["remaining_cents"] == 500_000 for problem in refused)
    assert all("500000 centimes" in problem["detail"] for problem in refused)
    assert final["ae_engaged_cents"] == 25_000_000
    assert final["ae_available_cents"] == 500_000
    signed = await funding.pool.fetchval("SELECT count(*) FROM conventions WHERE status = 'signed'")
    assert signed == 25


async def _approved_advance(funding: Funding, http: Any, beneficiary: Any) -> str:
    convention = await funding.signed(http, beneficiary, [1_000_000])
    advance = convention["tranches"][0]
    tranche = f"/tranches/{advance['id']}"
    assert (await http.post(f"{tranche}/request", headers=funding.partner(beneficiary))).is_success
    assert (await http.post(f"{tranche}/instruct", headers=funding.officer())).is_success
    approved = await http.post(
        f"{tranche}/approve", json={"declares_no_interest": True}, headers=funding.ordonnateur()
    )
    assert approved.status_code == 200, approved.text
    return str(advance["id"])


async def test_concurrent_payments_never_overspend_the_cp(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    async with funding.client() as http:
        envelope = await funding.envelope(http, ae_cents=100_000_000, cp_cents=2_000_000)
        tranches = [await _approved_advance(funding, http, beneficiary) for _ in range(8)]
        payment = {
            "paid_on": f"{YEAR}-03-01",
            "amount_cents": 500_000,
            "payment_reference": "DRFIP-94",
        }
        answers = await asyncio.gather(
            *(
                http.post(f"/tranches/{t}/pay", json=payment, headers=funding.comptable())
                for t in tranches
            )
        )
        final = (await http.get(f"/envelopes/{envelope['id']}", headers=funding.officer())).json()
    assert sorted(answer.status_code for answer in answers) == [200] * 4 + [409] * 4
    assert final["cp_paid_cents"] == 2_000_000
    assert final["cp_available_cents"] == 0


async def test_the_database_itself_refuses_overspending(funding: Funding) -> None:
    """The CHECK constraints hold even for a writer that skips the use cases."""
    async with funding.client() as http:
        envelope = await funding.envelope(http, ae_cents=100, cp_cents=100)
    with pytest.raises(asyncpg.CheckViolationError):
        await funding.pool.execute(
            "UPDATE envelopes SET ae_engaged_cents = 101 WHERE id = $1", envelope["id"]
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await funding.pool.execute(
            "UPDATE envelopes SET cp_paid_cents = -1 WHERE id = $1", envelope["id"]
        )
