"""/readyz follows the database: red while PostgreSQL is down, green again once it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from maillage.cli.embedded import EmbeddedPostgres, ensure_database, free_port
from maillage.common.http import create_app
from maillage.common.settings import ServiceSettings


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, since the test stops it."""
    server = EmbeddedPostgres(tmp_path / "pg", free_port())
    await server.start()
    await ensure_database(server.url, "readiness")
    try:
        yield server
    finally:
        await server.stop()


async def wait_for_status(
    client: httpx.AsyncClient, status: int, timeout: float = 15
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/readyz")
        if response.status_code == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_readyz_follows_the_database(
    own_postgres: EmbeddedPostgres,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    tmp_path: Path,
) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_init.sql").write_text("CREATE TABLE t (id int);")
    settings = ServiceSettings(
        service_name="readiness",
        environment="test",
        database_url=own_postgres.url_for("readiness"),
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
    )
    app: FastAPI = create_app(settings, title="t", description="t", migrations=migrations)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {
                "status": "ready",
                "checks": {"database": "ok", "broker": "ok", "outbox": "ok"},
            }
            assert (await client.get("/livez")).status_code == 200

            await own_postgres.stop()
            down = await wait_for_status(client, 503)
            assert down.status_code == 503
            assert down.headers["content-type"] == "application/problem+json"
            body = down.json()
            assert body["code"] == "not_ready"
            assert body["checks"]["broker"] == "ok"
            assert body["checks"]["database"] != "ok"
            # Alive all the same: an orchestrator must not restart a process that waits for its DB.
            assert (await client.get("/livez")).status_code == 200

            await own_postgres.start()
            back = await wait_for_status(client, 200)
            assert back.status_code == 200, back.text
