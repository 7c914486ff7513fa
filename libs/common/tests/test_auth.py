"""The JWT dependency against real key pairs and a real JWKS served over HTTP.

A tiny Starlette app published with uvicorn on 127.0.0.1 serves the JWKS; tests swap the
published keys (rotation) and read how many times the JWKS was fetched.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from fastapi import APIRouter, FastAPI
from jwt_fixtures import (
    AUDIENCE,
    ISSUER,
    JWKSServer,
    SigningKey,
    b64url,
    claims,
    ed25519_key,
    p256_key,
    unsigned_token,
)

from maillage.common.auth import (
    Caller,
    CurrentCaller,
    JWKSCache,
    TokenVerifier,
    require_role,
)
from maillage.common.http import create_app
from maillage.common.problems import Problem
from maillage.common.settings import ServiceSettings


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    server.start()
    yield server
    server.stop()


# --- the service under test --------------------------------------------------------------------


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/me")
    async def me(caller: CurrentCaller) -> dict[str, Any]:
        return {
            "subject": caller.subject,
            "partner_id": caller.partner_id,
            "roles": sorted(caller.roles),
        }

    @router.get("/operations")
    async def operations(caller: Annotated[Caller, require_role("operator")]) -> dict[str, str]:
        return {"subject": caller.subject}

    return router


@pytest.fixture(scope="module")
def app(jwks_server: JWKSServer) -> FastAPI:
    settings = ServiceSettings(
        service_name="test",
        database_url="postgresql://x@127.0.0.1/x",
        jwks_url=jwks_server.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    return create_app(
        settings, title="auth test", description="auth test", routers=[build_router()]
    )


def use_verifier(app: FastAPI, url: str, **cache_options: Any) -> JWKSCache:
    """A fresh key cache for the app, so every test starts with nothing fetched."""
    cache = JWKSCache(url, **cache_options)
    app.state.token_verifier = TokenVerifier(cache, issuer=ISSUER, audience=AUDIENCE)
    return cache


@pytest.fixture
def keys(jwks_server: JWKSServer, app: FastAPI) -> tuple[SigningKey, SigningKey]:
    """An Ed25519 and a P-256 key, both published; a fresh cache; the fetch counter at 0."""
    jwks_server.reset()
    ed, ec256 = ed25519_key(), p256_key()
    jwks_server.publish(ed, ec256)
    use_verifier(app, jwks_server.url)
    return ed, ec256


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(
    response: httpx.Response,
    status: int,
    code: str,
    *,
    path: str = "/me",
    www_authenticate: str | None = 'Bearer error="invalid_token"',
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:maillage:problem:{code}"
    assert body["instance"] == path
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["detail"]
    if www_authenticate is None:
        assert "www-authenticate" not in response.headers
    else:
        assert response.headers["www-authenticate"] == www_authenticate
    return body


# --- accepted tokens ---------------------------------------------------------------------------


async def test_valid_eddsa_token_gives_the_caller(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    response = await client.get("/me", headers=bearer(ed.sign(claims())))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": "user-42",
        "partner_id": "partner-7",
        "roles": ["operator", "partner"],
    }


async def test_valid_es256_token_gives_the_caller(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    _, ec256 = keys
    token = ec256.sign(claims(sub="officer-1", partner_id=None, roles=["officer"]))
    response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {"subject": "officer-1", "partner_id": None, "roles": ["officer"]}


async def test_keys_are_cached_between_requests(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey], jwks_server: JWKSServer
) -> None:
    ed, ec256 = keys
    for key in (ed, ec256, ed):
        response = await client.get("/me", headers=bearer(key.sign(claims())))
        assert response.status_code == 200
    assert jwks_server.fetches == 1


async def test_role_check_lets_an_operator_through(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    response = await client.get("/operations", headers=bearer(ed.sign(claims(roles=["operator"]))))
    assert response.status_code == 200, response.text
    assert response.json() == {"subject": "user-42"}


# --- refused tokens ----------------------------------------------------------------------------


async def test_no_token_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey], jwks_server: JWKSServer
) -> None:
    response = await client.get("/me")
    assert_problem(response, 401, "unauthenticated", www_authenticate="Bearer")
    assert jwks_server.fetches == 0


async def test_non_bearer_scheme_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    response = await client.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_problem(response, 401, "unauthenticated", www_authenticate="Bearer")


async def test_expired_token_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    now = int(time.time())
    token = ed.sign(claims(iat=now - 3600, exp=now - 600))  # well beyond the 30 s leeway
    body = assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")
    assert "expiré" in body["detail"]


async def test_wrong_audience_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    token = ed.sign(claims(aud="another-api"))
    body = assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")
    assert body["detail"] == "Le jeton n'est pas valide."
    assert "audience" in body["reason"].lower()  # the library's own words, for developers


async def test_wrong_issuer_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    token = ed.sign(claims(iss="https://evil.example"))
    body = assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")
    assert "issuer" in body["reason"].lower()


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "iss", "aud"])
async def test_token_missing_a_required_claim_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey], missing: str
) -> None:
    ed, _ = keys
    token = ed.sign(claims(**{missing: None}))
    assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")


async def test_unknown_kid_is_401_and_fetches_the_jwks_once(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey], jwks_server: JWKSServer
) -> None:
    stranger = ed25519_key("not-published")
    token = stranger.sign(claims())
    first = await client.get("/me", headers=bearer(token))
    second = await client.get("/me", headers=bearer(token))
    for response in (first, second):
        body = assert_problem(response, 401, "unauthenticated")
        assert "clé inconnue" in body["detail"]
    # Fetched for the first request; the second is within refresh_interval: no new fetch.
    assert jwks_server.fetches == 1


async def test_unknown_kid_refetches_once_per_refresh_interval(
    client: httpx.AsyncClient,
    app: FastAPI,
    keys: tuple[SigningKey, SigningKey],
    jwks_server: JWKSServer,
) -> None:
    ed, _ = keys
    use_verifier(app, jwks_server.url, refresh_interval=0.3)
    assert (await client.get("/me", headers=bearer(ed.sign(claims())))).status_code == 200
    assert jwks_server.fetches == 1
    await asyncio.sleep(0.4)
    token = ed25519_key("not-published").sign(claims())
    for _ in range(3):
        assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")
    # The unknown kid triggered one refetch, then the refresh interval throttles the others.
    assert jwks_server.fetches == 2


async def test_key_rotation_accepts_a_newly_published_key(
    client: httpx.AsyncClient,
    app: FastAPI,
    keys: tuple[SigningKey, SigningKey],
    jwks_server: JWKSServer,
) -> None:
    ed, ec256 = keys
    use_verifier(app, jwks_server.url, refresh_interval=0.0)
    assert (await client.get("/me", headers=bearer(ed.sign(claims())))).status_code == 200
    assert jwks_server.fetches == 1

    rotated = ed25519_key()
    jwks_server.publish(rotated, ed, ec256)  # the issuer adds a key after our first fetch
    response = await client.get("/me", headers=bearer(rotated.sign(claims(sub="rotated"))))
    assert response.status_code == 200, response.text
    assert response.json()["subject"] == "rotated"
    assert jwks_server.fetches == 2

    # The rotated key is now cached; the old one still works until it is withdrawn.
    assert (await client.get("/me", headers=bearer(rotated.sign(claims())))).status_code == 200
    assert (await client.get("/me", headers=bearer(ed.sign(claims())))).status_code == 200
    assert jwks_server.fetches == 2


async def test_withdrawn_key_is_refused_once_the_cache_expires(
    client: httpx.AsyncClient,
    app: FastAPI,
    keys: tuple[SigningKey, SigningKey],
    jwks_server: JWKSServer,
) -> None:
    ed, ec256 = keys
    use_verifier(app, jwks_server.url, ttl=0.2, refresh_interval=0.0)
    assert (await client.get("/me", headers=bearer(ed.sign(claims())))).status_code == 200
    jwks_server.publish(ec256)  # ed is withdrawn
    await asyncio.sleep(0.3)
    response = await client.get("/me", headers=bearer(ed.sign(claims())))
    assert_problem(response, 401, "unauthenticated")
    assert (await client.get("/me", headers=bearer(ec256.sign(claims())))).status_code == 200


async def test_alg_none_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    token = unsigned_token({"alg": "none", "typ": "JWT", "kid": ed.kid}, claims())
    body = assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")
    assert "EdDSA" in body["detail"]


@pytest.mark.parametrize("which", [0, 1])
async def test_hs256_signed_with_the_public_key_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey], which: int
) -> None:
    key = keys[which]
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims()).encode())
    signature = hmac.new(key.public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    token = f"{head}.{body}.{b64url(signature)}"
    assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")


async def test_key_not_in_jwks_with_a_known_kid_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    impostor = ed25519_key()
    token = impostor.sign(claims(roles=["admin"]), kid=ed.kid)
    body = assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")
    assert "Signature verification failed" in body["reason"]


async def test_header_alg_not_matching_the_key_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    # An ES256 signature presented under the kid of the Ed25519 key.
    ed, ec256 = keys
    token = ec256.sign(claims(), kid=ed.kid)
    assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")


async def test_token_without_kid_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    token = jwt.encode(claims(), ed.private, algorithm="EdDSA")
    body = assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")
    assert "kid" in body["detail"]


async def test_tampered_payload_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    head, _, signature = ed.sign(claims(roles=["partner"])).split(".")
    forged = b64url(json.dumps(claims(roles=["admin"])).encode())
    token = f"{head}.{forged}.{signature}"
    assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9.e30", b64url(b"[1,2]") + ".e30.sig"],
)
async def test_garbage_token_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey], token: str
) -> None:
    assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")


async def test_roles_claim_that_is_not_a_list_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    token = ed.sign(claims(roles="admin"))
    assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")


async def test_missing_role_is_403(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    token = ed.sign(claims(roles=["partner", "school"]))
    body = assert_problem(
        await client.get("/operations", headers=bearer(token)),
        403,
        "forbidden",
        path="/operations",
        www_authenticate=None,
    )
    assert "operator" in body["detail"]


async def test_role_route_without_token_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey]
) -> None:
    response = await client.get("/operations")
    assert_problem(response, 401, "unauthenticated", path="/operations", www_authenticate="Bearer")


# --- an imperfect JWKS -------------------------------------------------------------------------


async def test_unusable_jwks_entries_do_not_hide_the_good_keys(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey], jwks_server: JWKSServer
) -> None:
    ed, ec256 = keys
    encryption = x25519.X25519PrivateKey.generate().public_key()
    raw = encryption.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwks_server.publish(
        ed,
        ec256,
        extra=[
            {"kty": "OKP", "crv": "X25519", "x": b64url(raw), "kid": "enc-1", "use": "enc"},
            {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "broken"},
            {"kty": "unknown", "kid": "odd"},
            {"kid": "no-kty"},
        ],
    )
    response = await client.get("/me", headers=bearer(ed.sign(claims())))
    assert response.status_code == 200, response.text
    response = await client.get("/me", headers=bearer(ec256.sign(claims())))
    assert response.status_code == 200, response.text


async def test_jwks_outage_keeps_the_keys_already_fetched(
    client: httpx.AsyncClient,
    app: FastAPI,
    keys: tuple[SigningKey, SigningKey],
    jwks_server: JWKSServer,
) -> None:
    ed, _ = keys
    url = jwks_server.url
    cache = use_verifier(app, url, ttl=0.0, refresh_interval=0.0)
    assert (await client.get("/me", headers=bearer(ed.sign(claims())))).status_code == 200
    cache.url = url.replace("/.well-known/jwks.json", "/missing")  # the JWKS answers 404 now
    assert (await client.get("/me", headers=bearer(ed.sign(claims())))).status_code == 200


@pytest.mark.parametrize(
    "document",
    [[1, 2], {"keys": "nope"}, {"keys": [1, "x", None]}, {"no": "keys"}, "text"],
)
async def test_malformed_jwks_document_is_401_not_500(
    client: httpx.AsyncClient,
    app: FastAPI,
    keys: tuple[SigningKey, SigningKey],
    jwks_server: JWKSServer,
    document: Any,
) -> None:
    ed, _ = keys
    jwks_server.document = document
    response = await client.get("/me", headers=bearer(ed.sign(claims())))
    assert_problem(response, 401, "unauthenticated")


async def test_malformed_jwks_document_keeps_the_keys_already_fetched(
    client: httpx.AsyncClient,
    app: FastAPI,
    keys: tuple[SigningKey, SigningKey],
    jwks_server: JWKSServer,
) -> None:
    ed, _ = keys
    use_verifier(app, jwks_server.url, ttl=0.0, refresh_interval=0.0)
    assert (await client.get("/me", headers=bearer(ed.sign(claims())))).status_code == 200
    jwks_server.document = [{"not": "a jwks"}]
    assert (await client.get("/me", headers=bearer(ed.sign(claims())))).status_code == 200
    assert jwks_server.fetches == 2


async def test_jwks_unreachable_from_the_start_is_401(
    client: httpx.AsyncClient, app: FastAPI, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    use_verifier(app, "http://127.0.0.1:9/.well-known/jwks.json")
    response = await client.get("/me", headers=bearer(ed.sign(claims())))
    assert_problem(response, 401, "unauthenticated")


# --- the verifier on its own -------------------------------------------------------------------


class StaticKeys(JWKSCache):
    """A key cache that never fetches: the keys it was given."""

    def __init__(self, *keys: SigningKey) -> None:
        super().__init__("http://unused.invalid/jwks.json")
        self._static = {key.kid: jwt.PyJWK(key.jwk) for key in keys}

    async def key(self, kid: str) -> jwt.PyJWK | None:
        return self._static.get(kid)


async def test_caller_roles_drop_unknown_role_names() -> None:
    ed = ed25519_key()
    verifier = TokenVerifier(StaticKeys(ed), issuer=ISSUER, audience=AUDIENCE)
    token = ed.sign(claims(roles=["operator", "superuser", "root", "partner", "Admin"]))
    caller = await verifier.verify(token)
    assert caller.roles == frozenset({"operator", "partner"})
    assert caller.has_role("partner", "admin")
    assert not caller.has_role("admin", "school")


async def test_caller_without_roles_or_partner() -> None:
    ec256 = p256_key()
    verifier = TokenVerifier(StaticKeys(ec256), issuer=ISSUER, audience=AUDIENCE)
    caller = await verifier.verify(ec256.sign(claims(roles=None, partner_id=None)))
    assert caller == Caller(subject="user-42", partner_id=None, roles=frozenset())


# --- accepted tokens are remembered (decision 59) ------------------------------------------------


class CountingVerifier(TokenVerifier):
    """Counts the full checks (signature, claims) it makes."""

    checks = 0

    async def _verify(self, token: str) -> Caller:
        self.checks += 1
        return await super()._verify(token)


async def test_a_token_is_checked_once_then_its_caller_is_remembered() -> None:
    ed = ed25519_key()
    verifier = CountingVerifier(StaticKeys(ed), issuer=ISSUER, audience=AUDIENCE)
    token = ed.sign(claims(jti="a"))
    callers = [await verifier.verify(token) for _ in range(3)]
    assert callers == [callers[0]] * 3
    assert verifier.checks == 1
    await verifier.verify(ed.sign(claims(jti="b", sub="user-43")))
    assert verifier.checks == 2


async def test_a_remembered_token_is_refused_from_its_expiry_on() -> None:
    ed = ed25519_key()
    verifier = CountingVerifier(StaticKeys(ed), issuer=ISSUER, audience=AUDIENCE, leeway=0)
    expiry = int(time.time()) + 2
    token = ed.sign(claims(exp=expiry))
    await verifier.verify(token)
    await verifier.verify(token)
    assert verifier.checks == 1
    await asyncio.sleep(expiry - time.time() + 0.05)
    with pytest.raises(Problem) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401
    assert "expiré" in (refused.value.detail or "")
    assert verifier.checks == 2


async def test_a_remembered_token_is_checked_again_once_its_key_is_withdrawn_or_replaced() -> None:
    ed = ed25519_key()
    keys = StaticKeys(ed)
    verifier = CountingVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
    token = ed.sign(claims())
    await verifier.verify(token)
    keys._static = {}  # withdrawn
    with pytest.raises(Problem) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401
    impostor = ed25519_key()
    keys._static = {ed.kid: jwt.PyJWK({**impostor.jwk, "kid": ed.kid})}  # same kid, other key
    with pytest.raises(Problem):
        await verifier.verify(token)
    keys._static = {ed.kid: jwt.PyJWK(ed.jwk)}  # published again (a refresh: a new object)
    assert (await verifier.verify(token)).subject == "user-42"
    assert verifier.checks == 4


async def test_remembered_tokens_are_bounded_oldest_first() -> None:
    ed = ed25519_key()
    verifier = CountingVerifier(StaticKeys(ed), issuer=ISSUER, audience=AUDIENCE, remembered=3)
    tokens = [ed.sign(claims(jti=str(n))) for n in range(5)]
    for token in tokens:
        await verifier.verify(token)
    assert len(verifier._accepted) == 3
    await verifier.verify(tokens[4])
    assert verifier.checks == 5
    await verifier.verify(tokens[0])
    assert verifier.checks == 6


# --- where a staff member acts (decision 64) --------------------------------------------------


async def test_the_territory_claims_give_the_callers_departements(
    app: FastAPI, keys: tuple[SigningKey, SigningKey]
) -> None:
    ed, _ = keys
    verifier: TokenVerifier = app.state.token_verifier
    officer = await verifier.verify(
        ed.sign(claims(partner_id=None, roles=["officer"], departements=["93", "2A", "971"]))
    )
    assert (officer.departements, officer.national) == (frozenset({"93", "2A", "971"}), False)
    assert officer.covers("2A")
    assert not officer.covers("94")
    central = await verifier.verify(
        ed.sign(claims(partner_id=None, roles=["officer"], national=True))
    )
    assert central.national
    assert central.covers("94")
    nowhere = await verifier.verify(ed.sign(claims(partner_id=None, roles=["officer"])))
    assert not nowhere.covers("94")


@pytest.mark.parametrize(
    "territory",
    [
        {"departements": "94"},
        {"departements": ["94", 94]},
        {"departements": ["99"]},
        {"departements": ["01"] * 21},
        {"national": "yes"},
    ],
)
async def test_a_malformed_territory_is_401(
    client: httpx.AsyncClient, keys: tuple[SigningKey, SigningKey], territory: dict[str, Any]
) -> None:
    ed, _ = keys
    token = ed.sign(claims(roles=["officer"], **territory))
    assert_problem(await client.get("/me", headers=bearer(token)), 401, "unauthenticated")
