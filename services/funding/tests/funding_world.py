"""The funding service under test: the running app on a fresh database, partners in its read
model (applied through the consumer's own handler, in an inbox transaction), and callers with
real tokens: officers, ordonnateurs, comptables are distinct people unless a test says not.
Staff act for Val-de-Marne (94), the département of the world's envelopes and conventions, unless
a test names others; operators and admins are national, as the registry makes them."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from jwt_fixtures import SigningKey, claims

from maillage.common.catalog import PartnerRegistered, catalog
from maillage.common.events import Envelope
from maillage.common.inbox import Delivery
from maillage.funding import consumers

YEAR = 2027
DEPARTEMENT = "94"
NATIONAL_ROLES = frozenset({"operator", "admin"})


@dataclass
class Funding:
    app: FastAPI
    asgi: Any
    key: SigningKey
    database_url: str
    subjects: dict[str, str] = field(default_factory=dict)

    @property
    def pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.app.state.runtime.pool
        return pool

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.asgi, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://funding", timeout=60)

    def token(
        self,
        subject: str,
        *roles: str,
        partner_id: uuid.UUID | None = None,
        departements: tuple[str, ...] = (),
        national: bool = False,
    ) -> dict[str, str]:
        signed = self.key.sign(
            claims(
                sub=subject,
                partner_id=str(partner_id) if partner_id else None,
                roles=list(roles),
                exp=int(time.time()) + 3600,
                departements=list(departements) or None,
                national=national or None,
            )
        )
        return {"Authorization": f"Bearer {signed}"}

    def staff(
        self,
        name: str,
        *roles: str,
        departements: tuple[str, ...] = (DEPARTEMENT,),
        national: bool = False,
    ) -> dict[str, str]:
        """A staff member by a test name (``"officer"``, ``"ordonnateur-2"``…): the subject is a
        fresh UUID, as the registry's staff ids are, and stays the same for that name. They act
        for ``departements`` (94), or everywhere when ``national`` or an operator or admin."""
        subject = self.subjects.setdefault(name, str(uuid.uuid4()))
        if national or NATIONAL_ROLES & set(roles):
            return self.token(subject, *roles, national=True)
        return self.token(subject, *roles, departements=departements)

    def officer(self, name: str = "officer") -> dict[str, str]:
        return self.staff(name, "officer")

    def ordonnateur(self, name: str = "ordonnateur") -> dict[str, str]:
        return self.staff(name, "ordonnateur")

    def comptable(self, name: str = "comptable") -> dict[str, str]:
        return self.staff(name, "comptable")

    def partner(self, partner_id: uuid.UUID) -> dict[str, str]:
        return self.token(f"client-{partner_id}", "partner", partner_id=partner_id)

    async def apply(self, event: Any) -> None:
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

    async def verified_partner(
        self,
        legal_name: str,
        kind: str = "association",
        *,
        status: str = "verified",
        siret: str | None = "35600000000048",
        rna: str | None = None,
    ) -> uuid.UUID:
        partner_id = uuid.uuid4()
        await self.apply(
            PartnerRegistered(
                partner_id=partner_id,
                kind=kind,
                legal_name=legal_name,
                status=status,
                version=1,
                siret=siret,
                rna=rna,
                departement="94",
            )
        )
        return partner_id

    async def envelope(
        self, http: httpx.AsyncClient, ae_cents: int, cp_cents: int, year: int = YEAR
    ) -> dict[str, Any]:
        response = await http.post(
            "/envelopes",
            json={"departement": "94", "year": year, "ae_cents": ae_cents, "cp_cents": cp_cents},
            headers=self.ordonnateur("envelope-keeper"),
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def draft(
        self,
        http: httpx.AsyncClient,
        beneficiary: uuid.UUID,
        yearly: list[int],
        *,
        cofinancements: list[dict[str, Any]] | None = None,
        budget: int | None = None,
    ) -> dict[str, Any]:
        cofinancements = cofinancements or []
        response = await http.post(
            "/conventions",
            json={
                "beneficiary_partner_id": str(beneficiary),
                "departement": "94",
                "object": "Cité éducative d'Orly : ateliers de lecture et accompagnement",
                "cite_educative": "Orly",
                "first_year": YEAR,
                "yearly_amounts_cents": yearly,
                "budget_cents": budget
                if budget is not None
                else sum(yearly) + sum(c["amount_cents"] for c in cofinancements),
                "cofinancements": cofinancements,
            },
            headers=self.officer(),
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def programmed(
        self, http: httpx.AsyncClient, beneficiary: uuid.UUID, yearly: list[int], **kwargs: Any
    ) -> dict[str, Any]:
        convention = await self.draft(http, beneficiary, yearly, **kwargs)
        path = f"/conventions/{convention['id']}"
        response = await http.post(f"{path}/instruct", headers=self.officer())
        assert response.status_code == 200, response.text
        response = await http.post(
            f"{path}/programme",
            json={"committee_date": f"{YEAR}-01-15"},
            headers=self.ordonnateur(),
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def sign(
        self, http: httpx.AsyncClient, convention_id: str, who: str = "ordonnateur"
    ) -> httpx.Response:
        return await http.post(
            f"/conventions/{convention_id}/sign",
            json={
                "ej_number": "2103456789",
                "signed_on": f"{YEAR}-02-01",
                "declares_no_interest": True,
            },
            headers=self.ordonnateur(who),
        )

    async def signed(
        self, http: httpx.AsyncClient, beneficiary: uuid.UUID, yearly: list[int], **kwargs: Any
    ) -> dict[str, Any]:
        convention = await self.programmed(http, beneficiary, yearly, **kwargs)
        response = await self.sign(http, convention["id"])
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body
