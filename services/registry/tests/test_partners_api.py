"""The registre des partenaires over HTTP: registration, clearance, changes, verification."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from jwt_fixtures import AUDIENCE, ISSUER, JWKSServer, SigningKey, claims

from maillage.common import sealing
from maillage.common.auth import JWKSCache, TokenVerifier
from maillage.common.catalog import PartnerFacts, school_claim_seal_context
from maillage.registry import reference
from maillage.registry.app import RegistrySettings, create

DEMO_ANNUAIRE = Path(reference.__file__).parent / "data" / "annuaire-education-demo-94.csv"
# Notifications' claim-seal key, as the tests play it: the registry gets its public half only.
CLAIM_SEAL_PRIVATE_KEY = sealing.generate_private_pem()


@pytest.fixture
async def app(
    database_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    jwks: tuple[JWKSServer, SigningKey],
) -> AsyncIterator[FastAPI]:
    server, _ = jwks
    settings = RegistrySettings(
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
        jwks_url=server.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        registrations_per_minute=5,
        claim_seal_public_key=sealing.public_pem(CLAIM_SEAL_PRIVATE_KEY),
    )
    app = create(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        app.state.token_verifier = TokenVerifier(
            JWKSCache(server.url), issuer=ISSUER, audience=AUDIENCE
        )
        yield manager.app  # type: ignore[misc]


def client(app: FastAPI, address: str = "192.0.2.10") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://registry")


def token(key: SigningKey, *, partner_id: str | None = None, roles: list[str]) -> dict[str, str]:
    signed = key.sign(
        claims(sub=f"user-{uuid.uuid4().hex[:6]}", partner_id=partner_id, roles=roles)
    )
    return {"Authorization": f"Bearer {signed}"}


def company(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "entreprise",
        "legal_name": "Ingénieurs pour l'école",
        "siret": "73282932000074",
        "commune_code": "94054",
        "commune_name": "Orly",
        "departement": "94",
        "address": "1 place du Fer à Cheval",
        "postal_code": "94310",
        "latitude": 48.7433,
        "longitude": 2.3936,
        "programmes": ["stages3e"],
        "cites_educatives": ["Orly"],
        "contacts": [
            {"name": "Camille Martin", "role": "Responsable RSE", "email": "camille@example.org"}
        ],
    }
    body.update(overrides)
    return body


async def test_registration_creates_a_pending_partner_and_publishes_no_contact(
    app: FastAPI, database_url: str
) -> None:
    async with client(app) as http:
        response = await http.post("/partners", json=company(siret="73282932000074"))
    assert response.status_code == 201, response.text
    partner = response.json()
    assert partner["status"] == "pending"
    assert partner["siren"] == "732829320"
    assert partner["contacts"][0]["email"] == "camille@example.org"

    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT type, payload FROM outbox ORDER BY id")
        history = await connection.fetch("SELECT * FROM partner_status_history")
    finally:
        await connection.close()
    assert [row["type"] for row in rows] == ["fr.maillage.registry.partner.registered.v1"]
    payload = json.loads(rows[0]["payload"])
    assert set(payload) <= set(PartnerFacts.model_fields)
    assert "Camille" not in rows[0]["payload"]
    assert "camille@example.org" not in rows[0]["payload"]
    assert [(h["to_status"], h["actor"]) for h in history] == [("pending", "registration")]


async def test_invalid_identifiers_get_one_error_per_field(app: FastAPI) -> None:
    async with client(app) as http:
        response = await http.post(
            "/partners",
            json=company(siret="73282932000075", commune_code="9405"),
        )
        school = await http.post(
            "/partners", json=company(kind="college", siret=None, uai="0940123A")
        )
        missing = await http.post("/partners", json=company(kind="association", siret=None))
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_failed"
    pointers = {error["pointer"]: error["detail"] for error in problem["errors"]}
    assert set(pointers) == {"#/siret", "#/commune_code"}
    assert "73282932000075" in pointers["#/siret"]
    assert school.status_code == 422
    [uai_error] = school.json()["errors"]
    assert uai_error["pointer"] == "#/uai"
    assert "Y" in uai_error["detail"]  # names the expected check letter
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["pointer"] in ("#/rna", "#/siret")


async def test_identifiers_that_pass_their_check_but_are_never_assigned_are_422(
    app: FastAPI,
) -> None:
    """The issue's input: an entreprise with SIRET 00000000000000 answered 201 and stored
    SIREN 000000000. Such numbers pass their check digit or letter; none was ever assigned."""
    async with client(app) as http:
        company_of_zeros = await http.post(
            "/partners", json=company(siret="00000000000000", commune_code="94000")
        )
        association = await http.post(
            "/partners", json=company(kind="association", siret=None, rna="W000000000")
        )
        school = await http.post(
            "/partners", json=company(kind="college", siret=None, uai="0000000A")
        )
    assert company_of_zeros.status_code == 422
    pointers = {e["pointer"]: e["detail"] for e in company_of_zeros.json()["errors"]}
    assert pointers == {
        "#/siret": "Le SIRET 00000000000000 passe sa clé de contrôle mais son SIREN 000000000 "
        "n'est jamais attribué (que des zéros).",
        "#/commune_code": "Le code commune INSEE 94000 n'est jamais attribué : les communes sont "
        "numérotées à partir de 1 dans leur département.",
    }
    assert association.status_code == 422
    assert association.json()["errors"][0]["pointer"] == "#/rna"
    assert school.status_code == 422
    assert (
        "commence par 000, qui ne numérote aucun département"
        in school.json()["errors"][0]["detail"]
    )


async def test_an_identifier_registered_twice_names_the_existing_partner(app: FastAPI) -> None:
    async with client(app) as http:
        first = await http.post("/partners", json=company(siret="44306184100047"))
        again = await http.post(
            "/partners", json=company(siret="44306184100047", legal_name="Other")
        )
    assert again.status_code == 409
    problem = again.json()
    assert problem["code"] == "partner_exists"
    assert problem["existing_partner_id"] == first.json()["id"]
    assert problem["field"] == "siret"


async def test_idempotency_key_replays_the_first_response(app: FastAPI, database_url: str) -> None:
    body = company(siret="55210055400013")
    headers = {"Idempotency-Key": f"register-{uuid.uuid4()}"}
    async with client(app) as http:
        first = await http.post("/partners", json=body, headers=headers)
        replay = await http.post("/partners", json=body, headers=headers)
        other = await http.post(
            "/partners", json={**body, "legal_name": "Changed"}, headers=headers
        )
    assert first.status_code == replay.status_code == 201
    shown_once = {"registration_access_token", "registration_access_token_expires_at"}
    assert {k: v for k, v in replay.json().items() if k not in shown_once} == {
        k: v for k, v in first.json().items() if k not in shown_once
    }
    # The stored answer never holds the token: a replay gets a new one, the first one is void.
    assert replay.json()["registration_access_token"] != first.json()["registration_access_token"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    async with client(app) as http:
        partner_url = f"/partners/{first.json()['id']}"
        old_token = first.json()["registration_access_token"]
        new_token = replay.json()["registration_access_token"]
        voided = await http.get(partner_url, headers={"Authorization": f"Bearer {old_token}"})
        current = await http.get(partner_url, headers={"Authorization": f"Bearer {new_token}"})
    assert voided.status_code == 401
    assert current.status_code == 200
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM partners") == 1
    finally:
        await connection.close()


async def test_registration_is_rate_limited_per_address(app: FastAPI) -> None:
    statuses = []
    async with client(app, address="198.51.100.7") as http:
        for _ in range(6):
            response = await http.post("/partners", json=company(siret="invalid"))
            statuses.append(response.status_code)
        limited = response
    async with client(app, address="198.51.100.8") as http:
        other_address = await http.post("/partners", json=company(siret="invalid"))
    assert statuses == [422] * 5 + [429]
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert other_address.status_code == 422


async def register(http: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await http.post("/partners", json=company(**overrides))
    assert response.status_code == 201, response.text
    partner: dict[str, Any] = response.json()
    return partner


async def test_fields_follow_the_callers_clearance(
    app: FastAPI, jwks: tuple[JWKSServer, SigningKey]
) -> None:
    _, key = jwks
    async with client(app) as http:
        target = await register(http, siret="73282932000074")
        verified = await register(http, siret="44306184100047", legal_name="Vérifiée")
        unverified = await register(http, siret="55210055400013", legal_name="En attente")
        operator = token(key, roles=["operator"])
        reason = {"reason": "SIRET checked in SIRENE"}
        await http.post(f"/partners/{verified['id']}/verify", json=reason, headers=operator)

        anonymous = await http.get(f"/partners/{target['id']}")
        as_unverified = await http.get(
            f"/partners/{target['id']}",
            headers=token(key, partner_id=unverified["id"], roles=["partner"]),
        )
        as_verified = await http.get(
            f"/partners/{target['id']}",
            headers=token(key, partner_id=verified["id"], roles=["partner"]),
        )
        as_itself = await http.get(
            f"/partners/{target['id']}",
            headers=token(key, partner_id=target["id"], roles=["partner"]),
        )
        as_operator = await http.get(f"/partners/{target['id']}", headers=operator)
        contacts_as_other = await http.get(
            f"/partners/{target['id']}/contacts",
            headers=token(key, partner_id=verified["id"], roles=["partner"]),
        )
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthenticated"
    public = as_unverified.json()
    assert public["legal_name"] == target["legal_name"]
    assert "latitude" not in public  # level 2
    assert "contacts" not in public  # level 1
    partners_view = as_verified.json()
    assert partners_view["latitude"] == 48.7433
    assert "contacts" not in partners_view
    assert as_itself.json()["contacts"][0]["email"] == "camille@example.org"
    assert as_operator.json()["contacts"][0]["name"] == "Camille Martin"
    assert contacts_as_other.status_code == 403


async def test_a_partner_changes_only_itself(
    app: FastAPI, jwks: tuple[JWKSServer, SigningKey], database_url: str
) -> None:
    _, key = jwks
    async with client(app) as http:
        mine = await register(http, siret="73282932000074")
        theirs = await register(http, siret="44306184100047")
        me = token(key, partner_id=mine["id"], roles=["partner"])
        forbidden = await http.patch(
            f"/partners/{theirs['id']}", json={"legal_name": "Hijacked"}, headers=me
        )
        contacts = await http.put(
            f"/partners/{theirs['id']}/contacts",
            json=[{"name": "X", "role": "Y", "email": "x@example.org"}],
            headers=me,
        )
        changed = await http.patch(
            f"/partners/{mine['id']}",
            json={"legal_name": "Ingénieurs pour l'école 94", "programmes": ["cordees"]},
            headers=me,
        )
        identifiers = await http.patch(
            f"/partners/{mine['id']}", json={"siret": "44306184100047"}, headers=me
        )
    assert forbidden.status_code == 403
    assert contacts.status_code == 403
    assert changed.status_code == 200
    assert changed.json()["legal_name"] == "Ingénieurs pour l'école 94"
    assert changed.json()["programmes"] == ["cordees"]
    assert identifiers.status_code == 422  # identifiers are not changed by PATCH
    connection = await asyncpg.connect(database_url)
    try:
        types = [r["type"] for r in await connection.fetch("SELECT type FROM outbox ORDER BY id")]
    finally:
        await connection.close()
    assert types.count("fr.maillage.registry.partner.updated.v1") == 1


async def test_only_operators_verify_and_history_is_complete(
    app: FastAPI, jwks: tuple[JWKSServer, SigningKey], database_url: str
) -> None:
    _, key = jwks
    async with client(app) as http:
        partner = await register(http, siret="73282932000074")
        path = f"/partners/{partner['id']}"
        itself = token(key, partner_id=partner["id"], roles=["partner"])
        officer = token(key, roles=["officer"])
        operator = token(key, roles=["operator"])

        async def move(verb: str, headers: dict[str, str], reason: str) -> httpx.Response:
            return await http.post(f"{path}/{verb}", json={"reason": reason}, headers=headers)

        assert (await move("verify", itself, "I am legit")).status_code == 403
        assert (await move("verify", officer, "looks fine")).status_code == 403
        assert (await move("suspend", operator, "too early")).status_code == 409
        assert (await move("verify", operator, "SIRET checked")).json()["status"] == "verified"
        assert (await move("suspend", operator, "complaint")).json()["status"] == "suspended"
        assert (await move("reinstate", operator, "resolved")).json()["status"] == "verified"
        bad_reason = await http.post(f"{path}/verify", json={}, headers=operator)
        history = await http.get(f"{path}/history", headers=itself)
        stranger = await http.get(
            f"{path}/history", headers=token(key, partner_id=str(uuid.uuid4()), roles=["partner"])
        )
    assert bad_reason.status_code == 422
    assert stranger.status_code == 403
    entries = history.json()
    assert [(e["from_status"], e["to_status"]) for e in entries] == [
        (None, "pending"),
        ("pending", "verified"),
        ("verified", "suspended"),
        ("suspended", "verified"),
    ]
    assert [e["reason"] for e in entries[1:]] == ["SIRET checked", "complaint", "resolved"]
    assert all(e["actor"].startswith("operator:user-") for e in entries[1:])
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT type, payload FROM outbox ORDER BY id")
    finally:
        await connection.close()
    assert [r["type"].split(".")[4] for r in rows] == [
        "registered",
        "verified",
        "suspended",
        "verified",
    ]
    for row in rows:  # every registry event: levels 2 and 3 only
        assert set(json.loads(row["payload"])) <= set(PartnerFacts.model_fields)


async def test_search_filters_and_pages_with_a_cursor(
    app: FastAPI, jwks: tuple[JWKSServer, SigningKey]
) -> None:
    _, key = jwks
    staff = token(key, roles=["officer"])
    sirets = ["73282932000074", "44306184100047", "55210055400013", "35600000000048"]
    async with client(app) as http:
        for index, siret in enumerate(sirets):
            await register(
                http,
                siret=siret,
                legal_name=f"Partenaire {index}",
                departement="94" if index < 3 else "93",
                programmes=["cordees"] if index % 2 else ["stages3e"],
            )
        first = await http.get("/partners", params={"departement": "94", "limit": 2}, headers=staff)
        second = await http.get(
            "/partners",
            params={"departement": "94", "limit": 2, "cursor": first.json()["next_cursor"]},
            headers=staff,
        )
        programme = await http.get("/partners", params={"programme": "cordees"}, headers=staff)
        text = await http.get("/partners", params={"q": "naire 3"}, headers=staff)
        bad_cursor = await http.get("/partners", params={"cursor": "nope"}, headers=staff)
    names = [p["legal_name"] for p in first.json()["items"] + second.json()["items"]]
    assert names == ["Partenaire 0", "Partenaire 1", "Partenaire 2"]
    assert second.json()["next_cursor"] is None
    assert [p["legal_name"] for p in programme.json()["items"]] == ["Partenaire 1", "Partenaire 3"]
    assert [p["legal_name"] for p in text.json()["items"]] == ["Partenaire 3"]
    assert bad_cursor.status_code == 400


CODE_ISSUED = "fr.maillage.registry.school-claim.code-issued.v2"


async def import_demo_reference(database_url: str) -> None:
    from maillage.common.db import create_pool

    pool = await create_pool(database_url)
    try:
        summary = await reference.import_annuaire(pool, DEMO_ANNUAIRE)
        listed = await reference.import_education_prioritaire(
            pool, DEMO_ANNUAIRE.parent / "education-prioritaire-demo-94.csv"
        )
    finally:
        await pool.close()
    assert summary.inserted > 30
    assert listed.updated > 10


async def codes_sent(database_url: str) -> list[dict[str, Any]]:
    """The one-time codes the registry published for notifications to mail, oldest first,
    each opened with notifications' key as ``code`` (the outbox holds only ``sealed_code``)."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT payload FROM outbox WHERE type = $1 ORDER BY id", CODE_ISSUED
        )
    finally:
        await connection.close()
    opening = sealing.OpeningKeys.from_pems([CLAIM_SEAL_PRIVATE_KEY])
    sent = []
    for row in rows:
        event = json.loads(row["payload"])
        assert "code" not in event
        context = school_claim_seal_context(
            uuid.UUID(event["claim_id"]), uuid.UUID(event["partner_id"]), event["mailbox"]
        )
        sent.append({**event, "code": opening.open(event["sealed_code"], context)})
    return sent


def as_registrant(registered: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {registered['registration_access_token']}"}


ROBERT_DESNOS = {
    "kind": "college",
    "legal_name": "Collège Robert Desnos",
    "uai": "0940123y",  # normalised to upper case
    "commune_code": "75056",  # what it declares is overridden by the Annuaire
    "contacts": [{"name": "Principal", "role": "Principal", "email": "principal@example.org"}],
}


async def test_a_school_is_verified_when_the_code_sent_to_its_annuaire_mailbox_comes_back(
    app: FastAPI, database_url: str, jwks: tuple[JWKSServer, SigningKey]
) -> None:
    _, key = jwks
    await import_demo_reference(database_url)
    async with client(app) as http:
        registered = await http.post("/partners", json=ROBERT_DESNOS)
        declared_rep = await http.post(
            "/partners", json={**ROBERT_DESNOS, "uai": "0941147L", "education_prioritaire": "REP+"}
        )
        unknown_school = await http.post(
            "/partners", json={**ROBERT_DESNOS, "uai": "0940001R", "legal_name": "Inconnu"}
        )
        [sent] = await codes_sent(database_url)
        school_id = registered.json()["id"]
        me = as_registrant(registered.json())
        wrong = await http.post(
            f"/partners/{school_id}/school-claim", json={"code": "not-the-code"}, headers=me
        )
        by_stranger = await http.post(
            f"/partners/{school_id}/school-claim",
            json={"code": sent["code"]},
            headers=as_registrant(unknown_school.json()),
        )
        proven = await http.post(
            f"/partners/{school_id}/school-claim", json={"code": sent["code"]}, headers=me
        )
        again = await http.post(
            f"/partners/{school_id}/school-claim", json={"code": sent["code"]}, headers=me
        )
        history = await http.get(
            f"/partners/{school_id}/history", headers=token(key, roles=["operator"])
        )
    assert registered.status_code == 201, registered.text
    school = registered.json()
    assert school["status"] == "pending"  # a UAI proves nothing about who is asking
    assert school["school_claim"]["mailbox"] == "ce.0940123Y@ac-creteil.fr"
    assert school["uai"] == "0940123Y"
    assert school["education_prioritaire"] == "REP+"
    assert school["pupils"] == 520
    assert school["commune_code"] == "94054"
    assert school["qpv_proximity"] is True  # from the éducation prioritaire list
    assert school["qpv_code"] == "QN09407A"
    # The code goes to the Annuaire's mailbox (never an address the registrant typed).
    assert sent["mailbox"] == "ce.0940123Y@ac-creteil.fr"
    assert sent["partner_id"] == school_id
    assert len(sent["code"]) == 8
    assert sent["code"].isdigit()
    assert sent["code"] not in registered.text
    assert sent["code"] not in sent["sealed_code"]
    assert declared_rep.status_code == 422  # REP status is never declared
    assert unknown_school.status_code == 201
    assert unknown_school.json()["status"] == "pending"
    assert "school_claim" not in unknown_school.json()  # not in the Annuaire: an operator decides
    assert wrong.status_code == 422
    assert (wrong.json()["code"], wrong.json()["attempts_left"]) == ("wrong_code", 4)
    assert by_stranger.status_code == 403
    assert proven.status_code == 200, proven.text
    assert proven.json()["status"] == "verified"
    assert again.status_code == 409
    assert again.json()["code"] == "partner_not_pending"
    assert [(e["to_status"], e["actor"]) for e in history.json()] == [
        ("pending", "registration"),
        ("verified", "system:school-mailbox"),
    ]
    connection = await asyncpg.connect(database_url)
    try:
        stored = await connection.fetchval("SELECT code_hash FROM school_claims")
        types = [r["type"] for r in await connection.fetch("SELECT type FROM outbox ORDER BY id")]
    finally:
        await connection.close()
    assert stored.startswith("$argon2id$")
    assert sent["code"] not in stored
    assert types[-1] == "fr.maillage.registry.partner.verified.v1"


async def test_a_squatters_claim_never_blocks_the_school_that_proves_control(
    app: FastAPI, database_url: str, jwks: tuple[JWKSServer, SigningKey]
) -> None:
    _, key = jwks
    await import_demo_reference(database_url)
    squatter_body = {
        **ROBERT_DESNOS,
        "legal_name": "Collège Robert Desnos (officiel)",
        "contacts": [{"name": "Mallory", "role": "Principal", "email": "mallory@example.org"}],
    }
    async with client(app, address="203.0.113.66") as http:
        squatter = await http.post("/partners", json=squatter_body)
    async with client(app) as http:
        school = await http.post("/partners", json=ROBERT_DESNOS)
        to_squatter, to_school = await codes_sent(database_url)
        # The squatter never reads the school's mailbox: five guesses, then it waits for an
        # operator.
        guesses = [
            await http.post(
                f"/partners/{squatter.json()['id']}/school-claim",
                json={"code": f"{n:08d}"},
                headers=as_registrant(squatter.json()),
            )
            for n in range(6)
        ]
        proven = await http.post(
            f"/partners/{school.json()['id']}/school-claim",
            json={"code": to_school["code"]},
            headers=as_registrant(school.json()),
        )
        operator = token(key, roles=["operator"])
        squatter_now = await http.get(f"/partners/{squatter.json()['id']}", headers=operator)
        squatter_history = await http.get(
            f"/partners/{squatter.json()['id']}/history", headers=operator
        )
        third = await http.post("/partners", json={**ROBERT_DESNOS, "legal_name": "Encore"})
    assert squatter.status_code == 201
    assert school.status_code == 201, school.text  # no 409 naming the squatter
    assert to_squatter["mailbox"] == to_school["mailbox"] == "ce.0940123Y@ac-creteil.fr"
    assert [g.status_code for g in guesses] == [422] * 5 + [409]
    assert guesses[-1].json()["code"] == "no_school_claim"
    assert proven.status_code == 200, proven.text
    assert proven.json()["status"] == "verified"
    assert squatter_now.json()["status"] == "rejected"
    last = squatter_history.json()[-1]
    assert (last["from_status"], last["to_status"], last["actor"]) == (
        "pending",
        "rejected",
        "system:school-mailbox",
    )
    assert school.json()["id"] in last["reason"]
    # Now the school is held: another registration of its UAI is refused, naming the school.
    assert third.status_code == 409
    assert third.json()["existing_partner_id"] == school.json()["id"]


async def test_every_stored_column_is_classified_in_one_place(
    app: FastAPI, database_url: str
) -> None:
    """The app's start-up migrated the database: compare its columns with the classification."""
    from maillage.registry.domain import CONTACT_FIELD_LEVELS, STORED_FIELD_LEVELS

    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public'"
        )
    finally:
        await connection.close()
    in_database: dict[str, set[str]] = {}
    for row in rows:
        in_database.setdefault(row["table_name"], set()).add(row["column_name"])
    assert in_database == {table: set(levels) for table, levels in STORED_FIELD_LEVELS.items()}
    assert set(CONTACT_FIELD_LEVELS) <= set(STORED_FIELD_LEVELS["partner_contacts"])


async def test_a_suspended_partner_changes_nothing_with_its_unexpired_token(
    app: FastAPI, jwks: tuple[JWKSServer, SigningKey]
) -> None:
    """Its token outlives the suspension by up to 15 minutes: the registry's own table decides,
    on every state-changing request."""
    _, key = jwks
    operator = token(key, roles=["operator"])
    async with client(app) as http:
        partner = await register(http, siret="73282932000074")
        me = token(key, partner_id=partner["id"], roles=["partner"])
        reason = {"reason": "SIRET checked"}
        await http.post(f"/partners/{partner['id']}/verify", json=reason, headers=operator)
        before = await http.patch(
            f"/partners/{partner['id']}", json={"legal_name": "A"}, headers=me
        )
        await http.post(f"/partners/{partner['id']}/suspend", json=reason, headers=operator)
        changed = await http.patch(
            f"/partners/{partner['id']}", json={"legal_name": "B"}, headers=me
        )
        contacts = await http.put(
            f"/partners/{partner['id']}/contacts",
            json=[{"name": "X", "role": "Y", "email": "x@example.org"}],
            headers=me,
        )
        client_created = await http.post(
            f"/partners/{partner['id']}/clients", json={"name": "c"}, headers=me
        )
        read = await http.get(f"/partners/{partner['id']}", headers=me)
    assert before.status_code == 200, before.text
    for refused in (changed, contacts, client_created):
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "partner_not_in_good_standing"
        assert refused.json()["partner_status"] == "suspended"
    assert read.status_code == 200
    assert read.json()["legal_name"] == "A"
