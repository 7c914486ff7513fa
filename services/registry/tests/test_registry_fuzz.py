"""The registry's OpenAPI fuzzed with schemathesis: no 5xx, no answer its schema does not allow.

Thousands of generated requests, valid and invalid (schemathesis' positive and negative modes),
against every operation, as an operator and as a verified partner (real tokens from a JWKS
server), with random identifiers and with those of real partners. Every answer must be
documented (status code, media type, headers) and match its documented schema, so every error
must be a well-formed problem document.

The app runs in the session event loop, where its database pool and broker clients live. The
Hypothesis runs are synchronous: they run in a worker thread, which hands each request to the
app on the session loop (httpx's ASGI transport) and waits for the answer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from jwt_fixtures import AUDIENCE, ISSUER, JWKSServer, SigningKey, claims
from openapi_fuzzing import MODES, Fuzzer, describe
from schemathesis import GenerationMode

from maillage.common.auth import JWKSCache, TokenVerifier
from maillage.common.ratelimit import TokenBucket
from maillage.registry.app import RegistrySettings, create

BASE_URL = "http://registry"
# Examples per operation, generation mode, caller and target partner (random or real), as in the
# other services. The registry has the most routes: at 20, with the hostile pass, it had become
# the suite's slowest test (108 s of a 11.5-minute run).
MAX_EXAMPLES = 12
# Valid cases with one hostile value each (lone surrogates, NUL, long strings, deep nesting,
# extreme date-times, forged cursors), per operation, caller and target: never a 5xx.
HOSTILE_EXAMPLES = 6

pytestmark = pytest.mark.filterwarnings(
    # Schemathesis draws from `random` inside its strategies; Hypothesis seeds `random` for each
    # example (deterministically, with derandomize), so the runs stay reproducible.
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)


@dataclass
class Registry:
    app: FastAPI  # for its state
    asgi: Any  # the app as the lifespan manager serves it
    key: SigningKey


@pytest.fixture
async def registry(
    database_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    jwks: tuple[JWKSServer, SigningKey],
) -> AsyncIterator[Registry]:
    server, key = jwks
    settings = RegistrySettings(
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
        jwks_url=server.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        # Fuzzing is not a flood from one address: let the requests reach the routes.
        registrations_per_minute=1_000_000,
        token_requests_per_minute=1_000_000,
        log_level="WARNING",  # thousands of request lines otherwise
    )
    app = create(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        app.state.token_verifier = TokenVerifier(
            JWKSCache(server.url), issuer=ISSUER, audience=AUDIENCE
        )
        yield Registry(app, manager.app, key)


def bearer(key: SigningKey, *, partner_id: str | None = None, roles: list[str]) -> str:
    token = key.sign(
        claims(
            sub=f"fuzz-{uuid.uuid4().hex[:6]}",
            partner_id=partner_id,
            roles=roles,
            exp=int(time.time()) + 3600,  # outlives the run
        )
    )
    return f"Bearer {token}"


async def seed(http: httpx.AsyncClient, operator: str) -> dict[str, str]:
    """A pending and a verified partner for the fuzzer to aim at, besides random ids."""

    async def register(siret: str) -> str:
        response = await http.post(
            "/partners",
            json={
                "kind": "entreprise",
                "legal_name": f"Entreprise {siret}",
                "siret": siret,
                "commune_code": "94054",
                "departement": "94",
                "contacts": [{"name": "Camille", "role": "RSE", "email": "camille@example.org"}],
            },
        )
        assert response.status_code == 201, response.text
        partner_id: str = response.json()["id"]
        return partner_id

    pending = await register("73282932000074")
    verified = await register("44306184100047")
    verify = await http.post(
        f"/partners/{verified}/verify",
        json={"reason": "SIRET checked"},
        headers={"Authorization": operator},
    )
    assert verify.status_code == 200, verify.text
    return {"pending": pending, "verified": verified}


def client(registry: Registry) -> httpx.AsyncClient:
    # A 500 comes back as an answer (for not_a_server_error); its traceback is in the logs.
    transport = httpx.ASGITransport(
        app=registry.asgi, raise_app_exceptions=False, client=("192.0.2.30", 40000)
    )
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)


async def load_schema(http: httpx.AsyncClient) -> Any:
    document = await http.get("/openapi.json")
    assert document.status_code == 200
    return schemathesis.openapi.from_dict(document.json())


async def test_every_operation_answers_as_documented_under_fuzzing(registry: Registry) -> None:
    async with client(registry) as http:
        operator = bearer(registry.key, roles=["operator"])
        partners = await seed(http, operator)
        callers = {
            "operator": operator,
            "verified partner": bearer(
                registry.key, partner_id=partners["verified"], roles=["partner"]
            ),
        }
        schema = await load_schema(http)
        fuzzer = Fuzzer(asyncio.get_running_loop(), http, BASE_URL, MAX_EXAMPLES)
        failures: list[str] = []

        def fuzz_everything() -> None:
            for result in schema.get_all_operations():
                operation = result.ok()
                targets: list[dict[str, Any] | None] = [None]  # random identifiers
                if "{partner_id}" in operation.path:
                    targets += [{"partner_id": partner_id} for partner_id in partners.values()]
                for who, authorization in callers.items():
                    for mode in MODES:
                        for target in targets:
                            try:
                                fuzzer.fuzz(operation, mode, authorization, target)
                            # FailureGroup, or Hypothesis' group of distinct failures, is a
                            # BaseExceptionGroup; anything else is a bug of its own.
                            except (Exception, BaseExceptionGroup) as error:
                                failures.append(
                                    f"{operation.label} ({mode.value}, {who}, {target}):\n"
                                    + describe(error)
                                )
                    for target in targets:
                        try:
                            fuzzer.hostile(operation, authorization, target, HOSTILE_EXAMPLES)
                        except (Exception, BaseExceptionGroup) as error:
                            failures.append(
                                f"{operation.label} (hostile, {who}, {target}):\n" + describe(error)
                            )

        started = time.monotonic()
        await asyncio.to_thread(fuzz_everything)
        elapsed = time.monotonic() - started
    print(
        f"\n{fuzzer.sent} generated requests in {elapsed:.1f} s;"
        f" statuses: {dict(sorted(fuzzer.statuses.items()))}"
    )
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    assert fuzzer.sent >= 2000
    assert not any(status >= 500 for status in fuzzer.statuses)


async def test_rate_limited_answers_are_documented_problems(registry: Registry) -> None:
    """The fuzz above lifts the rate limits; here they bite, and every 429 must still be a
    documented problem document with its Retry-After."""
    registry.app.state.rate_limits = {
        "registration": TokenBucket(rate=1, per=60),
        "token": TokenBucket(rate=1, per=60),
    }
    async with client(registry) as http:
        schema = await load_schema(http)
        fuzzer = Fuzzer(
            asyncio.get_running_loop(), http, BASE_URL, MAX_EXAMPLES, keep=frozenset({429})
        )
        operator = bearer(registry.key, roles=["operator"])

        def fuzz_the_limited_operations() -> None:
            for path in ("/partners", "/oauth/token"):
                fuzzer.fuzz(schema[path]["POST"], GenerationMode.POSITIVE, operator, None, 10)

        await asyncio.to_thread(fuzz_the_limited_operations)
    assert len(fuzzer.answers) >= 10, fuzzer.statuses
    for answer in fuzzer.answers:
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "rate_limited"
        assert int(answer.headers["Retry-After"]) >= 1
