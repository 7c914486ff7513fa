"""The fan-out end to end: CloudEvents records on the real broker reach the running app.

The notifications app runs with its lifespan (consumer group, delivery and mail workers) on a
fresh database; events are produced as CloudEvents records on the domain topics, exactly as a
service's outbox relay writes them. Webhooks arrive at a receiver on loopback that verifies them
with the official ``standardwebhooks`` library; mail arrives at an aiosmtpd server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import Envelope as SMTPEnvelope
from aiosmtpd.smtp import Session
from asgi_lifespan import LifespanManager
from backbone_world import read_topic
from fastapi import FastAPI
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maillage.cli.embedded import free_port
from maillage.common import sealing
from maillage.common.catalog import (
    MatchProposed,
    MatchUnmatched,
    PairingEstablished,
    PartnerSuspended,
    PartnerVerified,
    SchoolClaimCodeSealed,
    StageOfferPublished,
    catalog,
    school_claim_seal_context,
)
from maillage.common.db import create_pool, migrate_service, transaction
from maillage.common.events import Envelope, Event, encode_headers
from maillage.notifications import signing, store
from maillage.notifications.app import NotificationsSettings, create
from maillage.notifications.secretbox import SecretBox

MIGRATIONS = Path(store.__file__).parent / "migrations"
PROPOSED = "fr.maillage.cordees.match-request.proposed.v1"
ORLY = (48.7433, 2.3936)
CRETEIL = (48.7904, 2.4556)  # about 7 km from Orly
LYON = (45.7640, 4.8357)
CLAIM_SEAL_PRIVATE_KEY = sealing.generate_private_pem()  # this service's, as the tests play it


# --- real receivers: webhooks and SMTP ----------------------------------------------------------


@dataclass
class WebhookReceiver:
    """One uvicorn app on loopback; each path is an endpoint whose secret is registered here."""

    secrets: dict[str, str] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  # paths answering 410 Gone
    received: list[tuple[str, str, Any]] = field(default_factory=list)  # path, webhook-id, body
    refused: list[str] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/{name}", self._hook, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _hook(self, request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        try:
            payload = Webhook(self.secrets[path]).verify(body, dict(request.headers))
        except (KeyError, WebhookVerificationError):
            with self._lock:
                self.refused.append(path)
            return Response(status_code=401)
        with self._lock:
            self.received.append((path, request.headers["webhook-id"], payload))
        return Response(status_code=410 if path in self.gone else 204)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@dataclass
class MailInbox:
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(
        self, server: SMTPProtocol, session: Session, envelope: SMTPEnvelope
    ) -> str:
        parsed = message_from_bytes(envelope.original_content or b"", policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    started = WebhookReceiver().start()
    yield started
    started.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[MailInbox, int]]:
    inbox, port = MailInbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


# --- the app -----------------------------------------------------------------------------------


@dataclass
class World:
    app: FastAPI
    pool: asyncpg.Pool
    bootstrap: str
    settings: NotificationsSettings
    receiver: WebhookReceiver
    inbox: MailInbox
    producer: AIOKafkaProducer

    async def produce(self, event: Event, *, event_id: uuid.UUID | None = None) -> uuid.UUID:
        """Write the event as the outbox relay does: CloudEvents binary mode, keyed."""
        spec = catalog.spec_of(event)
        envelope = Envelope(
            id=event_id or uuid.uuid4(),
            type=spec.event_type,
            source=spec.source,
            subject=spec.key_of(event),
            time=datetime.now(UTC),
        )
        await self.producer.send_and_wait(
            spec.topic.name,
            key=envelope.subject.encode(),
            value=event.model_dump_json().encode(),
            headers=encode_headers(envelope.headers()),
        )
        return envelope.id

    async def partner(
        self,
        legal_name: str,
        *,
        kind: str = "association",
        at: tuple[float, float] | None = None,
    ) -> uuid.UUID:
        """A verified partner, known to notifications through the registry's event."""
        partner_id = uuid.uuid4()
        latitude, longitude = at or (None, None)
        verified = await self.produce(
            PartnerVerified(
                partner_id=partner_id,
                kind=kind,
                legal_name=legal_name,
                status="verified",
                version=2,
                latitude=latitude,
                longitude=longitude,
            )
        )
        await self.applied(verified)  # known before anything is subscribed
        return partner_id

    async def endpoint(self, partner_id: uuid.UUID, name: str) -> uuid.UUID:
        """An endpoint at ``/<name>`` of the receiver, with a fresh secret."""
        endpoint_id = uuid.uuid4()
        secret = signing.new_secret()
        box = SecretBox(self.settings.secret_encryption_key.get_secret_value())
        self.receiver.secrets[f"/{name}"] = secret
        async with transaction(self.pool) as connection:
            await store.create_endpoint(
                connection,
                endpoint_id=endpoint_id,
                partner_id=partner_id,
                url=f"{self.receiver.url}/{name}",
                sealed_secret=box.seal(secret, endpoint_id),
            )
        return endpoint_id

    async def channel(self, partner_id: uuid.UUID, address: str, *, confirmed: bool = True) -> None:
        await self.pool.execute(
            "INSERT INTO email_channels (id, partner_id, address, confirmed_at)"
            " VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END)",
            uuid.uuid4(),
            partner_id,
            address,
            confirmed,
        )

    async def deliveries(self, event_id: uuid.UUID) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT endpoint_id, payload FROM deliveries WHERE event_id = $1", event_id
        )
        return rows

    async def mails(self, event_id: uuid.UUID) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT recipient FROM outgoing_mail WHERE dedupe_key = $1 ORDER BY recipient",
            str(event_id),
        )
        return [row["recipient"] for row in rows]

    async def applied(self, *event_ids: uuid.UUID) -> None:
        """Wait until the fan-out group has applied these events (its inbox says so)."""

        async def done() -> bool:
            count = await self.pool.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer_group = 'notifications.fanout'"
                " AND event_id = ANY($1::uuid[])",
                list(event_ids),
            )
            return bool(count == len(event_ids))

        assert await wait_until(done, timeout=60), "the fan-out did not apply the events"


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return await predicate()


@pytest.fixture
async def world(
    database_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    receiver: WebhookReceiver,
    smtp: tuple[MailInbox, int],
) -> AsyncIterator[World]:
    inbox, smtp_port = smtp
    settings = NotificationsSettings(
        environment="test",
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
        webhook_allow_http=True,
        webhook_allowed_hosts=frozenset({"127.0.0.0/8"}),
        webhook_poll_interval_seconds=0.05,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        mail_poll_interval_seconds=0.05,
        claim_seal_private_key=CLAIM_SEAL_PRIVATE_KEY,
    )
    app = create(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers, acks="all")
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        await producer.start()
        pool = await create_pool(database_url)
        try:
            yield World(app, pool, kafka_bootstrap_servers, settings, receiver, inbox, producer)
        finally:
            await pool.close()
            await producer.stop()


# --- the tests ---------------------------------------------------------------------------------


async def test_an_event_reaches_every_subscribed_endpoint_and_confirmed_address_once(
    world: World,
) -> None:
    school = await world.partner("Collège Robert Desnos", kind="college", at=ORLY)
    tete = await world.partner("EFREI", kind="etablissement_superieur", at=(48.7886, 2.3636))
    stranger = await world.partner("Une association voisine")
    school_hooks = [await world.endpoint(school, "desnos-erp"), await world.endpoint(school, "ent")]
    tete_hook = await world.endpoint(tete, "efrei")
    await world.endpoint(stranger, "stranger")
    await world.channel(school, "principal@desnos.example")
    await world.channel(school, "pas-encore@desnos.example", confirmed=False)
    await world.channel(tete, "cordees@efrei.example")
    # The tête wants proposals by webhook only.
    await world.pool.execute(
        "INSERT INTO preferences (partner_id, event_type, webhook, email)"
        " VALUES ($1, $2, true, false)",
        tete,
        PROPOSED,
    )

    proposed = MatchProposed(
        request_id=uuid.uuid4(),
        school_partner_id=school,
        school_year="2026-2027",
        status="proposed",
        priority_class="REP+",
        offer_id=uuid.uuid4(),
        tete_partner_id=tete,
        score=0.92,
        distance_km=5.1,
        rank=1,
    )
    event_id = await world.produce(proposed)
    await world.applied(event_id)

    deliveries = await world.deliveries(event_id)
    assert sorted(row["endpoint_id"] for row in deliveries) == sorted([*school_hooks, tete_hook])
    body = json.loads(deliveries[0]["payload"])
    assert body["type"] == PROPOSED
    assert body["data"] == proposed.model_dump(mode="json")
    assert await world.mails(event_id) == ["principal@desnos.example"]

    # Each endpoint receives it, signed, with the event id as webhook-id; the mail arrives.
    async def delivered() -> bool:
        return len([r for r in world.receiver.received if r[1] == str(event_id)]) == 3

    assert await wait_until(delivered)
    assert world.receiver.refused == []
    assert sorted(
        path for path, webhook_id, _ in world.receiver.received if webhook_id == str(event_id)
    ) == [
        "/desnos-erp",
        "/efrei",
        "/ent",
    ]

    async def mailed() -> bool:
        return any(m["To"] == "principal@desnos.example" for m in world.inbox.messages)

    assert await wait_until(mailed)
    [message] = [m for m in world.inbox.messages if m["To"] == "principal@desnos.example"]
    assert message["Subject"] == "Proposition de cordée\u00a0: Collège Robert Desnos et EFREI"
    kinds = {part.get_content_type() for part in message.walk() if not part.is_multipart()}
    assert kinds == {"text/plain", "text/html"}

    # The same event delivered again (a relay retry, a replay) changes nothing.
    again = await world.produce(proposed, event_id=event_id)
    marker = await world.produce(proposed)  # a new event behind it, in the same partition
    await world.applied(marker)
    assert again == event_id
    assert len(await world.deliveries(event_id)) == 3
    assert await world.mails(event_id) == ["principal@desnos.example"]
    duplicates = await world.pool.fetchval(
        "SELECT count(*) FROM inbox WHERE event_id = $1", event_id
    )
    assert duplicates == 1


async def test_a_suspended_partner_hears_only_of_its_suspension(world: World) -> None:
    school = await world.partner("Collège Paul Éluard", kind="college")
    tete = await world.partner("Lycée suspendu", kind="lycee")
    await world.endpoint(school, "eluard")
    await world.endpoint(tete, "suspendu")
    await world.channel(tete, "proviseur@suspendu.example")
    suspension = await world.produce(
        PartnerSuspended(
            partner_id=tete,
            kind="lycee",
            legal_name="Lycée suspendu",
            status="suspended",
            version=3,
        )
    )
    await world.applied(suspension)  # topics are not ordered with each other
    pairing = await world.produce(
        PairingEstablished(
            pairing_id=uuid.uuid4(),
            request_id=uuid.uuid4(),
            offer_id=uuid.uuid4(),
            tete_partner_id=tete,
            school_partner_id=school,
            school_year="2026-2027",
        )
    )
    await world.applied(pairing)

    assert len(await world.deliveries(suspension)) == 1  # told why, by webhook
    assert await world.mails(suspension) == ["proviseur@suspendu.example"]  # and by e-mail
    pairing_deliveries = await world.deliveries(pairing)
    school_hook = await world.pool.fetchval(
        "SELECT id FROM webhook_endpoints WHERE partner_id = $1", school
    )
    assert [row["endpoint_id"] for row in pairing_deliveries] == [school_hook]
    assert await world.mails(pairing) == []
    status = await world.pool.fetchval("SELECT status FROM partners WHERE id = $1", tete)
    assert status == "suspended"


async def test_a_stage_offer_reaches_the_schools_following_offers_nearby(world: World) -> None:
    company = await world.partner("Ingénieurs pour l'école", kind="entreprise", at=ORLY)
    near = await world.partner("Collège de Créteil", kind="college", at=CRETEIL)
    far = await world.partner("Collège de Lyon", kind="college", at=LYON)
    indifferent = await world.partner("Collège indifférent", kind="college", at=CRETEIL)
    for partner_id, name in [(company, "ipe"), (near, "near"), (far, "far"), (indifferent, "ind")]:
        await world.endpoint(partner_id, name)
    await world.channel(near, "stages@creteil.example")
    await world.pool.executemany(
        "INSERT INTO partner_settings (partner_id, stage_offers_within_km) VALUES ($1, $2)",
        [(near, 10.0), (far, 200.0)],  # the indifferent collège follows no offers
    )

    offer = await world.produce(
        StageOfferPublished(
            offer_id=uuid.uuid4(),
            partner_id=company,
            title="Une semaine au bureau d'études",
            week_start="2026-12-07",
            places=2,
            status="published",
        )
    )  # no coordinates of its own: the company's are used
    await world.applied(offer)

    hooks = {row["endpoint_id"] for row in await world.deliveries(offer)}
    owners = set(
        await world.pool.fetchval(
            "SELECT array_agg(partner_id) FROM webhook_endpoints WHERE id = ANY($1::uuid[])",
            list(hooks),
        )
    )
    assert owners == {company, near}
    assert await world.mails(offer) == ["stages@creteil.example"]

    async def mailed() -> bool:
        return any(m["To"] == "stages@creteil.example" for m in world.inbox.messages)

    assert await wait_until(mailed)
    [message] = [m for m in world.inbox.messages if m["To"] == "stages@creteil.example"]
    assert message["Subject"] == (
        "Nouvelle offre de stage de 3e\u00a0: Une semaine au bureau d'études"
    )
    text = message.get_body(("plain",))
    assert text is not None
    assert "lundi 7 décembre 2026" in text.get_content()


async def test_an_event_that_cannot_be_processed_lands_in_the_dead_letters(world: World) -> None:
    spec = catalog.events[PROPOSED]
    poison_id = uuid.uuid4()
    envelope = Envelope(
        id=poison_id,
        type=spec.event_type,
        source=spec.source,
        subject="not-a-request",
        time=datetime.now(UTC),
    )
    await world.producer.send_and_wait(
        spec.topic.name,
        key=b"not-a-request",
        value=json.dumps({"request_id": "not a uuid"}).encode(),
        headers=encode_headers(envelope.headers()),
    )
    records = await read_topic(world.bootstrap, "dlq.notifications.fanout", at_least=1, timeout=60)
    dead = [
        dict((name, value.decode()) for name, value in record.headers)
        for record in records
        if dict(record.headers).get("ce_id") == str(poison_id).encode()
    ]
    assert len(dead) == 1
    assert dead[0]["dlq-consumer-group"] == "notifications.fanout"
    assert dead[0]["dlq-original-topic"] == spec.topic.name
    assert "ValidationError" in dead[0]["dlq-error-class"]


async def test_an_endpoint_answering_410_is_disabled_and_its_partner_told_by_mail(
    world: World,
) -> None:
    school = await world.partner("Collège Jean Vilar", kind="college")
    endpoint_id = await world.endpoint(school, "vilar")
    world.receiver.gone.add("/vilar")
    await world.channel(school, "numerique@vilar.example")
    await world.pool.execute(  # only the webhook: the mail below is about the endpoint
        "INSERT INTO preferences (partner_id, event_type, webhook, email)"
        " VALUES ($1, $2, true, false)",
        school,
        "fr.maillage.cordees.match-request.unmatched.v1",
    )
    await world.produce(
        MatchUnmatched(
            request_id=uuid.uuid4(),
            school_partner_id=school,
            school_year="2026-2027",
            status="unmatched",
            priority_class="REP",
        )
    )

    async def told() -> bool:
        return any(m["To"] == "numerique@vilar.example" for m in world.inbox.messages)

    assert await wait_until(told)
    [message] = [m for m in world.inbox.messages if m["To"] == "numerique@vilar.example"]
    assert message["Subject"] == "Votre point de réception de webhooks est désactivé"
    text = message.get_body(("plain",))
    assert text is not None
    assert f"{world.receiver.url}/vilar" in text.get_content()
    assert "410 Gone" in text.get_content()
    endpoint = await world.pool.fetchrow(
        "SELECT enabled, disabled_reason FROM webhook_endpoints WHERE id = $1", endpoint_id
    )
    assert endpoint["enabled"] is False
    assert "410" in endpoint["disabled_reason"]


async def test_the_partner_read_model_keeps_only_newer_versions(database_url: str) -> None:
    await migrate_service(database_url, MIGRATIONS)
    connection = await asyncpg.connect(database_url)
    try:
        partner_id = uuid.uuid4()
        facts = {"partner_id": partner_id, "kind": "association", "status": "verified"}
        newer = PartnerVerified(**facts, legal_name="Nouveau nom", version=5)
        older = PartnerVerified(**facts, legal_name="Ancien nom", version=4)
        assert await store.apply_partner(connection, newer)
        assert not await store.apply_partner(connection, older)
        assert not await store.apply_partner(connection, newer)
        name = await connection.fetchval(
            "SELECT legal_name FROM partners WHERE id = $1", partner_id
        )
        assert name == "Nouveau nom"
    finally:
        await connection.close()


async def test_a_clear_school_claim_code_written_before_the_upgrade_is_still_mailed(
    world: World, capfd: pytest.CaptureFixture[str]
) -> None:
    """Decision 41, v1 (no longer produced, decision 63): a code in clear is mailed to the
    Annuaire's mailbox, once even if the event comes twice, and no webhook or log line
    carries it."""
    from maillage.common.catalog import SchoolClaimCodeIssued

    partner_id = await world.partner("Collège Robert Desnos")  # even a partner with an endpoint
    event = SchoolClaimCodeIssued(
        claim_id=uuid.uuid4(),
        partner_id=partner_id,
        uai="0940123Y",
        school_name="Collège Robert Desnos",
        mailbox="ce.0940123Y@ac-creteil.fr",
        legal_name="Collège Robert Desnos",
        code="04719263",
        expires_at=datetime.now(UTC),
    )
    event_id = await world.produce(event)
    await world.produce(event, event_id=event_id)  # redelivered: mailed once

    async def mailed() -> bool:
        return any(m["To"] == "ce.0940123Y@ac-creteil.fr" for m in world.inbox.messages)

    assert await wait_until(mailed)
    await asyncio.sleep(0.5)  # room for a second mail, which must not come
    [message] = [m for m in world.inbox.messages if m["To"] == "ce.0940123Y@ac-creteil.fr"]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert "04719263" in body.get_content()
    assert "04719263" not in message["Subject"]  # maillage dev prints subjects
    assert not any("04719263" in json.dumps(item, default=str) for item in world.receiver.received)
    captured = capfd.readouterr()
    assert "04719263" not in captured.out + captured.err


def sealed_claim(
    partner_id: uuid.UUID, code: str, *, private_pem: str = CLAIM_SEAL_PRIVATE_KEY
) -> SchoolClaimCodeSealed:
    """The registry's v2 event: the code sealed for the holder of ``private_pem``."""
    claim_id, mailbox = uuid.uuid4(), "ce.0941147L@ac-creteil.fr"
    sealing_key = sealing.SealingKey.from_pem(sealing.public_pem(private_pem))
    return SchoolClaimCodeSealed(
        claim_id=claim_id,
        partner_id=partner_id,
        uai="0941147L",
        school_name="Collège Fernande Flagon",
        mailbox=mailbox,
        legal_name="Collège Fernande Flagon",
        sealed_code=sealing_key.seal(
            code, school_claim_seal_context(claim_id, partner_id, mailbox)
        ),
        expires_at=datetime.now(UTC),
    )


async def test_a_sealed_school_claim_code_is_opened_and_mailed_to_the_mailbox_only(
    world: World, capfd: pytest.CaptureFixture[str]
) -> None:
    """Decision 63: the code comes sealed for this service; it opens it, mails it once (even
    if the event comes twice) and nothing else carries it: no webhook, no log line."""
    partner_id = await world.partner("Collège Fernande Flagon")  # even one with an endpoint
    await world.endpoint(partner_id, "flagon")
    event = sealed_claim(partner_id, "58203716")
    assert "58203716" not in event.model_dump_json()
    event_id = await world.produce(event)
    await world.produce(event, event_id=event_id)  # redelivered: mailed once

    async def mailed() -> bool:
        return any(m["To"] == event.mailbox for m in world.inbox.messages)

    assert await wait_until(mailed)
    await asyncio.sleep(0.5)  # room for a second mail, which must not come
    [message] = [m for m in world.inbox.messages if m["To"] == event.mailbox]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert "58203716" in body.get_content()
    assert "58203716" not in message["Subject"]
    assert not any("58203716" in json.dumps(item, default=str) for item in world.receiver.received)
    captured = capfd.readouterr()
    assert "58203716" not in captured.out + captured.err


async def dead_letters_of(world: World, event_id: uuid.UUID) -> list[dict[str, bytes]]:
    records = await read_topic(
        world.bootstrap, "dlq.notifications.school-claims", at_least=1, timeout=60
    )
    return [
        {**dict(record.headers), "value": record.value or b""}
        for record in records
        if dict(record.headers).get("ce_id") == str(event_id).encode()
    ]


async def test_a_code_sealed_for_another_key_or_moved_to_another_mailbox_is_dead_lettered(
    world: World, capfd: pytest.CaptureFixture[str]
) -> None:
    """A code this service cannot open is no mail and no 5xx: its record goes to the dead
    letters with the reason (key ids, never a code), and no log line carries the code."""
    partner_id = uuid.uuid4()
    stranger = sealing.generate_private_pem()
    foreign = sealed_claim(partner_id, "31415926", private_pem=stranger)
    # A bus writer who copies a genuine sealed code into an event for its own mailbox.
    genuine = sealed_claim(partner_id, "27182818")
    redirected = genuine.model_copy(update={"mailbox": "attacker@example.org"})
    foreign_id = await world.produce(foreign)
    redirected_id = await world.produce(redirected)

    [dead_foreign] = await dead_letters_of(world, foreign_id)
    [dead_redirected] = await dead_letters_of(world, redirected_id)
    stranger_id = sealing.key_id(sealing.load_private(stranger).public_key())
    assert dead_foreign["dlq-error-class"] == b"maillage.common.sealing.Unopenable"
    assert stranger_id.encode() in dead_foreign["dlq-error-message"]
    assert b"does not hold" in dead_foreign["dlq-error-message"]
    assert dead_redirected["dlq-error-class"] == b"maillage.common.sealing.Unopenable"
    assert b"does not open" in dead_redirected["dlq-error-message"]
    assert not any(
        m["To"] in {foreign.mailbox, "attacker@example.org"} for m in world.inbox.messages
    )
    mails = await world.pool.fetchval(
        "SELECT count(*) FROM outgoing_mail WHERE dedupe_key = ANY($1::text[])",
        [str(foreign_id), str(redirected_id)],
    )
    assert mails == 0
    captured = capfd.readouterr()
    for code in ("31415926", "27182818"):
        assert code not in captured.out + captured.err
        assert code.encode() not in dead_foreign["value"] + dead_redirected["value"]
