"""Amounts, years and yes-or-no answers are JSON integers and booleans (``common/kinds.py``).

The tester's case: as comptable, ``"amount_cents": true`` paid a tranche 1 cent, and
``"budget_cents": true`` or ``"100"`` created a convention. Each is now a 422 in French that
leaves envelopes, conventions, tranches and the outbox as they were.
"""

from __future__ import annotations

from typing import Any

from funding_world import YEAR, Funding
from wrong_kinds import WARNINGS, Probe, refuse_wrong_kinds

pytestmark = WARNINGS


async def test_amounts_years_and_answers_refuse_other_json_types(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    async with funding.client() as http:
        await funding.envelope(http, 10_000_000, 10_000_000)
        convention = await funding.signed(http, beneficiary, [1_000_000])
        tranche = convention["tranches"][0]["id"]
        programmed = await funding.programmed(http, beneficiary, [500_000])
        probes = [
            Probe(
                "POST",
                f"/tranches/{tranche}/pay",
                funding.comptable(),
                {
                    "paid_on": f"{YEAR}-03-01",
                    "amount_cents": 100,
                    "payment_reference": "DRFIP-94-000123",
                },
                {"amount_cents": "int"},
            ),
            Probe(
                "POST",
                "/conventions",
                funding.officer(),
                {
                    "beneficiary_partner_id": str(beneficiary),
                    "departement": "94",
                    "object": "Ateliers de lecture",
                    "first_year": YEAR,
                    "yearly_amounts_cents": [100],
                    "budget_cents": 200,
                    "cofinancements": [{"name": "Ville d'Orly", "amount_cents": 100}],
                    "advance_percent": 30,
                },
                {
                    "budget_cents": "int",
                    "first_year": "int",
                    "yearly_amounts_cents/0": "int",
                    "cofinancements/0/amount_cents": "int",
                    "advance_percent": "int",
                },
            ),
            Probe(
                "POST",
                "/envelopes",
                funding.ordonnateur("envelope-keeper"),
                {"departement": "93", "year": YEAR, "ae_cents": 100, "cp_cents": 100},
                {"year": "int", "ae_cents": "int", "cp_cents": "int"},
            ),
            Probe(
                "POST",
                f"/conventions/{programmed['id']}/sign",
                funding.ordonnateur(),
                {
                    "ej_number": "2103456789",
                    "signed_on": f"{YEAR}-02-01",
                    "declares_no_interest": True,
                },
                {"declares_no_interest": "bool"},
            ),
        ]

        async def snapshot() -> list[Any]:
            async with funding.pool.acquire() as connection:
                rows = [
                    [
                        dict(row)
                        for row in await connection.fetch(f"SELECT * FROM {table} ORDER BY id")
                    ]
                    for table in ("envelopes", "conventions", "tranches")
                ]
                # The relay may mark or remove rows meanwhile: the sequence says what was added.
                return [*rows, await connection.fetchval("SELECT last_value FROM outbox_id_seq")]

        assert await refuse_wrong_kinds(http, probes, snapshot) > 40
