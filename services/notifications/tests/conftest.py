"""Fixtures of the notifications API tests: the real app on its own database, partner and
operator tokens from the session JWKS, and webhook receivers on loopback.

One app per test module (its start joins the broker's consumer groups, which takes seconds):
tests stay independent by acting for partners of their own, fresh ids every time.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from jwt_fixtures import AUDIENCE, ISSUER, JWKSServer, SigningKey, claims
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import drop_database, ensure_database
from maillage.common.auth import JWKSCache, TokenVerifier
from maillage.common.db import transaction
from maillage.notifications import signing, store
from maillage.notifications.app import NotificationsSettings, create

LOOPBACK = frozenset({"127.0.0.0/8"})


# --- the app -----------------------------------------------------------------------------------


@dataclass
class Notifications:
    """The running notifications app, and how to call it as a partner or an operator."""

    app: FastAPI  # for its state
    asgi: Any  # the app as the lifespan manager serves it
    key: SigningKey

    @property
    def pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.app.state.runtime.pool
        return pool

    def client(self, address: str = "192.0.2.20") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.asgi, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://notifications")

    def bearer(self, *, partner_id: str | None, roles: list[str], ttl: int = 300) -> str:
        token = self.key.sign(
            claims(
                sub=f"user-{uuid.uuid4().hex[:6]}",
                partner_id=partner_id,
                roles=roles,
                exp=int(time.time()) + ttl,
            )
        )
        return f"Bearer {token}"

    def partner(self) -> tuple[uuid.UUID, dict[str, str]]:
        """A fresh partner and the headers of its requests."""
        partner_id = uuid.uuid4()
        bearer = self.bearer(partner_id=str(partner_id), roles=["partner"])
        return partner_id, {"Authorization": bearer}

    def operator(self) -> dict[str, str]:
        return {"Authorization": self.bearer(partner_id=None, roles=["operator"])}

    async def publish(
        self, partner_id: uuid.UUID, event_type: str = "fr.maillage.funding.tranche.approved.v1"
    ) -> uuid.UUID:
        """Queue an event for the partner's endpoints, as the fan-out does; its id."""
        event_id = uuid.uuid4()
        body = signing.body_for(event_type, datetime.now(UTC), {"tranche_id": str(event_id)})
        async with transaction(self.pool) as connection:
            await store.enqueue_event(
                connection,
                partner_ids=[partner_id],
                event_id=event_id,
                event_type=event_type,
                payload=body.decode(),
                now=datetime.now(UTC),
            )
        return event_id


@pytest.fixture(scope="module")
async def module_database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A database for one test module's app."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    await ensure_database(postgres_server_url, name)
    try:
        yield database_url_for(postgres_server_url, name)
    finally:
        await drop_database(postgres_server_url, name)


def api_settings(
    database_url: str, kafka: str, idempotent: bool, jwks_url: str
) -> NotificationsSettings:
    return NotificationsSettings(
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka,
        kafka_idempotent_producer=idempotent,
        jwks_url=jwks_url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        webhook_allow_http=True,
        webhook_allowed_hosts=LOOPBACK,
        # One retry at once, then failed: schedules are the worker's tests, not these.
        webhook_retry_schedule_seconds=(0, 0),
        webhook_poll_interval_seconds=0.05,
        log_level="WARNING",
    )


@pytest.fixture(scope="module")
async def notifications(
    module_database_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    jwks: tuple[JWKSServer, SigningKey],
) -> AsyncIterator[Notifications]:
    server, key = jwks
    app = create(
        api_settings(
            module_database_url, kafka_bootstrap_servers, kafka_idempotent_producer, server.url
        )
    )
    async with LifespanManager(app, startup_timeout=60) as manager:
        app.state.token_verifier = TokenVerifier(
            JWKSCache(server.url), issuer=ISSUER, audience=AUDIENCE
        )
        yield Notifications(app, manager.app, key)


# --- webhook receivers -------------------------------------------------------------------------


@dataclass
class Received:
    webhook_id: str
    verified: bool
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on loopback (uvicorn in a thread): answers the scripted statuses
    first, then 200, and verifies every request with the official ``standardwebhooks``."""

    secrets: list[str] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="receiver", daemon=True)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        with self._lock:
            verified = any(self.verifies(secret, body, headers) for secret in self.secrets)
            self.received.append(Received(headers["webhook-id"], verified, headers, body))
            status = self.script.pop(0) if self.script else 200
        return Response(b"ok", status_code=status)

    @staticmethod
    def verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    def start(self) -> Receiver:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the receiver did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        """The requests received, once there are at least ``count``."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.02)
        return list(self.received)


@pytest.fixture
def webhook_receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()
