"""E-mail against a real SMTP server (aiosmtpd on loopback) and a fresh PostgreSQL database.

The French templates of every event type render; a queued mail arrives with its French subject
and both a text/plain and a text/html part; an SMTP outage delays mail without losing or
doubling it; endpoint warnings go once per failure streak and the "disabled" mail commits with
the disabling.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import Envelope as SMTPEnvelope
from aiosmtpd.smtp import Session
from opentelemetry import trace

from maillage.cli.embedded import free_port
from maillage.common.catalog import catalog
from maillage.common.db import create_pool, migrate_service, transaction
from maillage.common.logging import configure_logging
from maillage.notifications import consumers, domain, mail, store
from maillage.notifications.endpoint_warnings import DisableWarningWorker
from maillage.notifications.mail import MailWorker, SmtpServer

MIGRATIONS = Path(store.__file__).parent / "migrations"
FROM = "Maillage <notifications@maillage.test>"


# --- the SMTP server -----------------------------------------------------------------------------


@dataclass
class Inbox:
    """What the SMTP server received; recipients in ``refuse`` get a permanent 550."""

    messages: list[EmailMessage] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self,
        server: SMTPProtocol,
        session: Session,
        envelope: SMTPEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTPProtocol, session: Session, envelope: SMTPEnvelope
    ) -> str:
        content = envelope.original_content or b""
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted"


class SmtpServerProcess:
    """aiosmtpd in its own thread on a fixed loopback port, startable and stoppable."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServerProcess]:
    server = SmtpServerProcess(free_port())
    yield server
    server.stop()


# --- the database ------------------------------------------------------------------------------


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate_service(database_url, MIGRATIONS)
    pool = await create_pool(database_url)
    yield pool
    await pool.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def worker(pool: asyncpg.Pool, port: int, clock: Clock | None = None) -> MailWorker:
    return MailWorker(
        pool,
        SmtpServer(host="127.0.0.1", port=port, from_address=FROM, timeout=5),
        clock=clock or Clock(),
    )


async def queue_confirmation(pool: asyncpg.Pool, to: str = "ada@example.org") -> uuid.UUID:
    async with transaction(pool) as connection:
        mail_id = await mail.queue(
            connection,
            to=to,
            template="email_confirmation",
            context={"token": "jeton-secret-123", "address": to},
            dedupe_key=f"confirmation:{to}",
        )
    assert mail_id is not None
    return mail_id


async def add_partner(
    pool: asyncpg.Pool, legal_name: str, *, address: str | None = None
) -> uuid.UUID:
    """A partner in the read model, with a confirmed e-mail channel when ``address`` is given."""
    partner_id = uuid.uuid4()
    async with transaction(pool) as connection:
        await connection.execute(
            "INSERT INTO partners (id, kind, legal_name, status, version)"
            " VALUES ($1, 'association', $2, 'verified', 1)",
            partner_id,
            legal_name,
        )
        if address is not None:
            await connection.execute(
                "INSERT INTO email_channels (id, partner_id, address, confirmed_at)"
                " VALUES ($1, $2, $3, now())",
                uuid.uuid4(),
                partner_id,
                address,
            )
    return partner_id


def parts(message: EmailMessage) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_content()
        for part in message.walk()
        if not part.is_multipart()
    }


# --- rendering ---------------------------------------------------------------------------------


def sample(name: str, annotation: str) -> Any:
    """A plausible value for an event field, so that every template renders from real data."""
    if "UUID" in annotation:
        return [str(uuid.uuid4())] if "tuple" in annotation else str(uuid.uuid4())
    special: dict[str, Any] = {
        "week_start": "2026-12-07",
        "reason": "school_year_end",
        "priority_class": "REP+",
        "school_year": "2026-2027",
        "status": "published",
    }
    if name in special:
        return special[name]
    if "bool" in annotation:
        return True
    if "float" in annotation:
        return 12.5
    if "int" in annotation:
        return 2
    if "tuple" in annotation:
        return ["sciences"]
    return f"{name} <b>&</b>"


@pytest.mark.parametrize("event_type", sorted(catalog.types_on(consumers.fanout.topics)))
def test_every_event_type_renders_in_french_with_its_partners_names(event_type: str) -> None:
    model = catalog.events[event_type].model
    data = model.model_validate(
        {name: sample(name, str(info.annotation)) for name, info in model.model_fields.items()}
    ).model_dump(mode="json")
    partner_ids = [
        value for name, value in data.items() if name.endswith("partner_id") and value is not None
    ]
    names = {
        partner_id: f"Partenaire <{index}> & Cie" for index, partner_id in enumerate(partner_ids)
    }
    rendered = mail.renderer.render(
        mail.event_template(event_type),
        {"event": data, "names": names, "recipient_id": partner_ids[0], "recipient": "Cie"},
    )
    assert rendered.subject
    assert "\n" not in rendered.subject
    assert "Bonjour" in rendered.text
    # The HTML part escapes what partners wrote; the text part shows it as it is.
    assert "<b>" not in rendered.html
    assert "Partenaire <" not in rendered.html
    assert "Partenaire &lt;" in rendered.html or "&lt;b&gt;" in rendered.html
    assert "<p" not in rendered.text
    assert "Partenaire <0> & Cie" in rendered.text + rendered.subject


def test_french_formats() -> None:
    assert mail.euros(47_500_000) == "475\u202f000,00\u202f€"
    assert mail.date_fr("2026-12-07") == "lundi 7 décembre 2026"
    assert mail.date_fr("2027-03-01") == "lundi 1er mars 2027"
    moment = datetime(2026, 12, 7, 13, 5, tzinfo=UTC)
    assert mail.datetime_fr(moment) == "lundi 7 décembre 2026 à 13 h 05 UTC"


# --- sending -----------------------------------------------------------------------------------


async def test_a_queued_mail_arrives_with_its_french_subject_and_both_parts(
    pool: asyncpg.Pool, smtp_server: SmtpServerProcess
) -> None:
    smtp_server.start()
    mail_id = await queue_confirmation(pool)

    assert await worker(pool, smtp_server.port).send_due() == 1

    [received] = smtp_server.inbox.messages
    assert received["Subject"] == "Confirmez votre adresse pour les notifications Maillage"
    assert received["To"] == "ada@example.org"
    assert received["From"] == FROM
    row = await pool.fetchrow("SELECT * FROM outgoing_mail WHERE id = $1", mail_id)
    assert received["Message-ID"] == row["message_id"]
    body = parts(received)
    assert set(body) == {"text/plain", "text/html"}
    assert "jeton-secret-123" in body["text/plain"]
    assert "<p" in body["text/html"]
    assert "jeton-secret-123" in body["text/html"]
    assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("sent", 1, None)
    assert row["sent_at"] is not None
    # Nothing is due any more.
    assert await worker(pool, smtp_server.port).send_due() == 0
    assert len(smtp_server.inbox.messages) == 1


async def test_a_mail_is_sent_in_the_trace_that_queued_it(
    pool: asyncpg.Pool, smtp_server: SmtpServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15 §4: the "mail sent" line carries the trace of what queued the mail."""
    configure_logging("notifications", fmt="json")
    smtp_server.start()
    with trace.get_tracer("test").start_as_current_span("the event's consumer") as span:
        await queue_confirmation(pool)
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert await worker(pool, smtp_server.port).send_due() == 1
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    [sent] = [line for line in lines if line["event"] == "mail sent"]
    assert sent["trace_id"] == trace_id
    assert sent["span_id"] not in (None, format(span.get_span_context().span_id, "016x"))


async def test_the_same_dedupe_key_and_recipient_is_queued_once(pool: asyncpg.Pool) -> None:
    await queue_confirmation(pool)
    async with transaction(pool) as connection:
        again = await mail.queue(
            connection,
            to="ada@example.org",
            template="email_confirmation",
            context={"token": "t", "address": "ada@example.org"},
            dedupe_key="confirmation:ada@example.org",
        )
    assert again is None
    assert await pool.fetchval("SELECT count(*) FROM outgoing_mail") == 1


async def test_a_queued_mail_rolls_back_with_its_transaction(pool: asyncpg.Pool) -> None:
    async def queue_then_fail() -> None:
        async with transaction(pool) as connection:
            await mail.queue(
                connection,
                to="ada@example.org",
                template="email_confirmation",
                context={"token": "t", "address": "ada@example.org"},
            )
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError, match="the change failed"):
        await queue_then_fail()
    assert await pool.fetchval("SELECT count(*) FROM outgoing_mail") == 0


async def test_smtp_down_then_up_delivers_exactly_once(
    pool: asyncpg.Pool, smtp_server: SmtpServerProcess
) -> None:
    mail_id = await queue_confirmation(pool)
    clock = Clock()  # after queueing: the mail is due now
    sender = worker(pool, smtp_server.port, clock)

    # Down: nothing listens on the port.
    assert await sender.send_due() == 1
    row = await pool.fetchrow("SELECT * FROM outgoing_mail WHERE id = $1", mail_id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"]
    assert row["next_attempt_at"] == clock.now + domain.MAIL_RETRY_FIRST
    # Not due before its backoff, even once the server is back.
    smtp_server.start()
    assert await sender.send_due() == 0

    clock.now += domain.MAIL_RETRY_FIRST
    assert await sender.send_due() == 1
    assert await sender.send_due() == 0
    clock.now += timedelta(days=1)
    assert await sender.send_due() == 0

    assert len(smtp_server.inbox.messages) == 1
    row = await pool.fetchrow("SELECT * FROM outgoing_mail WHERE id = $1", mail_id)
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_the_running_worker_sends_once_the_server_comes_back(
    pool: asyncpg.Pool, smtp_server: SmtpServerProcess
) -> None:
    sender = MailWorker(
        pool,
        SmtpServer(host="127.0.0.1", port=smtp_server.port, from_address=FROM, timeout=5),
        poll_interval=0.05,
        retry_first=timedelta(milliseconds=100),
        retry_cap=timedelta(milliseconds=200),
    )
    running = asyncio.create_task(sender.run())
    try:
        await queue_confirmation(pool, "un@example.org")
        await queue_confirmation(pool, "deux@example.org")

        async def attempted() -> bool:
            count = await pool.fetchval("SELECT count(*) FROM outgoing_mail WHERE attempts > 0")
            return bool(count == 2)

        assert await wait_for(attempted)
        smtp_server.start()

        async def all_sent() -> bool:
            return bool(await pool.fetchval("SELECT bool_and(status = 'sent') FROM outgoing_mail"))

        assert await wait_for(all_sent)
    finally:
        sender.stop()
        await asyncio.wait_for(running, 10)
    received = sorted(message["To"] for message in smtp_server.inbox.messages)
    assert received == ["deux@example.org", "un@example.org"]


async def test_a_recipient_refused_for_good_is_not_retried(
    pool: asyncpg.Pool, smtp_server: SmtpServerProcess
) -> None:
    smtp_server.inbox.refuse.add("nobody@example.org")
    smtp_server.start()
    refused = await queue_confirmation(pool, "nobody@example.org")
    accepted = await queue_confirmation(pool, "ada@example.org")

    assert await worker(pool, smtp_server.port).send_due() == 2

    statuses = dict(await pool.fetch("SELECT id, status FROM outgoing_mail"))
    assert statuses == {refused: "failed", accepted: "sent"}
    assert [message["To"] for message in smtp_server.inbox.messages] == ["ada@example.org"]


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return await predicate()


# --- endpoint health ---------------------------------------------------------------------------


async def failing_endpoint(
    pool: asyncpg.Pool, partner_id: uuid.UUID, first_failure_at: datetime
) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    async with transaction(pool) as connection:
        await connection.execute(
            "INSERT INTO webhook_endpoints (id, partner_id, url, first_failure_at)"
            " VALUES ($1, $2, 'https://hooks.example.org/maillage', $3)",
            endpoint_id,
            partner_id,
            first_failure_at,
        )
    return endpoint_id


async def test_the_disable_warning_goes_once_per_failure_streak(
    pool: asyncpg.Pool, smtp_server: SmtpServerProcess
) -> None:
    clock = Clock()
    partner_id = await add_partner(pool, "Association Les Cordées", address="tech@cordees.org")
    quiet = await add_partner(pool, "Sans Adresse")
    endpoint_id = await failing_endpoint(pool, partner_id, clock.now - timedelta(days=3))
    await failing_endpoint(pool, quiet, clock.now - timedelta(days=4, hours=1))
    sweeper = DisableWarningWorker(pool, clock=clock)  # disabled after 5 days, warned 1 day ahead

    assert await sweeper.sweep() == 1  # only the endpoint of the partner without a channel
    assert await pool.fetchval("SELECT count(*) FROM outgoing_mail") == 0

    clock.now += timedelta(days=1, hours=2)  # 4 days and 2 hours of failures
    assert await sweeper.sweep() == 1
    assert await sweeper.sweep() == 0  # once per streak
    clock.now += timedelta(hours=12)
    assert await sweeper.sweep() == 0

    # A success ends the streak; a new streak is due its own warning.
    await pool.execute(
        "UPDATE webhook_endpoints SET first_failure_at = $2 WHERE id = $1",
        endpoint_id,
        clock.now,
    )
    clock.now += timedelta(days=4, hours=1)
    assert await sweeper.sweep() == 1

    smtp_server.start()
    assert await worker(pool, smtp_server.port).send_due() == 2
    first, second = smtp_server.inbox.messages
    assert first["Subject"] == "Votre point de réception de webhooks sera bientôt désactivé"
    assert first["To"] == "tech@cordees.org"
    text = parts(first)["text/plain"]
    assert "https://hooks.example.org/maillage" in text
    assert "Association Les Cordées" in text
    assert set(parts(second)) == {"text/plain", "text/html"}


async def test_the_disabled_mail_commits_with_the_disabling_and_only_then(
    pool: asyncpg.Pool, smtp_server: SmtpServerProcess
) -> None:
    partner_id = await add_partner(pool, "Ingénieurs pour l'école", address="ops@ipe.example")
    endpoint_id = await failing_endpoint(pool, partner_id, datetime.now(UTC) - timedelta(days=5))

    # Rolled back: neither the disabling nor its mail happened.
    async def disable_then_crash() -> None:
        async with transaction(pool) as connection:
            await store.disable_endpoint(
                connection, endpoint_id, reason="the receiver answered 410 Gone", notify=True
            )
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        await disable_then_crash()
    assert await pool.fetchval("SELECT enabled FROM webhook_endpoints WHERE id = $1", endpoint_id)
    assert await pool.fetchval("SELECT count(*) FROM outgoing_mail") == 0

    async with transaction(pool) as connection:
        await store.disable_endpoint(
            connection, endpoint_id, reason="the receiver answered 410 Gone", notify=True
        )
    # Disabling what is already disabled, or at the partner's own request, sends nothing more.
    async with transaction(pool) as connection:
        await store.disable_endpoint(connection, endpoint_id, reason="again", notify=True)
    other = await failing_endpoint(pool, partner_id, datetime.now(UTC))
    async with transaction(pool) as connection:
        await store.disable_endpoint(connection, other, reason="by its partner", notify=False)

    smtp_server.start()
    assert await worker(pool, smtp_server.port).send_due() == 1
    [received] = smtp_server.inbox.messages
    assert received["Subject"] == "Votre point de réception de webhooks est désactivé"
    text = parts(received)["text/plain"]
    assert "410 Gone" in text
    assert "Ingénieurs pour l'école" in text
    html = parts(received)["text/html"]
    assert "Ingénieurs pour l&#39;école" in html
