"""Fixtures of the console tests (the world itself is described in console_world)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from console_world import AUDIENCE, PASSWORD, ROLES, World, free_port, serve

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import drop_database, ensure_database
from maillage.console.app import ConsoleSettings, create
from maillage.funding.app import FundingSettings
from maillage.funding.app import create as create_funding
from maillage.registry import store as registry_store
from maillage.registry import tokens
from maillage.registry.app import RegistrySettings
from maillage.registry.app import create as create_registry


async def _database(server: str) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    await ensure_database(server, name)
    return name


@pytest.fixture(scope="module")
async def world(
    postgres_server_url: str, kafka_bootstrap_servers: str, kafka_idempotent_producer: bool
) -> AsyncIterator[World]:
    names = [await _database(postgres_server_url), await _database(postgres_server_url)]
    registry_db, funding_db = (database_url_for(postgres_server_url, n) for n in names)
    registry_port, funding_port = free_port(), free_port()
    registry_url = f"http://127.0.0.1:{registry_port}"
    funding_url = f"http://127.0.0.1:{funding_port}"
    common: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap_servers": kafka_bootstrap_servers,
        "kafka_idempotent_producer": kafka_idempotent_producer,
        "jwt_issuer": registry_url,
        "jwks_url": f"{registry_url}/.well-known/jwks.json",
        "jwt_audience": AUDIENCE,
        "log_level": "WARNING",
    }
    registry_app = create_registry(
        RegistrySettings(database_url=registry_db, token_requests_per_minute=600, **common)
    )
    funding_app = create_funding(FundingSettings(database_url=funding_db, **common))
    servers = [await serve(registry_app, registry_port), await serve(funding_app, funding_port)]
    unreachable = f"http://127.0.0.1:{free_port()}"
    console = create(
        ConsoleSettings(
            environment="test",
            log_format="json",
            registry_url=registry_url,
            funding_url=funding_url,
            cordees_url=unreachable,
            stages3e_url=unreachable,
            notifications_url=unreachable,
            jwks_url=f"{registry_url}/.well-known/jwks.json",
            jwt_issuer=registry_url,
            jwt_audience=AUDIENCE,
        )
    )
    connection = await asyncpg.connect(registry_db)
    accounts = {}
    try:
        for role in ROLES:
            accounts[role] = f"{role}@console.test"
            await registry_store.upsert_staff(
                connection,
                email=accounts[role],
                password_hash=tokens.hash_secret(PASSWORD),
                roles=[role],
            )
    finally:
        await connection.close()
    try:
        async with LifespanManager(console) as manager:
            yield World(
                registry_url, funding_url, registry_db, funding_app, console, manager.app, accounts
            )
    finally:
        for server, task in servers:
            server.should_exit = True
            await task
        for name in names:
            await drop_database(postgres_server_url, name)
