"""Credentials: API clients, staff logins, the token endpoint, the JWKS and key rotation.

The registry runs as a real HTTP server (uvicorn on loopback), and another service verifies
its tokens through the JWKS, as every Maillage service does.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI

from maillage.cli.embedded import free_port
from maillage.common.auth import CurrentCaller, JWKSCache, TokenVerifier
from maillage.common.http import create_app
from maillage.common.settings import ServiceSettings
from maillage.registry import tokens
from maillage.registry.app import RegistrySettings, create

AUDIENCE = "maillage"


@dataclass
class Registry:
    url: str
    database_url: str
    app: FastAPI


@pytest.fixture
async def registry(
    request: pytest.FixtureRequest,
    database_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
) -> AsyncIterator[Registry]:
    """The registry on loopback; ``indirect`` parameters override its settings."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = RegistrySettings(
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
        jwt_issuer=url,
        jwks_url=f"{url}/.well-known/jwks.json",
        jwt_audience=AUDIENCE,
        token_requests_per_minute=30,
        **overrides,
    )
    app = create(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(300):
        if server.started:
            break
        await asyncio.sleep(0.05)
    try:
        yield Registry(url, database_url, app)
    finally:
        server.should_exit = True
        await task


def another_service(
    registry: Registry, *, refresh_interval: float = 0, ttl: float = 300
) -> FastAPI:
    """A service that knows nothing of the registry but its JWKS URL."""
    router = APIRouter()

    @router.get("/whoami")
    async def whoami(caller: CurrentCaller) -> dict[str, Any]:
        return {
            "sub": caller.subject,
            "partner_id": caller.partner_id,
            "roles": sorted(caller.roles),
        }

    settings = ServiceSettings(
        service_name="other",
        database_url="postgresql://unused@127.0.0.1/unused",
        jwks_url=f"{registry.url}/.well-known/jwks.json",
        jwt_issuer=registry.url,
        jwt_audience=AUDIENCE,
    )
    app = create_app(settings, title="other", description="other", routers=[router])
    app.state.token_verifier = TokenVerifier(
        JWKSCache(settings.jwks_url, ttl=ttl, refresh_interval=refresh_interval),
        issuer=registry.url,
        audience=AUDIENCE,
        leeway=0,
    )
    return app


async def verified_partner(registry: Registry, http: httpx.AsyncClient, **extra: Any) -> str:
    body = {
        "kind": "entreprise",
        "legal_name": "Ingénieurs pour l'école",
        "siret": "73282932000074",
        "contacts": [{"name": "Camille Martin", "role": "RSE", "email": "c@example.org"}],
        **extra,
    }
    response = await http.post(f"{registry.url}/partners", json=body)
    assert response.status_code == 201, response.text
    partner_id: str = response.json()["id"]
    connection = await asyncpg.connect(registry.database_url)
    try:
        await connection.execute(
            "UPDATE partners SET status = 'verified' WHERE id = $1", uuid.UUID(partner_id)
        )
    finally:
        await connection.close()
    return partner_id


async def staff_token(registry: Registry, http: httpx.AsyncClient, roles: list[str]) -> str:
    email = f"{uuid.uuid4().hex[:6]}@maillage.test"
    connection = await asyncpg.connect(registry.database_url)
    try:
        from maillage.registry import domain, store

        codes = [] if domain.NATIONAL_ROLES & set(roles) else ["94"]
        departements, national = domain.staff_territory(roles, codes, national=False)
        await store.upsert_staff(
            connection,
            email=email,
            password_hash=tokens.hash_secret("correct horse"),
            roles=roles,
            departements=departements,
            national=national,
        )
    finally:
        await connection.close()
    response = await http.post(
        f"{registry.url}/oauth/token",
        data={"grant_type": "password", "username": email, "password": "correct horse"},
    )
    assert response.status_code == 200, response.text
    access: str = response.json()["access_token"]
    return access


async def test_a_verified_partner_gets_a_client_and_another_service_trusts_its_token(
    registry: Registry,
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        partner_id = await verified_partner(registry, http)
        # Onboarding: the operator who verified the partner creates its first client.
        operator = await staff_token(registry, http, ["operator"])
        as_operator = {"Authorization": f"Bearer {operator}"}
        first = await http.post(
            f"{registry.url}/partners/{partner_id}/clients",
            json={"name": "premier accès"},
            headers=as_operator,
        )
        assert first.status_code == 201, first.text
        client_id, secret = first.json()["client_id"], first.json()["client_secret"]
        connection = await asyncpg.connect(registry.database_url)
        try:
            stored = await connection.fetchval(
                "SELECT secret_hash FROM api_clients WHERE client_id = $1", client_id
            )
        finally:
            await connection.close()
        assert stored.startswith("$argon2id$")
        assert secret not in stored
        stranger = await http.post(
            f"{registry.url}/partners/{partner_id}/clients",
            json={"name": "x"},
            headers={"Authorization": f"Bearer {await staff_token(registry, http, ['officer'])}"},
        )
        assert stranger.status_code == 403

        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        issued = await http.post(
            f"{registry.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}"},
        )
        assert issued.status_code == 200, issued.text
        body = issued.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 15 * 60
        assert issued.headers["cache-control"] == "no-store"
        as_partner = {"Authorization": f"Bearer {body['access_token']}"}
        header = jwt.get_unverified_header(body["access_token"])
        assert header["alg"] == "EdDSA"
        assert header["kid"]

        created = await http.post(
            f"{registry.url}/partners/{partner_id}/clients",
            json={"name": "ERP"},
            headers=as_partner,
        )
        assert created.status_code == 201
        new_secret = created.json()["client_secret"]
        listed = await http.get(f"{registry.url}/partners/{partner_id}/clients", headers=as_partner)
        assert new_secret not in listed.text
        assert {c["name"] for c in listed.json()} == {"premier accès", "ERP"}

    other = another_service(registry)
    transport = httpx.ASGITransport(app=other)
    async with httpx.AsyncClient(transport=transport, base_url="http://other") as client:
        whoami = await client.get("/whoami", headers=as_partner)
    assert whoami.status_code == 200, whoami.text
    assert whoami.json() == {"sub": client_id, "partner_id": partner_id, "roles": ["partner"]}


async def test_token_errors_follow_rfc_6749_and_revocation_and_suspension_stop_tokens(
    registry: Registry,
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        partner_id = await verified_partner(registry, http)
        client_id, secret = tokens.new_client_credentials()
        connection = await asyncpg.connect(registry.database_url)
        from maillage.registry import store

        await store.insert_client(
            connection,
            client_id=client_id,
            partner_id=uuid.UUID(partner_id),
            name="c",
            secret_hash=tokens.hash_secret(secret),
        )
        url = f"{registry.url}/oauth/token"

        async def grant(**form: str) -> httpx.Response:
            return await http.post(url, data=form)

        ok = await grant(grant_type="client_credentials", client_id=client_id, client_secret=secret)
        assert ok.status_code == 200
        wrong = await grant(grant_type="client_credentials", client_id=client_id, client_secret="x")
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "invalid_client"
        assert wrong.headers["www-authenticate"].startswith("Basic")
        unknown = await grant(
            grant_type="client_credentials", client_id="mcl_nope", client_secret="x"
        )
        assert unknown.json()["error"] == "invalid_client"
        assert (await grant(grant_type="authorization_code")).json()[
            "error"
        ] == "unsupported_grant_type"
        assert (await grant()).json()["error"] == "invalid_request"
        as_json = await http.post(url, json={"grant_type": "client_credentials"})
        assert as_json.json()["error"] == "invalid_request"
        bad_password = await grant(grant_type="password", username="nobody@x.fr", password="y")
        assert bad_password.status_code == 400
        assert bad_password.json()["error"] == "invalid_grant"

        await connection.execute(
            "UPDATE partners SET status = 'suspended' WHERE id = $1", uuid.UUID(partner_id)
        )
        suspended = await grant(
            grant_type="client_credentials", client_id=client_id, client_secret=secret
        )
        assert suspended.json()["error"] == "invalid_grant"
        await connection.execute(
            "UPDATE partners SET status = 'verified' WHERE id = $1", uuid.UUID(partner_id)
        )
        as_partner = {"Authorization": f"Bearer {ok.json()['access_token']}"}
        revoked = await http.delete(
            f"{registry.url}/partners/{partner_id}/clients/{client_id}", headers=as_partner
        )
        assert revoked.status_code == 204
        after = await grant(
            grant_type="client_credentials", client_id=client_id, client_secret=secret
        )
        assert after.json()["error"] == "invalid_client"
        await connection.close()


@pytest.mark.parametrize(
    "registry",
    [{"signing_key_rotation_days": 2 / 86400, "signing_key_publish_ahead_seconds": 1}],
    indirect=True,
)
async def test_keys_rotate_with_overlap_and_expired_tokens_are_refused(registry: Registry) -> None:
    # A verifier that fetches the JWKS once and never again, even for an unknown kid.
    cached = another_service(registry, refresh_interval=3600, ttl=3600)
    as_cached = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cached), base_url="http://cached"
    )
    async with httpx.AsyncClient(timeout=10) as http, as_cached:
        first = await staff_token(registry, http, ["operator"])
        published = (await http.get(f"{registry.url}/.well-known/jwks.json")).json()["keys"]
        before = await as_cached.get("/whoami", headers={"Authorization": f"Bearer {first}"})
        assert before.status_code == 200, before.text
        await asyncio.sleep(2.2)  # past the rotation period
        second = await staff_token(registry, http, ["operator"])
        keys = (await http.get(f"{registry.url}/.well-known/jwks.json")).json()["keys"]
        # The new key was published before it signed: the cached verifier already knows it.
        after = await as_cached.get("/whoami", headers={"Authorization": f"Bearer {second}"})
        assert after.status_code == 200, after.text
    old_kid = jwt.get_unverified_header(first)["kid"]
    new_kid = jwt.get_unverified_header(second)["kid"]
    assert old_kid != new_kid
    assert new_kid in {key["kid"] for key in published}
    assert {old_kid, new_kid} <= {key["kid"] for key in keys}  # the old key is still published
    assert all("d" not in key for key in keys)  # public keys only

    other = another_service(registry)
    transport = httpx.ASGITransport(app=other)
    async with httpx.AsyncClient(transport=transport, base_url="http://other") as client:
        for access in (first, second):
            response = await client.get("/whoami", headers={"Authorization": f"Bearer {access}"})
            assert response.status_code == 200, response.text
        claims = jwt.decode(second, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 15 * 60
        issuer: tokens.Issuer = registry.app.state.issuer
        issuer.token_ttl = issuer.token_ttl.__class__(seconds=1)
        async with httpx.AsyncClient(timeout=10) as http:
            short = await staff_token(registry, http, ["operator"])
        time.sleep(2.1)
        expired = await client.get("/whoami", headers={"Authorization": f"Bearer {short}"})
    assert expired.status_code == 401
    assert "expiré" in expired.json()["detail"]


async def test_staff_accounts_come_from_the_cli_and_log_in_with_a_password(
    registry: Registry,
) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    maillage = str(Path(sys.executable).parent / "maillage")
    env = {**os.environ, "MAILLAGE_STAFF_PASSWORD": "a long officer password"}
    command = [
        *(maillage, "registry", "create-staff", "Officer@Prefecture.test", "--role", "officer"),
        *("--departement", "94", "--departement", "2a"),
    ]
    created = await asyncio.to_thread(
        subprocess.run,
        [*command, "--database-url", registry.database_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert "staff account officer@prefecture.test (officer; 2A, 94)" in created.stdout
    short = await asyncio.to_thread(
        subprocess.run,
        [*command, "--database-url", registry.database_url],
        env={**env, "MAILLAGE_STAFF_PASSWORD": "short"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert short.returncode == 2
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{registry.url}/oauth/token",
            data={
                "grant_type": "password",
                "username": "officer@prefecture.test",
                "password": "a long officer password",
            },
        )
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["roles"] == ["officer"]
    assert "partner_id" not in claims
    assert claims["departements"] == ["2A", "94"]  # where they act (decision 64)
    assert "national" not in claims


@pytest.mark.parametrize(
    "registry",
    [{"free_failures_per_account": 2, "free_failures_per_address": 4, "failure_delay_seconds": 60}],
    indirect=True,
)
async def test_wrong_secrets_slow_down_their_account_then_their_address(
    registry: Registry,
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        partner_id = await verified_partner(registry, http)
        client_id, secret = tokens.new_client_credentials()
        connection = await asyncpg.connect(registry.database_url)
        try:
            from maillage.registry import store

            await store.insert_client(
                connection,
                client_id=client_id,
                partner_id=uuid.UUID(partner_id),
                name="c",
                secret_hash=tokens.hash_secret(secret),
            )
        finally:
            await connection.close()

        async def grant(client: str, client_secret: str) -> httpx.Response:
            return await http.post(
                f"{registry.url}/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client,
                    "client_secret": client_secret,
                },
            )

        # Two free failures, the third starts a wait: even the right secret is refused then,
        # without being checked.
        assert [(await grant(client_id, "wrong")).status_code for _ in range(3)] == [401] * 3
        throttled = await grant(client_id, secret)
        assert throttled.status_code == 429, throttled.text
        assert throttled.json()["code"] == "too_many_failures"
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        # Another account from the same address still works until the address's own limit...
        other = await grant("mcl_unknown", "guess")
        assert other.status_code == 401
        # ...which the fifth failure of this address reaches, whatever the account.
        assert (await grant("mcl_another", "guess")).status_code == 401
        assert (await grant("mcl_a_third", "guess")).status_code == 429


async def test_a_partner_onboards_itself_with_its_registration_access_token(
    registry: Registry,
) -> None:
    """RFC 7591/7592's way: registration answers a token shown once; with it the partner reads
    and manages its registration and, once verified, creates its first API client."""
    body = {
        "kind": "association",
        "legal_name": "Mon association",
        "rna": "W941234567",
        "contacts": [{"name": "Ada", "role": "Présidente", "email": "ada@example.org"}],
    }
    async with httpx.AsyncClient(timeout=10, base_url=registry.url) as http:
        registered = await http.post("/partners", json=body)
        assert registered.status_code == 201, registered.text
        partner_id = registered.json()["id"]
        token = registered.json()["registration_access_token"]
        assert token.startswith("mrt_")
        mine = {"Authorization": f"Bearer {token}"}

        read = await http.get(f"/partners/{partner_id}", headers=mine)
        assert read.status_code == 200
        assert read.json()["contacts"][0]["email"] == "ada@example.org"  # its own level 1
        changed = await http.patch(
            f"/partners/{partner_id}", json={"commune_name": "Villejuif"}, headers=mine
        )
        assert changed.status_code == 200, changed.text
        history = await http.get(f"/partners/{partner_id}/history", headers=mine)
        assert history.status_code == 200
        too_early = await http.post(
            f"/partners/{partner_id}/clients", json={"name": "ERP"}, headers=mine
        )
        assert too_early.status_code == 409
        assert too_early.json()["code"] == "partner_not_verified"
        other = await http.post(
            "/partners", json={**body, "rna": "W941234568", "legal_name": "Autre"}
        )
        not_mine = await http.patch(
            f"/partners/{other.json()['id']}", json={"legal_name": "Volé"}, headers=mine
        )
        assert not_mine.status_code == 403
        listing = await http.get("/partners", headers=mine)  # a registration token is no JWT
        assert listing.status_code == 401

        operator = {"Authorization": f"Bearer {await staff_token(registry, http, ['operator'])}"}
        verified = await http.post(
            f"/partners/{partner_id}/verify", json={"reason": "RNA checked"}, headers=operator
        )
        assert verified.status_code == 200
        first = await http.post(
            f"/partners/{partner_id}/clients", json={"name": "ERP"}, headers=mine
        )
        assert first.status_code == 201, first.text
        used_up = await http.get(f"/partners/{partner_id}", headers=mine)
        assert used_up.status_code == 401  # from now on the partner uses its client
        issued = await http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": first.json()["client_id"],
                "client_secret": first.json()["client_secret"],
            },
        )
        assert issued.status_code == 200, issued.text

        # Lost: an operator issues a new one; the history says who and why.
        reissued = await http.post(
            f"/partners/{partner_id}/registration-token",
            json={"reason": "token perdu, demande par téléphone"},
            headers=operator,
        )
        assert reissued.status_code == 201, reissued.text
        fresh = {"Authorization": f"Bearer {reissued.json()['registration_access_token']}"}
        assert (await http.get(f"/partners/{partner_id}", headers=fresh)).status_code == 200
        by_partner = await http.post(
            f"/partners/{partner_id}/registration-token", json={"reason": "moi"}, headers=fresh
        )
        assert by_partner.status_code in (401, 403)
        last = (await http.get(f"/partners/{partner_id}/history", headers=operator)).json()[-1]
    assert (last["from_status"], last["to_status"]) == ("verified", "verified")
    assert last["actor"].startswith("operator:")
    assert "token perdu" in last["reason"]

    connection = await asyncpg.connect(registry.database_url)
    try:
        stored = await connection.fetchval("SELECT token_hash FROM registration_tokens")
    finally:
        await connection.close()
    assert token not in stored
    assert reissued.json()["registration_access_token"] not in stored
