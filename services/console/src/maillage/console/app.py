"""Composition root of the staff console: settings, the services' clients, sessions, routes.

The console is not built on ``maillage.common.http.create_app``: it has no database, no broker
and no bearer-token API, only pages for a browser (decision 53).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import Field
from pydantic_settings import BaseSettings

from maillage.common.auth import JWKSCache, TokenVerifier
from maillage.common.logging import configure_logging
from maillage.common.settings import service_config
from maillage.console import api
from maillage.console.services import ServiceClients
from maillage.console.sessions import Sessions

STATIC = Path(__file__).parent / "static"


class ConsoleSettings(BaseSettings):
    """``CONSOLE_``-prefixed variables; the services' base URLs default to ``maillage dev``'s."""

    model_config = service_config("console")

    environment: Literal["dev", "test", "production"] = "production"
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"
    registry_url: str = "http://127.0.0.1:8001"
    cordees_url: str = "http://127.0.0.1:8002"
    stages3e_url: str = "http://127.0.0.1:8003"
    funding_url: str = "http://127.0.0.1:8004"
    notifications_url: str = "http://127.0.0.1:8005"
    traces_url: str = Field(
        default="http://127.0.0.1:8007",
        description="Jaeger's query API v3 (compose, Kubernetes) or `maillage dev`'s trace store",
    )
    jwks_url: str = "http://127.0.0.1:8001/.well-known/jwks.json"
    jwt_issuer: str = "http://127.0.0.1:8001"
    jwt_audience: str = "maillage"
    session_idle_minutes: float = Field(default=30, gt=0, le=24 * 60)
    max_sessions: int = Field(default=10_000, ge=1, description="The oldest go first")

    @property
    def cookie_secure(self) -> bool:
        """Secure cookies everywhere but on a developer's loopback (plain HTTP)."""
        return self.environment == "production"

    def base_urls(self) -> dict[str, str]:
        return {
            "registry": self.registry_url,
            "cordees": self.cordees_url,
            "stages3e": self.stages3e_url,
            "funding": self.funding_url,
            "notifications": self.notifications_url,
            "traces": self.traces_url,
        }


def create(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    configure_logging("console", fmt=settings.log_format, level=settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.clients = ServiceClients(settings.base_urls())
        try:
            yield
        finally:
            await app.state.clients.aclose()

    app = FastAPI(
        title="Maillage — console",
        description="La console du personnel : pages HTML, pas d'API publique.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.sessions = Sessions(
        capacity=settings.max_sessions, idle_seconds=settings.session_idle_minutes * 60
    )
    app.state.token_verifier = TokenVerifier(
        JWKSCache(settings.jwks_url), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    api.install(app)
    return app
