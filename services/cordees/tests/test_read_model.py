"""The read model of partners follows the registry's events: through the real broker from the
running registry, and handler by handler (versions, suspension)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from cordees_world import Cordees, school_year
from jwt_fixtures import AUDIENCE, ISSUER, JWKSServer, SigningKey

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import drop_database, ensure_database
from maillage.common.auth import Caller, JWKSCache, TokenVerifier
from maillage.common.catalog import PartnerUpdated
from maillage.common.db import create_pool
from maillage.common.problems import Problem
from maillage.cordees import usecases
from maillage.registry import reference
from maillage.registry.app import RegistrySettings, create

DATA = Path(reference.__file__).parent / "data"


@pytest.fixture
async def registry(
    postgres_server_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    jwks: tuple[JWKSServer, SigningKey],
) -> AsyncIterator[httpx.AsyncClient]:
    """The registry, on its own database, with the Val-de-Marne reference sample."""
    server, _ = jwks
    name = f"test_registry_{uuid.uuid4().hex[:10]}"
    await ensure_database(postgres_server_url, name)
    url = database_url_for(postgres_server_url, name)
    app = create(
        RegistrySettings(
            environment="test",
            database_url=url,
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            kafka_idempotent_producer=kafka_idempotent_producer,
            jwks_url=server.url,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            log_level="WARNING",
        )
    )
    try:
        async with LifespanManager(app, startup_timeout=60) as manager:
            app.state.token_verifier = TokenVerifier(
                JWKSCache(server.url), issuer=ISSUER, audience=AUDIENCE
            )
            pool = await create_pool(url)
            try:
                await reference.import_annuaire(pool, DATA / "annuaire-education-demo-94.csv")
                await reference.import_education_prioritaire(
                    pool, DATA / "education-prioritaire-demo-94.csv"
                )
            finally:
                await pool.close()
            transport = httpx.ASGITransport(app=manager.app, client=("192.0.2.40", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
                yield http
    finally:
        await drop_database(postgres_server_url, name)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not within the time limit")
        await asyncio.sleep(0.2)


async def test_the_read_model_follows_the_registry_through_kafka(
    cordees: Cordees, registry: httpx.AsyncClient
) -> None:
    operator = cordees.operator()
    tete = await registry.post(
        "/partners",
        json={
            "kind": "etablissement_superieur",
            "legal_name": "EFREI Paris",
            "siret": "73282932000074",
            "departement": "94",
            "latitude": 48.7887,
            "longitude": 2.3637,
            "contacts": [{"name": "Ada", "role": "Cordées", "email": "ada@example.org"}],
        },
    )
    assert tete.status_code == 201, tete.text
    tete_id = tete.json()["id"]
    verified = await registry.post(
        f"/partners/{tete_id}/verify", json={"reason": "SIRET checked"}, headers=operator
    )
    assert verified.status_code == 200
    desnos = await registry.post(
        "/partners",
        json={
            "kind": "college",
            "legal_name": "Collège Robert Desnos",
            "uai": "0940123Y",
            "contacts": [{"name": "Direction", "role": "Principal", "email": "ce@example.org"}],
        },
    )
    # Pending until it proves control of its mailbox (decision 41): here, an operator verifies.
    assert desnos.json()["status"] == "pending"
    school_id = desnos.json()["id"]
    school_verified = await registry.post(
        f"/partners/{school_id}/verify", json={"reason": "called the school"}, headers=operator
    )
    assert school_verified.status_code == 200, school_verified.text

    async def known(partner_id: str, status: str) -> bool:
        async with cordees.pool.acquire() as connection:
            return bool(
                await connection.fetchval(
                    "SELECT true FROM partners WHERE partner_id = $1 AND status = $2",
                    uuid.UUID(partner_id),
                    status,
                )
            )

    await eventually(lambda: known(tete_id, "verified"))
    await eventually(lambda: known(school_id, "verified"))
    async with cordees.pool.acquire() as connection:
        school = await connection.fetchrow(
            "SELECT * FROM partners WHERE partner_id = $1", uuid.UUID(school_id)
        )
    assert (school["education_prioritaire"], school["academie"]) == ("REP+", "24")
    assert school["latitude"] is not None

    async with cordees.client() as http:
        offer = await cordees.offer(uuid.UUID(tete_id), http, max_distance_km=20)
        match = await cordees.request(uuid.UUID(school_id), http)
        assert (match["status"], match["offer_id"]) == ("proposed", offer["id"])
        assert match["priority_class"] == "REP+"

        suspended = await registry.post(
            f"/partners/{tete_id}/suspend", json={"reason": "audit"}, headers=operator
        )
        assert suspended.status_code == 200
        await eventually(lambda: known(tete_id, "suspended"))

        moved = await http.get(f"/match-requests/{match['id']}", headers=operator)
        another = await cordees.request(uuid.UUID(school_id), http)
        acting = await http.post(
            f"/match-requests/{match['id']}/accept",
            headers=cordees.token(tete_id, "partner"),
        )
        opening = await http.post(
            "/offers",
            json={"school_year": school_year(), "capacity": 1, "levels": ["3e"], "thematics": []},
            headers=cordees.token(tete_id, "partner"),
        )
    # the suspended tête's proposal moved on (no other offer: unmatched), it gets no new one,
    # and it can no longer act
    assert moved.json()["status"] == "unmatched"
    assert another["status"] == "unmatched"
    # refused by the chassis on every write, whatever the route (maillage.common.auth)
    for refused in (acting, opening):
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "partner_not_in_good_standing"


async def test_only_a_newer_version_of_a_partner_applies(cordees: Cordees) -> None:
    school = await cordees.partner("college", name="Collège A")
    facts = {
        "partner_id": school,
        "kind": "college",
        "status": "verified",
        "uai": "0940123Y",
        "departement": "94",
        "latitude": 48.74,
        "longitude": 2.39,
    }
    await cordees.apply(PartnerUpdated(**facts, legal_name="Collège B", version=3))
    await cordees.apply(PartnerUpdated(**facts, legal_name="Collège stale", version=2))
    await cordees.apply(PartnerUpdated(**facts, legal_name="Collège same", version=3))
    async with cordees.pool.acquire() as connection:
        row = await connection.fetchrow("SELECT * FROM partners WHERE partner_id = $1", school)
    assert (row["legal_name"], row["version"], row["uai"]) == ("Collège B", 3, "0940123Y")


async def test_a_suspended_tete_receives_no_proposal_and_a_suspended_school_cannot_request(
    cordees: Cordees,
) -> None:
    near = await cordees.partner("etablissement_superieur", latitude=48.79, longitude=2.40)
    far = await cordees.partner("etablissement_superieur", latitude=48.86, longitude=2.40)
    school = await cordees.partner("college", latitude=48.79, longitude=2.40)
    other = await cordees.partner("college")
    async with cordees.client() as http:
        await cordees.offer(near, http)
        far_offer = await cordees.offer(far, http)
        first = await cordees.request(school, http)
        await cordees.suspend(near)
        moved = await http.get(f"/match-requests/{first['id']}", headers=cordees.operator())
        second = await cordees.request(other, http)  # the suspended tête's offer is not its
        await cordees.suspend(other)
        refused = await http.post(
            "/match-requests",
            json={"school_year": school_year()},
            headers=cordees.token(other, "partner", "school"),
        )
    assert first["offer_id"] != far_offer["id"]
    assert moved.json()["offer_id"] == far_offer["id"]  # its next candidate
    assert moved.json()["declined_offer_ids"] == []  # moved on, not declined
    assert second["offer_id"] == far_offer["id"]
    assert all(a["tete_partner_id"] != str(near) for a in second["proposal"]["alternatives"])
    assert refused.status_code == 403
    assert "suspendu" in refused.json()["detail"]  # French label; the code is a field


SAMPLE_REP_PLUS = 12  # REP+ collèges of the Val-de-Marne sample, once the list is applied
SAMPLE_REP = 10


async def test_coverage_counts_the_reference_schools_the_registry_publishes(
    cordees: Cordees, registry: httpx.AsyncClient
) -> None:
    """The registry's import reaches cordees over the broker; only Desnos registers."""

    async def reference_known() -> bool:
        async with cordees.pool.acquire() as connection:
            counts = await connection.fetchrow(
                """
                SELECT count(*) FILTER (WHERE education_prioritaire = 'REP+') AS rep_plus,
                       count(*) FILTER (WHERE education_prioritaire = 'REP') AS rep
                FROM reference_schools WHERE type = 'Collège'
                """
            )
        return (counts["rep_plus"], counts["rep"]) == (SAMPLE_REP_PLUS, SAMPLE_REP)

    await eventually(reference_known)
    desnos = await registry.post(
        "/partners",
        json={
            "kind": "college",
            "legal_name": "Collège Robert Desnos",
            "uai": "0940123Y",
            "contacts": [{"name": "Direction", "role": "Principal", "email": "ce@example.org"}],
        },
    )
    desnos_id = desnos.json()["id"]

    async def registered() -> bool:
        async with cordees.pool.acquire() as connection:
            return bool(
                await connection.fetchval(
                    "SELECT true FROM partners WHERE partner_id = $1", uuid.UUID(desnos_id)
                )
            )

    await eventually(registered)
    async with cordees.client() as http:
        report = (await http.get("/coverage?departement=94", headers=cordees.operator())).json()
    assert report["rep_plus"] == {"colleges": SAMPLE_REP_PLUS, "encordes": 0, "share": 0.0}
    assert report["rep"]["colleges"] == SAMPLE_REP
    uncovered = {school["uai"]: school for school in report["uncovered_rep_plus"]}
    assert len(uncovered) == SAMPLE_REP_PLUS
    assert uncovered["0940123Y"] == {
        "uai": "0940123Y",
        "name": "Collège Robert Desnos",
        "commune_code": "94054",
        "commune_name": "Orly",
        "registered": True,
        "partner_id": desnos_id,
    }
    # Jean Moulin is REP+ by the 2023-2024 list (REP in the annuaire): the list's event applied.
    assert uncovered["0942584Y"]["name"] == "Collège Jean Moulin"
    assert not uncovered["0942584Y"]["registered"]
    assert sum(school["registered"] for school in uncovered.values()) == 1


async def test_a_suspended_school_keeps_no_proposal_and_cannot_be_accepted(
    cordees: Cordees,
) -> None:
    tete = await cordees.partner("etablissement_superieur", latitude=48.79, longitude=2.40)
    school = await cordees.partner("college", latitude=48.79, longitude=2.40)
    async with cordees.client() as http:
        offer = await cordees.offer(tete, http)
        proposed = await cordees.request(school, http)
        await cordees.suspend(school)
        after = await http.get(f"/match-requests/{proposed['id']}", headers=cordees.operator())
        accepted = await http.post(
            f"/match-requests/{proposed['id']}/accept", headers=cordees.token(tete, "partner")
        )
        pairings = await http.get("/pairings", headers=cordees.operator())
    assert proposed["offer_id"] == offer["id"]
    assert after.json()["status"] == "unmatched"
    assert after.json()["declined_offer_ids"] == []  # withdrawn from the offer, not declined
    assert accepted.status_code in (403, 404, 409)
    assert pairings.json()["items"] == []
    [(_, unmatched)] = await cordees.events("match-request.unmatched.v1")
    assert unmatched["request_id"] == proposed["id"]


async def test_a_use_case_that_finds_its_partner_suspended_answers_as_the_standing_check_does(
    cordees: Cordees,
) -> None:
    """The suspension's event may land between the chassis's standing check (which then passed)
    and the use case's read of the caller's partner: the answer is the same stable code either
    way (an end-to-end run saw 'forbidden' here)."""
    tete = await cordees.partner("etablissement_superieur")
    school = await cordees.partner("college")
    await cordees.suspend(tete)
    await cordees.suspend(school)
    for partner_id, role, acting in (
        (tete, "partner", usecases.acting_tete),
        (school, "school", usecases.acting_school),
    ):
        with pytest.raises(Problem) as refused:
            await acting(
                cordees.pool, Caller(str(uuid.uuid4()), str(partner_id), frozenset({role}))
            )
        assert refused.value.status == 403
        assert refused.value.code == "partner_not_in_good_standing"
        assert refused.value.extensions["partner_status"] == "suspended"
