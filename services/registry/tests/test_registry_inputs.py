"""What the registry takes from a client, beyond its size: the JSON type of each number
(``common/kinds.py``)."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI
from jwt_fixtures import JWKSServer, SigningKey
from test_partners_api import app, client, register, token
from wrong_kinds import WARNINGS, Probe, refuse_wrong_kinds

pytestmark = WARNINGS
__all__ = ["app"]  # the fixture, shared with the partners API tests


async def test_coordinates_refuse_other_json_types(
    app: FastAPI, jwks: tuple[JWKSServer, SigningKey], database_url: str
) -> None:
    _, key = jwks
    async with client(app) as http:
        partner = await register(http, siret="73282932000074")
        probe = Probe(
            "PATCH",
            f"/partners/{partner['id']}",
            token(key, partner_id=partner["id"], roles=["partner"]),
            {"latitude": 48.75, "longitude": 2.39},
            {"latitude": "float", "longitude": "float"},
        )

        async def snapshot() -> list[Any]:
            connection = await asyncpg.connect(database_url)
            try:
                partners = await connection.fetch("SELECT * FROM partners ORDER BY id")
                added = await connection.fetchval("SELECT last_value FROM outbox_id_seq")
            finally:
                await connection.close()
            return [[dict(row) for row in partners], added]

        assert await refuse_wrong_kinds(http, [probe], snapshot) > 10
