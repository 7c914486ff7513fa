"""E-mail: French templates rendered when queued, a pending-mail table, and the SMTP worker.

:func:`queue` renders a template (subject, plain text, HTML) and inserts the mail into
``outgoing_mail`` in the caller's transaction: the mail exists exactly when the change that
promised it commits. :class:`MailWorker` claims due mails (``FOR UPDATE SKIP LOCKED`` plus a
lease, like webhook deliveries), sends them with aiosmtplib and marks them sent; while the SMTP
server is down it retries with backoff, so an outage delays mail and loses none.

Templates live in ``templates/``: one ``<name>.jinja`` per mail, defining the blocks ``subject``,
``body`` (paragraphs separated by blank lines), and optionally ``link`` and ``link_label``; it
extends ``layout`` and is rendered twice, into ``layout.html`` by an autoescaping environment and
into ``layout.txt`` by a plain one. Event mails are ``events/<type without fr.maillage.>.jinja``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import textwrap
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal

import aiosmtplib
import asyncpg
import jinja2
from opentelemetry import metrics, propagate, trace

from maillage.common.db import CONNECTION_ERRORS, transaction
from maillage.common.logging import get_logger
from maillage.notifications import domain

tracer = trace.get_tracer("maillage.notifications.mail")

log = get_logger(__name__)
# outcome: sent, retry (backoff, the server unavailable or refusing for now), failed (for good).
_mail_attempts = metrics.get_meter(__name__).create_counter(
    "maillage.mail.attempts", unit="{mail}", description="E-mail sending attempts, by outcome"
)

TEMPLATES = Path(__file__).parent / "templates"
EVENT_PREFIX = "fr.maillage."
# The right-hand side of every Message-ID: the mail's own id makes the left-hand side unique.
MESSAGE_ID_DOMAIN = "notifications.maillage"
DEFAULT_PUBLIC_BASE_URL = "http://127.0.0.1:8005"
TEXT_WIDTH = 72

_MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)
_WEEKDAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
NARROW_NBSP = "\u202f"  # the French thousands separator, and before « € »
_SPACES = re.compile(r"[ \t\r\n]+")


def event_template(event_type: str) -> str:
    """The template of an event type: ``events/cordees.pairing.established.v1``."""
    return "events/" + event_type.removeprefix(EVENT_PREFIX)


# --- formatting filters (French conventions) ---------------------------------------------------


def euros(cents: int) -> str:
    """12345678 → ``123 456,78 €`` (narrow no-break spaces, as French typography has it)."""
    whole, rest = divmod(abs(int(cents)), 100)
    grouped = f"{whole:,}".replace(",", NARROW_NBSP)
    sign = "-" if cents < 0 else ""
    return f"{sign}{grouped},{rest:02d}{NARROW_NBSP}€"


def date_fr(value: str | date) -> str:
    """``2026-03-02`` → ``lundi 2 mars 2026``."""
    day = date.fromisoformat(value[:10]) if isinstance(value, str) else value
    number = "1er" if day.day == 1 else str(day.day)
    return f"{_WEEKDAYS[day.weekday()]} {number} {_MONTHS[day.month - 1]} {day.year}"


def datetime_fr(moment: datetime) -> str:
    """An aware datetime → ``lundi 7 décembre 2026 à 14 h 05 UTC`` (UTC needs no zone data)."""
    utc = moment.astimezone(UTC)
    return f"{date_fr(utc.date())} à {utc.hour} h {utc.minute:02d} UTC"


def kilometres(value: float) -> str:
    """``12.345`` → ``12,3 km``."""
    return f"{value:.1f}".replace(".", ",") + f"{NARROW_NBSP}km"


def paragraphs(value: str, width: int | None = None) -> list[str]:
    """A block's text as paragraphs (blank lines separate them; line breaks inside are spaces).

    Works on ``markupsafe.Markup`` too, keeping it Markup, so escaped HTML is not escaped twice.
    ``width`` wraps each paragraph for the plain-text part.
    """
    joiner = type(value)(" ")
    found: list[str] = []
    current: list[str] = []
    for line in [*value.splitlines(), ""]:
        stripped = line.strip()
        if stripped:
            current.append(stripped)
        elif current:
            found.append(joiner.join(current))
            current = []
    if width is not None:
        found = [textwrap.fill(paragraph, width, break_on_hyphens=False) for paragraph in found]
    return found


@jinja2.pass_context
def partner_name(context: jinja2.runtime.Context, partner_id: object) -> str:
    """The legal name of a partner from the ``names`` the caller passed, or a neutral phrase."""
    names: Mapping[str, str] = context.get("names") or {}
    return names.get(str(partner_id), "un partenaire de Maillage")


# --- rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


class Renderer:
    """The two Jinja environments over ``templates/``: HTML autoescaped, plain text not."""

    def __init__(
        self, folder: Path = TEMPLATES, *, public_base_url: str = DEFAULT_PUBLIC_BASE_URL
    ) -> None:
        self.public_base_url = public_base_url
        loader = jinja2.FileSystemLoader(folder)
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": jinja2.StrictUndefined,
            "trim_blocks": True,
            "lstrip_blocks": True,
            "keep_trailing_newline": True,
        }
        self._html = jinja2.Environment(autoescape=True, **common)
        self._text = jinja2.Environment(autoescape=False, **common)  # noqa: S701  # text/plain is not HTML
        for environment in (self._html, self._text):
            environment.filters.update(
                euros=euros,
                date_fr=date_fr,
                datetime_fr=datetime_fr,
                km=kilometres,
                paragraphs=paragraphs,
            )
            environment.globals.update(partner=partner_name, url=self.url)

    def url(self, path: str) -> str:
        """An absolute link to this service's public address (links in mail must be absolute)."""
        return self.public_base_url.rstrip("/") + "/" + path.lstrip("/")

    def has(self, template: str) -> bool:
        return f"{template}.jinja" in self._text.list_templates(extensions=["jinja"])

    def render(self, template: str, context: Mapping[str, Any]) -> RenderedMail:
        """Subject, text and HTML of one mail; a missing template or variable raises."""
        name = f"{template}.jinja"
        text_template = self._text.get_template(name)
        subject = "".join(text_template.blocks["subject"](text_template.new_context(dict(context))))
        # Only ASCII whitespace: the no-break spaces of French typography stay.
        subject = _SPACES.sub(" ", subject).strip()
        if not subject:
            raise ValueError(f"template {template!r} has an empty subject")
        text = text_template.render({**context, "layout": "layout.txt", "width": TEXT_WIDTH})
        html = self._html.get_template(name).render({**context, "layout": "layout.html"})
        return RenderedMail(subject=subject, text=text, html=html)


# One renderer per process: the templates are read once; the app sets the public base URL.
renderer = Renderer()


def configure(*, public_base_url: str) -> None:
    """Where links in mail point (the service's public address), from the settings."""
    renderer.public_base_url = public_base_url


# --- queueing ----------------------------------------------------------------------------------


async def queue(
    connection: asyncpg.Connection,
    *,
    to: str,
    template: str,
    context: Mapping[str, Any],
    partner_id: uuid.UUID | None = None,
    dedupe_key: str | None = None,
) -> uuid.UUID | None:
    """Render ``template`` for ``to`` and queue it, due at once, in the caller's transaction.

    Returns the mail's id, or None when a mail with the same ``dedupe_key`` was already queued
    for this recipient (a redelivered event, a repeated warning): nothing is queued twice.
    """
    rendered = renderer.render(template, context)
    mail_id = uuid.uuid4()
    trace_context: dict[str, str] = {}
    propagate.inject(trace_context)  # sending continues the trace that queued it
    queued: uuid.UUID | None = await connection.fetchval(
        """
        INSERT INTO outgoing_mail (id, partner_id, recipient, template, subject, text_body,
                                   html_body, message_id, dedupe_key, next_attempt_at,
                                   trace_context)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10::text::jsonb)
        ON CONFLICT (dedupe_key, recipient) DO NOTHING
        RETURNING id
        """,
        mail_id,
        partner_id,
        to,
        template,
        rendered.subject,
        rendered.text,
        rendered.html,
        f"<{mail_id}@{MESSAGE_ID_DOMAIN}>",
        dedupe_key,
        json.dumps(trace_context),
    )
    return queued


# --- sending -----------------------------------------------------------------------------------

TlsMode = Literal["none", "starttls", "tls"]
# A claimed mail is the worker's for this long: far more than sending a batch takes.
DEFAULT_LEASE = timedelta(minutes=2)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SmtpServer:
    """Where and how mail is sent. ``tls``: ``none`` (a local relay, Mailpit), ``starttls``
    (upgrade on port 587) or ``tls`` (implicit TLS on port 465)."""

    host: str
    port: int
    from_address: str
    tls: TlsMode = "none"
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class PendingMail:
    id: uuid.UUID
    recipient: str
    subject: str
    text_body: str
    html_body: str
    message_id: str
    attempts: int
    trace_context: dict[str, str] = field(default_factory=dict)  # of what queued it


@contextlib.contextmanager
def _sending(pending: PendingMail) -> Iterator[None]:
    """A CLIENT span per mail sent, in the trace that queued it: the send's log lines carry its
    trace_id and span_id."""
    with tracer.start_as_current_span(
        "mail send",
        context=propagate.extract(pending.trace_context),
        kind=trace.SpanKind.CLIENT,
        attributes={
            "maillage.mail.id": str(pending.id),
            "maillage.mail.attempt": pending.attempts + 1,
        },
    ):
        yield


def build_message(pending: PendingMail, from_address: str, now: datetime) -> EmailMessage:
    """The MIME message: text/plain first, text/html as the richer alternative."""
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = pending.recipient
    message["Subject"] = pending.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = pending.message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies, please
    message.set_content(pending.text_body)
    message.add_alternative(pending.html_body, subtype="html")
    return message


def _refused_for_good(error: aiosmtplib.SMTPException) -> bool:
    """Whether the server refused *this* mail permanently (5xx for its recipient or content).

    Everything else (server down, 4xx, authentication or sender refused: configuration) is
    retried: the mail is not at fault.
    """
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return all(refused.code >= 500 for refused in error.recipients)
    return isinstance(error, aiosmtplib.SMTPDataError) and error.code >= 500


class MailWorker:
    """Sends the due mails of ``outgoing_mail`` over SMTP; ``run()`` until ``stop()``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        smtp: SmtpServer,
        *,
        batch_size: int = 20,
        poll_interval: float = 1.0,
        lease: timedelta = DEFAULT_LEASE,
        retry_first: timedelta = domain.MAIL_RETRY_FIRST,
        retry_cap: timedelta = domain.MAIL_RETRY_CAP,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.pool = pool
        self.smtp = smtp
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease = lease
        self.retry_first = retry_first
        self.retry_cap = retry_cap
        self.clock = clock
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Send due mail until :meth:`stop`; a failing database or SMTP server only waits."""
        self._stopping.clear()
        while not self._stopping.is_set():
            sent = 0
            try:
                sent = await self.send_due()
            except CONNECTION_ERRORS as exc:
                log.warning("sending mail failed", error=str(exc))
            if sent == self.batch_size:
                continue  # more may be due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.poll_interval)

    async def send_due(self) -> int:
        """One pass: claim up to a batch of due mails and send them on one connection.

        Returns how many were claimed. A mail is marked sent as soon as the server accepts it;
        if the server goes away, the rest of the batch waits its backoff.
        """
        claimed = await self._claim()
        if not claimed:
            return 0
        remaining = list(claimed)
        try:
            async with self._client() as client:
                while remaining:
                    with _sending(remaining[0]):
                        await self._send_one(client, remaining)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            log.warning("SMTP server unavailable", error=f"{type(exc).__name__}: {exc}")
            for pending in remaining:
                await self._failed(pending, exc, permanent=False)
        return len(claimed)

    async def _send_one(self, client: aiosmtplib.SMTP, remaining: list[PendingMail]) -> None:
        """Send the first of ``remaining`` and take it off; an SMTP outage raises and leaves it."""
        pending = remaining[0]
        try:
            await client.send_message(build_message(pending, self.smtp.from_address, self.clock()))
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPDataError) as exc:
            remaining.pop(0)
            await self._failed(pending, exc, permanent=_refused_for_good(exc))
            return
        remaining.pop(0)
        await self._sent(pending)

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.smtp.host,
            port=self.smtp.port,
            use_tls=self.smtp.tls == "tls",
            start_tls=self.smtp.tls == "starttls",
            username=self.smtp.username,
            password=self.smtp.password,
            timeout=self.smtp.timeout,
        )

    async def _claim(self) -> list[PendingMail]:
        now = self.clock()
        async with transaction(self.pool) as connection:
            rows = await connection.fetch(
                """
                WITH due AS (
                    SELECT id FROM outgoing_mail
                     WHERE status = 'pending' AND next_attempt_at <= $1
                     ORDER BY next_attempt_at
                     LIMIT $2
                       FOR UPDATE SKIP LOCKED
                )
                UPDATE outgoing_mail m SET next_attempt_at = $1 + $3::interval
                  FROM due WHERE m.id = due.id
                RETURNING m.id, m.recipient, m.subject, m.text_body, m.html_body, m.message_id,
                          m.attempts, m.trace_context::text AS trace_context
                """,
                now,
                self.batch_size,
                self.lease,
            )
        return [
            PendingMail(
                id=row["id"],
                recipient=row["recipient"],
                subject=row["subject"],
                text_body=row["text_body"],
                html_body=row["html_body"],
                message_id=row["message_id"],
                attempts=row["attempts"],
                trace_context=json.loads(row["trace_context"]),
            )
            for row in rows
        ]

    async def _sent(self, pending: PendingMail) -> None:
        async with transaction(self.pool) as connection:
            await connection.execute(
                """
                UPDATE outgoing_mail
                   SET status = 'sent', sent_at = $2, attempts = attempts + 1,
                       next_attempt_at = NULL, last_error = NULL
                 WHERE id = $1
                """,
                pending.id,
                self.clock(),
            )
        _mail_attempts.add(1, {"outcome": "sent"})
        log.info("mail sent", mail_id=str(pending.id), attempts=pending.attempts + 1)

    async def _failed(self, pending: PendingMail, error: BaseException, *, permanent: bool) -> None:
        attempts = pending.attempts + 1
        next_at = None
        if not permanent:
            delay = domain.mail_retry_delay(attempts, first=self.retry_first, cap=self.retry_cap)
            next_at = self.clock() + delay
        async with transaction(self.pool) as connection:
            await connection.execute(
                """
                UPDATE outgoing_mail
                   SET status = $2, attempts = $3, next_attempt_at = $4, last_error = $5
                 WHERE id = $1
                """,
                pending.id,
                "failed" if permanent else "pending",
                attempts,
                next_at,
                f"{type(error).__name__}: {error}"[:2000],
            )
        _mail_attempts.add(1, {"outcome": "failed" if permanent else "retry"})
        log.warning(
            "mail not sent",
            mail_id=str(pending.id),
            attempts=attempts,
            permanent=permanent,
            next_attempt_at=next_at.isoformat() if next_at else None,
        )
