"""The stages3e service under test: the running app with a clock tests move, partners in its
read model (through the consumer's own handler, in an inbox transaction), callers with real
tokens, and helpers to publish offers and apply."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from jwt_fixtures import SigningKey, claims

from maillage.common.catalog import PartnerRegistered, PartnerVerified, catalog
from maillage.common.events import Envelope
from maillage.common.inbox import Delivery
from maillage.stages3e import consumers, domain
from maillage.stages3e.domain import IsoWeek

UAI_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_numbers = itertools.count(1)


def uai(departement: str = "094") -> str:
    digits = f"{departement}{next(_numbers) % 10000:04d}"
    return digits + UAI_LETTERS[int(digits) % 23]


def week_ahead(weeks: int = 4, start: datetime | None = None) -> IsoWeek:
    """A stage week ``weeks`` or more weeks after ``start`` (now), inside a school year's
    window."""
    day = (start or datetime.now(UTC)).date() + timedelta(weeks=weeks)
    while domain.school_year_of_week(IsoWeek.of(day)) is None:
        day += timedelta(weeks=1)
    return IsoWeek.of(day)


@dataclass
class Stages:
    """The running service and what tests need around it."""

    app: FastAPI
    asgi: Any
    key: SigningKey
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self.app.state.clock = lambda: self.now

    @property
    def pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.app.state.runtime.pool
        return pool

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.asgi, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://stages3e", timeout=120)

    def token(self, partner_id: uuid.UUID | str | None = None, *roles: str) -> dict[str, str]:
        signed = self.key.sign(
            claims(
                sub=f"test-{uuid.uuid4().hex[:8]}",
                partner_id=str(partner_id) if partner_id else None,
                roles=list(roles),
                exp=int(time.time()) + 3600,
            )
        )
        return {"Authorization": f"Bearer {signed}"}

    def host_token(self, partner_id: uuid.UUID) -> dict[str, str]:
        return self.token(partner_id, "partner")

    def school_token(self, partner_id: uuid.UUID) -> dict[str, str]:
        return self.token(partner_id, "partner", "school")

    def operator(self) -> dict[str, str]:
        return self.token(None, "operator")

    async def apply_event(self, event: Any) -> None:
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

    async def partner(
        self,
        kind: str = "entreprise",
        *,
        name: str = "Partenaire",
        latitude: float | None = 48.7465,
        longitude: float | None = 2.3920,
        departement: str = "94",
        education_prioritaire: str | None = None,
        qpv_proximity: bool | None = None,
        status: str = "verified",
    ) -> uuid.UUID:
        partner_id = uuid.uuid4()
        facts = {
            "partner_id": partner_id,
            "kind": kind,
            "legal_name": name,
            "status": status,
            "version": 1,
            "uai": uai(f"0{departement}") if kind in ("college", "lycee") else None,
            "commune_code": f"{departement}054",
            "commune_name": "Orly",
            "departement": departement,
            "latitude": latitude,
            "longitude": longitude,
            "education_prioritaire": education_prioritaire,
            "qpv_proximity": qpv_proximity,
        }
        model = PartnerVerified if status == "verified" else PartnerRegistered
        await self.apply_event(model(**facts))
        return partner_id

    async def school(self, education_prioritaire: str | None = None, **kw: Any) -> uuid.UUID:
        return await self.partner(
            "college", name="Collège", education_prioritaire=education_prioritaire, **kw
        )

    async def offer(
        self, host: uuid.UUID, http: httpx.AsyncClient, **overrides: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "title": "Découverte de l'atelier",
            "description": "Une semaine à l'atelier de mécanique.",
            "sector": "F",
            "weeks": [{"week": str(week_ahead()), "seats": 3}],
        }
        body.update(overrides)
        response = await http.post("/offers", json=body, headers=self.host_token(host))
        assert response.status_code == 201, response.text
        offer: dict[str, Any] = response.json()
        return offer

    async def application(
        self,
        school: uuid.UUID,
        offer: dict[str, Any],
        http: httpx.AsyncClient,
        pupil: str = "3B-07",
        week: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "offer_id": offer["id"],
            "week": week or offer["weeks"][0]["week"],
            "pupil_reference": pupil,
        }
        response = await http.post("/applications", json=body, headers=self.school_token(school))
        assert response.status_code == 201, response.text
        application: dict[str, Any] = response.json()
        return application

    async def events(self, type_suffix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """The outbox's events, oldest first: (type, payload)."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch("SELECT type, payload FROM outbox ORDER BY id")
        return [
            (row["type"], json.loads(row["payload"]))
            for row in rows
            if row["type"].endswith(type_suffix)
        ]
