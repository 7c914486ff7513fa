"""Background workers run beside HTTP and Kafka for the app's lifetime, on the service's pool."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from asgi_lifespan import LifespanManager

from maillage.common.http import create_app
from maillage.common.settings import ServiceSettings


class Ticker:
    """Counts rows it reads from the pool until stopped."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.ticks = 0
        self.stopped = False
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            self.ticks += await self.pool.fetchval("SELECT 1")
            await asyncio.sleep(0.01)
        self.stopped = True

    def stop(self) -> None:
        self._stop.set()


async def test_workers_start_on_the_pool_and_stop_with_the_app(
    database_url: str, kafka_bootstrap_servers: str, kafka_idempotent_producer: bool
) -> None:
    settings = ServiceSettings(
        service_name="workers",
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
    )
    built: list[Ticker] = []

    def ticker(pool: asyncpg.Pool) -> Ticker:
        built.append(Ticker(pool))
        return built[-1]

    app = create_app(settings, title="t", description="t", workers=[ticker])
    async with LifespanManager(app):
        for _ in range(200):
            if built and built[0].ticks >= 3:
                break
            await asyncio.sleep(0.02)
        assert built[0].ticks >= 3
        assert app.state.runtime.workers == built
    assert built[0].stopped
    assert app.state.runtime.workers == []


class Crasher:
    """Fails on its first round, as a worker meeting an error it does not handle would."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def run(self) -> None:
        await self.pool.fetchval("SELECT 1")
        raise RuntimeError("an error the loop does not handle")

    def stop(self) -> None:
        pass


async def test_a_worker_that_stops_turns_readiness_red(
    database_url: str, kafka_bootstrap_servers: str, kafka_idempotent_producer: bool
) -> None:
    settings = ServiceSettings(
        service_name="workers",
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
    )
    app = create_app(settings, title="t", description="t", workers=[Crasher])
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for _ in range(100):
                ready = await client.get("/readyz")
                if ready.status_code == 503:
                    break
                await asyncio.sleep(0.05)
    assert ready.status_code == 503
    assert ready.json()["checks"]["workers"] == "RuntimeError: stopped: Crasher"
