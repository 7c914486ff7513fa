"""Helpers of the console tests: the console in front of the real services.

The registry, funding, cordées (with its partners' consumer), notifications and stages3e run as
real HTTP servers on loopback (uvicorn), each on its own fresh database, with the shared broker
and their consumers; they trust the registry's JWKS, and a local receiver takes the partners'
webhooks. The console is a real server too (the browser test's) and also answers in process
(ASGI) to the HTTP tests; it calls the services over HTTP, exactly as under ``maillage dev``.
One world per test module: starting the services takes seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import uvicorn
from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from maillage.cli.demo import DEMO_PARTNERS, _demo_siret

AUDIENCE = "maillage"
PASSWORD = "a long console password"
YEAR = 2027
T = TypeVar("T")
ROLES = ("operator", "officer", "ordonnateur", "comptable", "admin")
# The staff accounts of the world by name: (roles, départements). The funding staff named by
# their role act for Val-de-Marne (94), the département of the world's envelope and convention;
# operators and admins are national (decision 64).
ACCOUNTS: dict[str, tuple[list[str], list[str]]] = {
    **{role: ([role], ["94"]) for role in ("officer", "ordonnateur", "comptable")},
    **{role: ([role], []) for role in ("operator", "admin")},
    "ordonnateur-93": (["ordonnateur"], ["93"]),
    "officer-93-94": (["officer"], ["93", "94"]),
}


async def serve(app: FastAPI, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(1200):
        if server.started:
            return server, task
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    raise RuntimeError("service did not start")


@dataclass
class World:
    registry_url: str
    funding_url: str
    registry_database: str
    funding_app: FastAPI
    console: FastAPI
    console_asgi: Any
    accounts: dict[str, str] = field(default_factory=dict)  # role -> e-mail
    console_url: str = ""
    traces_url: str = ""
    notifications_url: str = ""
    webhook_url: str = ""  # the partners' receiver
    received: list[dict[str, Any]] = field(default_factory=list)
    services_by_port: dict[int, str] = field(default_factory=dict)
    spans: Any = None  # InMemorySpanExporter: the spans this process's services ended
    cordees_url: str = ""
    stages3e_url: str = ""

    def trace_with(self, attribute: str, value: str) -> list[ReadableSpan]:
        """The ended spans of the traces holding a span whose ``attribute`` is ``value``."""
        ended = self.spans.get_finished_spans()
        wanted = {s.context.trace_id for s in ended if (s.attributes or {}).get(attribute) == value}
        return [s for s in ended if s.context.trace_id in wanted]

    async def export_traces(self, attribute: str, value: str) -> None:
        """Send to the trace store, over OTLP/HTTP as the services do, every span of the traces
        holding a span whose ``attribute`` is ``value``."""
        found = self.trace_with(attribute, value)
        assert found, f"no span with {attribute}={value}"
        exporter = OTLPSpanExporter(endpoint=f"{self.traces_url}/v1/traces")
        chosen = self._as_their_services(found)
        result = await asyncio.to_thread(exporter.export, chosen)  # it blocks: off the loop
        assert result.name == "SUCCESS"

    def _as_their_services(self, spans: list[ReadableSpan]) -> list[ReadableSpan]:
        """The spans, each with the ``service.name`` of the service that made it. Every service
        of this world shares the process's tracer provider (one resource); separate processes
        have one each. A server span is its port's service, a consumer span its group's, any
        other span its parent's; the test's own HTTP call (a client span at the root) stands for
        the partner's application."""
        by_id = {s.context.span_id: s for s in spans}

        def service_of(span: ReadableSpan) -> str:
            attributes = span.attributes or {}
            group = attributes.get("messaging.consumer.group.name")
            if isinstance(group, str):
                return group.split(".")[0]
            if span.kind == SpanKind.SERVER and attributes.get("server.port") is not None:
                return self.services_by_port.get(int(str(attributes["server.port"])), "?")
            parent = by_id.get(span.parent.span_id) if span.parent else None
            if parent is not None:
                return service_of(parent)
            return "partenaire" if span.kind == SpanKind.CLIENT else "?"  # the test's own call

        return [
            ReadableSpan(
                name=s.name,
                context=s.context,
                parent=s.parent,
                resource=Resource.create({"service.name": f"maillage-{service_of(s)}"}),
                attributes=s.attributes,
                events=s.events,
                links=s.links,
                kind=s.kind,
                status=s.status,
                start_time=s.start_time,
                end_time=s.end_time,
                instrumentation_scope=s.instrumentation_scope,
            )
            for s in spans
        ]

    def browser(self) -> httpx.AsyncClient:
        """A fresh cookie jar: one person's browser."""
        transport = httpx.ASGITransport(app=self.console_asgi, raise_app_exceptions=True)
        return httpx.AsyncClient(transport=transport, base_url="http://console", timeout=30)

    async def token(self, role: str) -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"{self.registry_url}/oauth/token",
                data={
                    "grant_type": "password",
                    "username": self.accounts[role],
                    "password": PASSWORD,
                },
            )
        assert response.status_code == 200, response.text
        access: str = response.json()["access_token"]
        return access

    async def bearer(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(role)}"}


async def csrf_of(browser: httpx.AsyncClient, path: str = "/connexion") -> str:
    """The CSRF token of the form on ``path``."""
    page = await browser.get(path)
    marker = 'name="csrf" value="'
    start = page.text.index(marker) + len(marker)
    return page.text[start : page.text.index('"', start)]


@asynccontextmanager
async def signed_in(world: World, role: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in as the account of ``role``."""
    async with world.browser() as browser:
        csrf = await csrf_of(browser)
        response = await browser.post(
            "/connexion",
            data={"csrf": csrf, "username": world.accounts[role], "password": PASSWORD},
        )
        assert response.status_code == 303, response.text
        yield browser


async def register(world: World, legal_name: str, siret: str) -> str:
    """A partner registered in the registry (pending, as every non-school registration)."""
    body = {**DEMO_PARTNERS[3], "legal_name": legal_name, "siret": siret}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"{world.registry_url}/partners", json=body)
    assert response.status_code == 201, response.text
    partner_id: str = response.json()["id"]
    return partner_id


async def until(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60) -> T:
    """Await ``check()`` every 50 ms until it returns something other than None (or False)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found is not None and found is not False:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def client_token(world: World, partner_id: str) -> str:
    """A client-credentials token of a new API client of the partner, created by an operator."""
    async with httpx.AsyncClient(base_url=world.registry_url, timeout=10) as registry:
        client = await registry.post(
            f"/partners/{partner_id}/clients",
            json={"name": "console"},
            headers=await world.bearer("operator"),
        )
        assert client.status_code == 201, client.text
        grant = await registry.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client.json()["client_id"],
                "client_secret": client.json()["client_secret"],
            },
        )
    assert grant.status_code == 200, grant.text
    token: str = grant.json()["access_token"]
    return token


def uai(number: int) -> str:
    """A well-formed UAI of a Val-de-Marne school that the Annuaire does not list here."""
    digits = f"094{number:04d}"
    return digits + "ABCDEFGHJKLMNPRSTUVWXYZ"[int(digits) % 23]


def siret(number: int) -> str:
    """A well-formed fictional SIRET (the demo's numbering)."""
    return _demo_siret(number)
