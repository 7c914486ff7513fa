"""Capacities, distances and yes-or-no answers are JSON numbers and booleans
(``common/kinds.py``): ``"capacity": true`` no longer opens an offer for one school, and
``"dry_run": "false"`` no longer runs a campaign for real. Each is a 422 in French that changes
nothing."""

from __future__ import annotations

from typing import Any

from cordees_world import Cordees, school_year
from wrong_kinds import WARNINGS, Probe, refuse_wrong_kinds

pytestmark = WARNINGS


async def test_capacities_distances_and_answers_refuse_other_json_types(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    school = await cordees.partner("college")
    async with cordees.client() as http:
        offer = await cordees.offer(tete, http)
        offer_body = {
            "school_year": school_year(),
            "capacity": 2,
            "levels": ["3e"],
            "thematics": ["sciences"],
            "max_distance_km": 30,
        }
        probes = [
            Probe(
                "POST",
                "/offers",
                cordees.token(tete, "partner"),
                offer_body,
                {"capacity": "int", "max_distance_km": "float"},
            ),
            Probe(
                "PATCH",
                f"/offers/{offer['id']}",
                cordees.token(tete, "partner"),
                {"capacity": 3},
                {"capacity": "int"},
            ),
            Probe(
                "POST",
                "/match-requests",
                cordees.token(school, "partner", "school"),
                {"school_year": school_year(), "max_distance_km": 20},
                {"max_distance_km": "float"},
            ),
            Probe(
                "POST",
                "/campaigns",
                cordees.operator(),
                {"departement": "94", "dry_run": True},
                {"dry_run": "bool"},
            ),
        ]

        async def snapshot() -> list[Any]:
            async with cordees.pool.acquire() as connection:
                offers = [
                    dict(row)
                    for row in await connection.fetch("SELECT * FROM cordee_offers ORDER BY id")
                ]
                return [
                    offers,
                    await connection.fetchval("SELECT count(*) FROM match_requests"),
                    await connection.fetchval("SELECT last_value FROM outbox_id_seq"),
                ]

        assert await refuse_wrong_kinds(http, probes, snapshot) > 20
