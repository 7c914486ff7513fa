"""Fixtures of the stages3e tests: the app on a fresh database (helpers in stages3e_world)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from jwt_fixtures import AUDIENCE, ISSUER, JWKSServer, SigningKey
from stages3e_world import Stages

from maillage.common.auth import JWKSCache, TokenVerifier
from maillage.stages3e.app import Stages3eSettings, create


@pytest.fixture
async def stages(
    database_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    jwks: tuple[JWKSServer, SigningKey],
) -> AsyncIterator[Stages]:
    server, key = jwks
    settings = Stages3eSettings(
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
        jwks_url=server.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        log_level="WARNING",
        database_pool_max=20,
        timed_rules_seconds=3600,
    )
    app = create(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        app.state.token_verifier = TokenVerifier(
            JWKSCache(server.url), issuer=ISSUER, audience=AUDIENCE
        )
        yield Stages(app, manager.app, key)
