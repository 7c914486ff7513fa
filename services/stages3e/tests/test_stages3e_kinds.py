"""Seats, caps, coordinates and yes-or-no answers are JSON numbers and booleans
(``common/kinds.py``): ``"seats": true`` published an offer of one seat. Now a 422 in French that
publishes nothing."""

from __future__ import annotations

from typing import Any

from stages3e_world import Stages, week_ahead
from wrong_kinds import WARNINGS, Probe, refuse_wrong_kinds

pytestmark = WARNINGS


async def test_seats_caps_and_answers_refuse_other_json_types(stages: Stages) -> None:
    host = await stages.partner()
    async with stages.client() as http:
        await stages.offer(host, http)
        probe = Probe(
            "POST",
            "/offers",
            stages.host_token(host),
            {
                "title": "Découverte de l'atelier",
                "description": "Une semaine à l'atelier de mécanique.",
                "sector": "F",
                "latitude": 48.75,
                "longitude": 2.39,
                "accessible": True,
                "max_candidates": 10,
                "weeks": [{"week": str(week_ahead()), "seats": 3, "reserved": 1}],
            },
            {
                "weeks/0/seats": "int",
                "weeks/0/reserved": "int",
                "max_candidates": "int",
                "accessible": "bool",
                "latitude": "float",
            },
        )

        async def snapshot() -> list[Any]:
            async with stages.pool.acquire() as connection:
                return [
                    await connection.fetchval(f"SELECT count(*) FROM {table}")
                    for table in ("stage_offers", "offer_weeks")
                ] + [await connection.fetchval("SELECT last_value FROM outbox_id_seq")]

        assert await refuse_wrong_kinds(http, [probe], snapshot) > 20
