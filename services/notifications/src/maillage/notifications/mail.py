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

import re
import textwrap
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import jinja2

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
                euros=euros, date_fr=date_fr, km=kilometres, paragraphs=paragraphs
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
    queued: uuid.UUID | None = await connection.fetchval(
        """
        INSERT INTO outgoing_mail (id, partner_id, recipient, template, subject, text_body,
                                   html_body, message_id, dedupe_key, next_attempt_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
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
    )
    return queued
