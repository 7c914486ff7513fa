"""The cordees service under test: the running app, partners in its read model, callers with
real tokens.

Partners enter the read model through the consumer's own handler, on a connection inside an
inbox transaction, as the Kafka consumer would apply them (test_read_model.py also goes through
the real broker).
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from jwt_fixtures import SigningKey, claims

from maillage.common.catalog import (
    PartnerRegistered,
    PartnerSuspended,
    PartnerVerified,
    SchoolReferenced,
    catalog,
)
from maillage.common.events import Envelope
from maillage.common.inbox import Delivery
from maillage.cordees import consumers, matcher

UAI_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_numbers = itertools.count(1)


def uai(departement: str = "094") -> str:
    digits = f"{departement}{next(_numbers) % 10000:04d}"
    return digits + UAI_LETTERS[int(digits) % 23]


def school_year(offset: int = 0) -> str:
    first = int(matcher.school_year_of(date.today())[:4]) + offset
    return f"{first}-{first + 1}"


@dataclass
class Cordees:
    """The running service and what tests need around it."""

    app: FastAPI
    asgi: Any
    key: SigningKey
    database_url: str

    @property
    def pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.app.state.runtime.pool
        return pool

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.asgi, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://cordees", timeout=60)

    def token(self, partner_id: uuid.UUID | str | None = None, *roles: str) -> dict[str, str]:
        signed = self.key.sign(
            claims(
                sub=f"test-{uuid.uuid4().hex[:6]}",
                partner_id=str(partner_id) if partner_id else None,
                roles=list(roles),
                exp=int(time.time()) + 3600,
            )
        )
        return {"Authorization": f"Bearer {signed}"}

    def operator(self) -> dict[str, str]:
        return self.token(None, "operator")

    async def apply(self, event: Any) -> None:
        """Apply a registry event as its consumer group does: handler and inbox row, one
        transaction."""
        spec = catalog.spec_of(event)
        [consumer] = [c for c in consumers.CONSUMERS if spec.event_type in c.handlers]
        _, handler = consumer.handlers[spec.event_type]
        envelope = Envelope(
            id=uuid.uuid4(),
            type=spec.event_type,
            source="test",
            subject=spec.key_of(event),
            time=datetime.now(UTC),
        )
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO inbox (consumer_group, event_id, event_type) VALUES ($1, $2, $3)",
                consumer.group,
                envelope.id,
                envelope.type,
            )
            await handler(event, Delivery(connection, envelope, spec.topic.name, 0, 0))

    async def reference_college(
        self,
        education_prioritaire: str | None,
        *,
        name: str = "Collège",
        departement: str = "94",
        commune_name: str = "Orly",
        school_type: str = "Collège",
    ) -> str:
        """A new school of the reference data (registry.schools), with a valid UAI."""
        code = uai(f"0{departement}")
        await self.apply(
            SchoolReferenced(
                uai=code,
                name=name,
                type=school_type,
                public_private="public",
                departement=departement,
                academie=None,
                commune_code=f"{departement}054",
                commune_name=commune_name,
                education_prioritaire=education_prioritaire,
                latitude=48.79,
                longitude=2.40,
                version=1,
            )
        )
        return code

    async def partner(
        self,
        kind: str,
        *,
        name: str = "Partenaire",
        latitude: float | None = 48.79,
        longitude: float | None = 2.40,
        departement: str = "94",
        education_prioritaire: str | None = None,
        qpv_proximity: bool | None = None,
        status: str = "verified",
        school_uai: str | None = None,
    ) -> uuid.UUID:
        """A new partner in the read model (a school gets ``school_uai``, or a new valid UAI)."""
        partner_id = uuid.uuid4()
        facts = {
            "partner_id": partner_id,
            "kind": kind,
            "legal_name": name,
            "status": status,
            "version": 1,
            "uai": (school_uai or uai(f"0{departement}")) if kind in ("college", "lycee") else None,
            "departement": departement,
            "latitude": latitude,
            "longitude": longitude,
            "education_prioritaire": education_prioritaire,
            "qpv_proximity": qpv_proximity,
        }
        model = PartnerVerified if status == "verified" else PartnerRegistered
        await self.apply(model(**facts))
        return partner_id

    async def suspend(self, partner_id: uuid.UUID) -> None:
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(
                "SELECT * FROM partners WHERE partner_id = $1", partner_id
            )
        facts = {k: v for k, v in dict(row).items() if k not in ("academie", "updated_at")}
        facts["version"] = row["version"] + 1
        facts["status"] = "suspended"
        await self.apply(PartnerSuspended(**facts))

    async def offer(
        self, tete: uuid.UUID, http: httpx.AsyncClient, **overrides: Any
    ) -> dict[str, Any]:
        body = {
            "school_year": school_year(),
            "capacity": 2,
            "levels": ["4e", "3e"],
            "thematics": ["sciences", "numerique"],
            "max_distance_km": 30,
        }
        body.update(overrides)
        response = await http.post("/offers", json=body, headers=self.token(tete, "partner"))
        assert response.status_code == 201, response.text
        offer: dict[str, Any] = response.json()
        return offer

    async def request(
        self, school: uuid.UUID, http: httpx.AsyncClient, **overrides: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"school_year": school_year(), "thematics": ["sciences"]}
        body.update(overrides)
        response = await http.post(
            "/match-requests", json=body, headers=self.token(school, "partner", "school")
        )
        assert response.status_code == 202, response.text
        match: dict[str, Any] = response.json()
        return match

    async def events(self, type_suffix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """The outbox's events, oldest first: (type, payload)."""
        import json

        async with self.pool.acquire() as connection:
            rows = await connection.fetch("SELECT type, payload FROM outbox ORDER BY id")
        return [
            (row["type"], json.loads(row["payload"]))
            for row in rows
            if row["type"].endswith(type_suffix)
        ]
