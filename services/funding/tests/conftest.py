"""Fixtures of the funding tests: the app on a fresh database (helpers in funding_world)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from funding_world import Funding
from jwt_fixtures import AUDIENCE, ISSUER, JWKSServer, SigningKey

from maillage.common.auth import JWKSCache, TokenVerifier
from maillage.funding.app import FundingSettings, create


@pytest.fixture
async def funding(
    database_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    jwks: tuple[JWKSServer, SigningKey],
) -> AsyncIterator[Funding]:
    server, key = jwks
    settings = FundingSettings(
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
        jwks_url=server.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        log_level="WARNING",
        database_pool_max=20,
    )
    app = create(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        app.state.token_verifier = TokenVerifier(
            JWKSCache(server.url), issuer=ISSUER, audience=AUDIENCE
        )
        yield Funding(app, manager.app, key, database_url)
