"""Fixtures of the console tests (the world itself is described in console_world)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from console_world import (
    ACCOUNTS,
    AUDIENCE,
    PASSWORD,
    YEAR,
    World,
    client_token,
    register,
    serve,
    siret,
    uai,
    until,
)
from fastapi import FastAPI, Request, Response
from funding_world import Funding
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_dev_traces import _request_then_event as request_then_event

from maillage.cli.demo import DEMO_PARTNERS
from maillage.cli.dev import database_url_for
from maillage.cli.embedded import drop_database, ensure_database, free_port
from maillage.cli.traces import TraceStore
from maillage.cli.traces import create_app as create_traces_app
from maillage.common.catalog import PARTNERS, PartnerRegistered
from maillage.console.app import ConsoleSettings, create
from maillage.cordees import consumers as cordees_consumers
from maillage.cordees import matcher
from maillage.cordees.app import CordeesSettings
from maillage.cordees.app import create as create_cordees
from maillage.funding.app import FundingSettings
from maillage.funding.app import create as create_funding
from maillage.notifications.app import NotificationsSettings
from maillage.notifications.app import create as create_notifications
from maillage.registry import domain as registry_domain
from maillage.registry import store as registry_store
from maillage.registry import tokens
from maillage.registry.app import RegistrySettings
from maillage.registry.app import create as create_registry
from maillage.stages3e.app import Stages3eSettings
from maillage.stages3e.app import create as create_stages3e

# The stages3e service's day: autumn of the school year YEAR-1 - YEAR, whose weeks are ahead.
STAGES_TODAY = datetime(YEAR - 1, 11, 2, 9, tzinfo=UTC)


async def _database(server: str) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    await ensure_database(server, name)
    return name


@pytest.fixture(scope="module")
async def world(
    postgres_server_url: str, kafka_bootstrap_servers: str, kafka_idempotent_producer: bool
) -> AsyncIterator[World]:
    names = [await _database(postgres_server_url) for _ in range(6)]
    registry_db, funding_db, traces_db, cordees_db, notifications_db, stages3e_db = (
        database_url_for(postgres_server_url, n) for n in names
    )
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
    # Cordées with its partners' consumer (schools and têtes de cordée, from the registry's
    # events), not its reference one: the shared broker's schools topic holds other tests'
    # imports, which coverage would count.
    cordees_app = create_cordees(
        CordeesSettings(database_url=cordees_db, **common), consumers=(cordees_consumers.partners,)
    )
    cordees_port = free_port()
    notifications_app = create_notifications(
        NotificationsSettings(
            database_url=notifications_db,
            webhook_allow_http=True,
            webhook_allowed_hosts=frozenset({"127.0.0.0/8"}),
            webhook_retry_schedule_seconds=(0, 0),
            webhook_poll_interval_seconds=0.05,
            **common,
        )
    )
    stages3e_app = create_stages3e(
        Stages3eSettings(database_url=stages3e_db, timed_rules_seconds=3600, **common)
    )
    stages3e_app.state.clock = lambda: STAGES_TODAY  # its statistics' school year, whatever the day
    notifications_port, stages3e_port = free_port(), free_port()
    received: list[dict[str, Any]] = []  # the partners' webhook receiver: what it was sent

    async def hook(request: Request) -> Response:
        received.append({"headers": dict(request.headers), "body": await request.json()})
        return Response(status_code=204)

    receiver_port = free_port()
    receiver = FastAPI()
    receiver.add_api_route("/crochet", hook, methods=["POST"])
    servers = [
        await serve(registry_app, registry_port),
        await serve(funding_app, funding_port),
        await serve(cordees_app, cordees_port),
        await serve(notifications_app, notifications_port),
        await serve(stages3e_app, stages3e_port),
        await serve(receiver, receiver_port),
    ]
    # The trace store `maillage dev` runs, on its own database (tests export traces to it).
    traces_pool = await asyncpg.create_pool(traces_db, min_size=1, max_size=4)
    store = TraceStore(traces_pool)
    await store.setup()
    traces_port = free_port()
    servers.append(await serve(create_traces_app(store), traces_port))
    # The services of this world run in this process: their spans (the process's tracer
    # provider, whose service.name is the first service's) are kept in memory; a test sends the
    # traces it follows to the store (World.export_traces), as the OTLP export does under
    # `maillage dev`.
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    spans = InMemorySpanExporter()
    spans_in_memory = SimpleSpanProcessor(spans)
    provider.add_span_processor(spans_in_memory)
    console = create(
        ConsoleSettings(
            environment="test",
            log_format="json",
            registry_url=registry_url,
            funding_url=funding_url,
            cordees_url=f"http://127.0.0.1:{cordees_port}",
            stages3e_url=f"http://127.0.0.1:{stages3e_port}",
            notifications_url=f"http://127.0.0.1:{notifications_port}",
            traces_url=f"http://127.0.0.1:{traces_port}",
            jwks_url=f"{registry_url}/.well-known/jwks.json",
            jwt_issuer=registry_url,
            jwt_audience=AUDIENCE,
        )
    )
    connection = await asyncpg.connect(registry_db)
    accounts = {}
    try:
        for name, (roles, codes) in ACCOUNTS.items():
            accounts[name] = f"{name}@console.test"
            departements, national = registry_domain.staff_territory(roles, codes, national=False)
            await registry_store.upsert_staff(
                connection,
                email=accounts[name],
                password_hash=tokens.hash_secret(PASSWORD),
                roles=roles,
                departements=departements,
                national=national,
            )
    finally:
        await connection.close()
    console_port = free_port()
    servers.append(await serve(console, console_port))  # the browser test needs a real server
    try:
        yield World(
            registry_url,
            funding_url,
            registry_db,
            funding_app,
            console,
            console,
            accounts,
            console_url=f"http://127.0.0.1:{console_port}",
            traces_url=f"http://127.0.0.1:{traces_port}",
            spans=spans,
            notifications_url=f"http://127.0.0.1:{notifications_port}",
            webhook_url=f"http://127.0.0.1:{receiver_port}/crochet",
            received=received,
            services_by_port={
                registry_port: "registry",
                funding_port: "funding",
                cordees_port: "cordees",
                notifications_port: "notifications",
                stages3e_port: "stages3e",
                receiver_port: "partenaire",  # the partners' webhook receiver
            },
            cordees_url=f"http://127.0.0.1:{cordees_port}",
            stages3e_url=f"http://127.0.0.1:{stages3e_port}",
        )
    finally:
        spans_in_memory.shutdown()
        for server, task in servers:
            server.should_exit = True
            await task
        await traces_pool.close()
        for name in names:
            await drop_database(postgres_server_url, name)


@pytest.fixture(scope="module")
async def funded(world: World) -> dict[str, Any]:
    """A beneficiary verified in both services with its own API client, an envelope of 94 for
    2027, and a signed convention whose advance the beneficiary has requested."""
    partner_id = await register(world, "Bénéficiaire de la console", siret(700))
    async with httpx.AsyncClient(base_url=world.registry_url, timeout=10) as registry:
        verified = await registry.post(
            f"/partners/{partner_id}/verify",
            json={"reason": "pièces vues"},
            headers=await world.bearer("operator"),
        )
        assert verified.status_code == 200, verified.text
    partner_token = await client_token(world, partner_id)
    await Funding(world.funding_app, None, None, "").apply(  # type: ignore[arg-type]
        PartnerRegistered(
            partner_id=uuid.UUID(partner_id),
            kind="entreprise",
            legal_name="Bénéficiaire de la console",
            status="verified",
            version=2,
            siret=siret(700),
            rna=None,
            departement="94",
        )
    )
    async with httpx.AsyncClient(base_url=world.funding_url, timeout=10) as funding:
        officer, ordonnateur = await world.bearer("officer"), await world.bearer("ordonnateur")
        envelope = await funding.post(
            "/envelopes",
            json={"departement": "94", "year": YEAR, "ae_cents": 10_000_000, "cp_cents": 5_000_000},
            headers=ordonnateur,
        )
        assert envelope.status_code == 201, envelope.text
        convention = await funding.post(
            "/conventions",
            json={
                "beneficiary_partner_id": partner_id,
                "departement": "94",
                "object": "Ateliers de sciences au collège",
                "first_year": YEAR,
                "yearly_amounts_cents": [3_000_000],
                "budget_cents": 3_000_000,
                "cofinancements": [],
            },
            headers=officer,
        )
        assert convention.status_code == 201, convention.text
        path = f"/conventions/{convention.json()['id']}"
        for step, body, who in (
            ("instruct", None, officer),
            ("programme", {"committee_date": f"{YEAR}-01-12"}, ordonnateur),
            (
                "sign",
                {
                    "ej_number": "2103000147",
                    "signed_on": f"{YEAR}-01-20",
                    "declares_no_interest": True,
                },
                ordonnateur,
            ),
        ):
            response = await funding.post(f"{path}/{step}", json=body, headers=who)
            assert response.status_code == 200, response.text
        advance = response.json()["tranches"][0]
        requested = await funding.post(
            f"/tranches/{advance['id']}/request",
            headers={"Authorization": f"Bearer {partner_token}"},
        )
        assert requested.status_code == 200, requested.text
    return {
        "partner_id": partner_id,
        "partner_token": partner_token,
        "convention_id": convention.json()["id"],
        "tranche": advance,
    }


@pytest.fixture(scope="module")
async def traced(world: World) -> dict[str, str]:
    """A trace in the store: a registry request publishing an event that notifications process,
    exported by the OpenTelemetry SDK as the services do."""
    event_id = str(uuid.uuid4())
    trace_id = await request_then_event(world.traces_url, event_id)
    return {"trace_id": trace_id, "event_id": event_id}


@pytest.fixture(scope="module")
async def poisoned(world: World, kafka_bootstrap_servers: str) -> str:
    """A dead letter of the funding service: a record that is not JSON, produced to the
    partners topic its consumer group reads (as a faulty producer could), with an event id.
    Returns that event id once funding's /admin/dlq lists it."""
    event_id = str(uuid.uuid4())
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            PARTNERS.name,
            value=b"pas du JSON",
            key=str(uuid.uuid4()).encode(),
            headers=[("ce_id", event_id.encode()), ("ce_type", b"maillage.partner.registered")],
        )
    finally:
        await producer.stop()
    async with httpx.AsyncClient(base_url=world.funding_url, timeout=10) as funding:
        operator = await world.bearer("operator")
        for _ in range(600):
            letters = (await funding.get("/admin/dlq", headers=operator)).json()["items"]
            if any(letter["event_id"] == event_id for letter in letters):
                return event_id
            await asyncio.sleep(0.1)
    raise AssertionError("the poison record never reached funding's dead letters")


@pytest.fixture(scope="module")
async def hooked(world: World, funded: dict[str, Any]) -> dict[str, Any]:
    """The funded partner's webhook endpoint on the world's receiver, subscribed in the real
    notifications service (once it has the registry's events of this partner)."""
    partner = {"Authorization": f"Bearer {funded['partner_token']}"}
    async with httpx.AsyncClient(base_url=world.notifications_url, timeout=10) as notifications:
        for _ in range(300):
            endpoint = await notifications.post(
                "/webhook-endpoints", json={"url": world.webhook_url}, headers=partner
            )
            if endpoint.status_code != 403:
                break
            await asyncio.sleep(0.1)
    assert endpoint.status_code == 201, endpoint.text
    found: dict[str, Any] = endpoint.json()
    return found


@pytest.fixture(scope="module")
async def cordee(world: World) -> dict[str, Any]:
    """A tête de cordée with an open offer and its webhook endpoint on the world's receiver, and
    a collège a few kilometres away, both registered in the registry and verified by an
    operator, each with its API token; cordées and notifications know both from the registry's
    events. The collège has asked for nothing yet."""
    operator = await world.bearer("operator")
    bodies = {
        "tete": {
            **DEMO_PARTNERS[0],
            "legal_name": "Université de la console (tête de cordée)",
            "siret": siret(900),
        },
        "school": {
            "kind": "college",
            "legal_name": "Collège de la console",
            "uai": uai(901),
            "commune_code": "94054",
            "commune_name": "Orly",
            "departement": "94",
            "latitude": 48.7433,
            "longitude": 2.3928,
            "programmes": ["cordees"],
            "contacts": [{"name": "Direction", "role": "Principal", "email": "ce@console.test"}],
        },
    }
    ids: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=world.registry_url, timeout=10) as registry:
        for name, body in bodies.items():
            registered = await registry.post("/partners", json=body)
            assert registered.status_code == 201, registered.text
            ids[name] = registered.json()["id"]
            verified = await registry.post(
                f"/partners/{ids[name]}/verify", json={"reason": "pièces vues"}, headers=operator
            )
            assert verified.status_code == 200, verified.text
    tete = {"Authorization": f"Bearer {await client_token(world, ids['tete'])}"}
    school = {"Authorization": f"Bearer {await client_token(world, ids['school'])}"}
    school_year = matcher.school_year_of(date.today())
    async with httpx.AsyncClient(timeout=10) as http:

        async def once_known(method: str, url: str, **arguments: Any) -> httpx.Response | None:
            """The answer, once the service has the partner verified (403 until then)."""
            response = await http.request(method, url, **arguments)
            return None if response.status_code == 403 else response

        endpoint = await until(
            lambda: once_known(
                "POST",
                f"{world.notifications_url}/webhook-endpoints",
                json={"url": world.webhook_url},
                headers=tete,
            ),
            "notifications to know the tête de cordée",
        )
        assert endpoint.status_code == 201, endpoint.text
        offer = await until(
            lambda: once_known(
                "POST",
                f"{world.cordees_url}/offers",
                json={
                    "school_year": school_year,
                    "capacity": 2,
                    "levels": ["4e", "3e"],
                    "thematics": ["numerique", "sciences"],
                    "max_distance_km": 30,
                },
                headers={**tete, "Idempotency-Key": "console-offer"},
            ),
            "cordées to know the tête de cordée",
        )
        assert offer.status_code == 201, offer.text
        # Withdrawing an unknown request: 403 while cordées does not know the collège, 404 once
        # it does (its match request is then made once, under its own request id).
        probe = await until(
            lambda: once_known(
                "POST",
                f"{world.cordees_url}/match-requests/{uuid.uuid4()}/withdraw",
                headers=school,
            ),
            "cordées to know the collège",
        )
        assert probe.status_code == 404, probe.text
    return {
        "tete_id": ids["tete"],
        "school_id": ids["school"],
        "school_headers": school,
        "offer_id": offer.json()["id"],
        "school_year": school_year,
    }
