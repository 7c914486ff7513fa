"""Fixtures of the cordees tests: the app on a fresh database (helpers in cordees_world).

The app runs its Kafka consumers only for the tests that follow the registry through the real
broker (those that use the ``registry`` fixture of test_read_model.py). The others apply
registry events through the handlers directly (``Cordees.apply``): the broker is shared by the
whole session, so a consumer group of the app would also read what other test files published
before (a national import's schools counted in a coverage test's database: the full-run
failures of test_coverage.py), and joining the groups took most of each test's set-up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from cordees_world import Cordees
from jwt_fixtures import AUDIENCE, ISSUER, JWKSServer, SigningKey

from maillage.common.auth import JWKSCache, TokenVerifier
from maillage.cordees.app import CordeesSettings, create
from maillage.cordees.consumers import CONSUMERS


@pytest.fixture
async def cordees(
    request: pytest.FixtureRequest,
    database_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    jwks: tuple[JWKSServer, SigningKey],
) -> AsyncIterator[Cordees]:
    server, key = jwks
    settings = CordeesSettings(
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
    reads_the_bus = "registry" in request.fixturenames
    app = create(settings, consumers=CONSUMERS if reads_the_bus else ())
    async with LifespanManager(app, startup_timeout=60) as manager:
        app.state.token_verifier = TokenVerifier(
            JWKSCache(server.url), issuer=ISSUER, audience=AUDIENCE
        )
        yield Cordees(app, manager.app, key, database_url)
