"""`ReadConnection`: a pooled connection for a read, given back to the pool after the response
is sent (its reset round trip is off the answer's path), and given back on an error too."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maillage.common.http import ReadConnection, create_app
from maillage.common.settings import ServiceSettings


class HeldAtBody:
    """Checks, as each response body is sent, that the route's connection is still held."""

    def __init__(self, app: ASGIApp, used: list[Any]) -> None:
        self.app = app
        self.used = used
        self.held_when_sent: list[bool] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def noting(message: Message) -> None:
            if message["type"] == "http.response.body" and self.used:
                try:
                    self.held_when_sent.append(await self.used[-1].fetchval("SELECT true"))
                except asyncpg.InterfaceError:  # released to the pool already
                    self.held_when_sent.append(False)
            await send(message)

        await self.app(scope, receive, noting)


async def test_the_connection_goes_back_to_the_pool_after_the_response(
    database_url: str, kafka_bootstrap_servers: str, kafka_idempotent_producer: bool
) -> None:
    router = APIRouter()
    used: list[Any] = []

    @router.get("/answer")
    async def answer(connection: ReadConnection) -> dict[str, Any]:
        used.append(connection)
        return {"answer": await connection.fetchval("SELECT 42")}

    @router.get("/broken")
    async def broken(connection: ReadConnection) -> dict[str, Any]:
        used.append(connection)
        await connection.fetchval("SELECT 1 / 0")
        return {}

    settings = ServiceSettings(
        service_name="reads",
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
    )
    app: FastAPI = create_app(settings, title="t", description="t", routers=[router])
    noted = HeldAtBody(app, used)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=noted, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for _ in range(3):
                assert (await client.get("/answer")).json() == {"answer": 42}
            assert (await client.get("/broken")).status_code == 500
    # Held while each answer went out, the 500 of an unexpected error too (answered by the
    # chassis's middleware, which gives the connection back after it).
    assert noted.held_when_sent == [True, True, True, True]
    for connection in used:  # then given back, the failed request's too
        with pytest.raises(asyncpg.InterfaceError):
            await connection.fetchval("SELECT 1")
