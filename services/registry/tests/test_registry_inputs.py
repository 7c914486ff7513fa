"""What the registry takes from a client, beyond its size: the JSON type of each number
(``common/kinds.py``)."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI
from jwt_fixtures import JWKSServer, SigningKey
from test_partners_api import app, client, company, register, token
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


async def test_names_with_a_direction_override_or_a_zero_width_space_are_refused(
    app: FastAPI, jwks: tuple[JWKSServer, SigningKey]
) -> None:
    _, key = jwks
    async with client(app, address="192.0.2.77") as http:
        spoofed = await http.post(
            "/partners", json=company(legal_name="Coll\u00e8ge \u202eeloc\u00c9", siret=None)
        )
        zero_width = await http.post(
            "/partners",
            json=company(contacts=[{"name": "Ca\u200bmille", "role": "RSE", "email": "c@ex.org"}]),
        )
        partner = await register(http, siret="73282932000074")
        renamed = await http.patch(
            f"/partners/{partner['id']}",
            json={"legal_name": "Ing\u00e9nieurs\u2066 pour l'\u00e9cole"},
            headers=token(key, partner_id=partner["id"], roles=["partner"]),
        )
        shown = await http.get(
            f"/partners/{partner['id']}",
            headers=token(key, partner_id=partner["id"], roles=["partner"]),
        )
    for response, pointer, character in (
        (spoofed, "#/legal_name", "U+202E"),
        (zero_width, "#/contacts/0/name", "U+200B"),
        (renamed, "#/legal_name", "U+2066"),
    ):
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["code"] == "validation_failed"
        [error] = [error for error in problem["errors"] if error["pointer"] == pointer]
        assert error["type"] == "string_hidden_character"
        assert character in error["detail"]
        assert "invisible ou de contrôle" in error["detail"]
    assert shown.json()["legal_name"] == "Ingénieurs pour l'école"


async def test_operators_list_the_partners_of_one_status(
    app: FastAPI, jwks: tuple[JWKSServer, SigningKey]
) -> None:
    _, key = jwks
    operator = token(key, roles=["operator"])
    async with client(app, address="192.0.2.78") as http:
        verified = await register(http, siret="73282932000074", legal_name="Vérifiée")
        pending = [
            await register(http, siret=siret, legal_name=f"En attente {n}")
            for n, siret in enumerate(("44306184100047", "55210055400013"))
        ]
        await http.post(
            f"/partners/{verified['id']}/verify", json={"reason": "SIRET vu"}, headers=operator
        )
        first = await http.get(
            "/partners", params={"status": "pending", "limit": 1}, headers=operator
        )
        second = await http.get(
            "/partners",
            params={"status": "pending", "limit": 1, "cursor": first.json()["next_cursor"]},
            headers=operator,
        )
        only_verified = await http.get("/partners", params={"status": "verified"}, headers=operator)
        unknown = await http.get("/partners", params={"status": "attente"}, headers=operator)
    assert first.status_code == 200, first.text
    assert [p["id"] for p in first.json()["items"] + second.json()["items"]] == [
        p["id"] for p in pending
    ]
    assert second.json()["next_cursor"] is None
    assert [p["id"] for p in only_verified.json()["items"]] == [verified["id"]]
    assert unknown.status_code == 422
    [error] = unknown.json()["errors"]
    assert (error["in"], error["type"]) == ("query", "enum")
    assert "pending" in error["detail"]
