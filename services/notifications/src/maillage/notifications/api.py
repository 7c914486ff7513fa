"""HTTP routes of the notifications service: what a partner subscribes to, and its delivery log.

A partner (role ``partner`` and a ``partner_id`` claim) owns its webhook endpoints, e-mail
channels, per-event-type preferences and settings, and sees the deliveries to its endpoints;
another partner's resource answers 404, as if it did not exist. Operators read everything,
across partners, and change nothing; any other caller gets 403.

Webhook URLs go through the SSRF policy (:mod:`ssrf`) when they are subscribed or changed, so a
partner learns at once, with a problem document naming the reason, that a URL will never be
called. Signing secrets are shown once, when created or rotated, and stored sealed
(:mod:`secretbox`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from maillage.common import idempotency, pagination
from maillage.common.auth import Caller, CurrentCaller
from maillage.common.catalog import catalog
from maillage.common.db import transaction
from maillage.common.http import Pool
from maillage.common.kinds import LINE_CHECK, Bool, Float, LineOrNone
from maillage.common.problems import Problem
from maillage.common.ratelimit import RATE_LIMITED_RESPONSE, rate_limited
from maillage.notifications import domain, mail, signing, ssrf, store
from maillage.notifications.secretbox import SecretBox

router = APIRouter()

ENDPOINTS_TAG = "webhook endpoints"
CHANNELS_TAG = "e-mail channels"
PREFERENCES_TAG = "preferences"
LOG_TAG = "delivery log"

OPERATORS = frozenset({"operator", "admin"})
# Resolving a webhook host at subscription time: the partner waits for it.
RESOLVE_TIMEOUT_S = 5.0
MAX_ROTATION_OVERLAP_HOURS = 7 * 24
# A confirmation e-mail is not sent again to the same address sooner than this.
RESEND_CONFIRMATION_AFTER = timedelta(minutes=1)
CONFIRMATION_TEMPLATE = "email_confirmation"

# PostgreSQL text holds every character but NUL: free text must not contain it.
_TEXT = r"^[^\x00]*$"
# An address every mail server accepts: an ASCII local part (RFC 5322 atext and dots) and a
# domain of at least two DNS labels.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$"
_EVENT_TYPES = "Event types of the catalog (`fr.maillage.<service>.<entity>.<verb>.v<N>`)"


def _now() -> datetime:
    return datetime.now(UTC)


def _omittable(schema: dict[str, Any]) -> None:
    """A field that may be left out but never be null: no documented default."""
    schema.pop("default", None)


# --- models ------------------------------------------------------------------------------------

EventType = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=_TEXT,
        examples=["fr.maillage.funding.tranche.approved.v1"],
    ),
    LINE_CHECK,
]


class NewWebhookEndpoint(BaseModel):
    """A webhook endpoint to subscribe."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        min_length=1,
        max_length=ssrf.MAX_URL_LENGTH,
        examples=["https://hooks.example.org/maillage"],
        description="Where deliveries are POSTed: https, a public host, no user information",
    )
    event_types: list[EventType] = Field(
        default_factory=list,
        max_length=len(catalog.events),
        description=f"{_EVENT_TYPES} to receive; empty (the default): every type",
    )
    description: LineOrNone = Field(
        default=None, max_length=500, pattern=_TEXT, examples=["ERP de production"]
    )


class WebhookEndpointChanges(BaseModel):
    """What changes on an endpoint; a field left out stays as it is (null clears the
    description)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        default=None,
        min_length=1,
        max_length=ssrf.MAX_URL_LENGTH,
        description="Checked again as when subscribing",
        json_schema_extra=_omittable,
    )
    event_types: list[EventType] = Field(
        default=None,
        max_length=len(catalog.events),
        description=f"{_EVENT_TYPES}; empty: every type",
        json_schema_extra=_omittable,
    )
    description: LineOrNone = Field(default=None, max_length=500, pattern=_TEXT)


class WebhookEndpoint(BaseModel):
    """A webhook endpoint, without its secret."""

    id: uuid.UUID
    partner_id: uuid.UUID
    url: str
    event_types: list[str] = Field(description="Empty: every type")
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why it is disabled (410 Gone, failing for days, by its partner)"
    )
    failing_since: datetime | None = Field(
        description="First failed attempt since the last success; null while healthy"
    )
    previous_secret_expires_at: datetime | None = Field(
        description="During a rotation: until when the previous secret still signs"
    )
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: str = Field(
        description="The signing secret (Standard Webhooks, `whsec_`): shown only in this "
        "answer; store it now",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookEndpointPage(BaseModel):
    items: list[WebhookEndpoint]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_hours: Float = Field(
        default=signing.DEFAULT_ROTATION_OVERLAP.total_seconds() / 3600,
        ge=0,
        le=MAX_ROTATION_OVERLAP_HOURS,
        description="How long the previous secret keeps signing beside the new one; 0 retires "
        "it at once (a leaked secret)",
    )


class NewEmailChannel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(max_length=254, pattern=_EMAIL, examples=["notifications@example.org"])


class EmailChannel(BaseModel):
    """An address that receives notification e-mail once confirmed."""

    id: uuid.UUID
    partner_id: uuid.UUID
    address: str
    status: Literal["pending", "confirmed"]
    confirmed_at: datetime | None
    confirmation_expires_at: datetime | None = Field(
        description="While pending: until when the token sent to the address confirms it"
    )
    created_at: datetime


class EmailChannelPage(BaseModel):
    items: list[EmailChannel]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class Confirmation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(
        min_length=16,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The code in the confirmation e-mail",
    )


class Preference(BaseModel):
    event_type: str
    description: str = Field(description="What the event tells the partner, in French")
    webhook: bool = Field(description="Delivered to the partner's webhook endpoints")
    email: bool = Field(description="Sent to the partner's confirmed e-mail channels")


class PreferenceChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook: Bool
    email: Bool


class PartnerSettings(BaseModel):
    stage_offers_within_km: Float | None = Field(
        gt=0,
        le=200,
        description="Schools: hear of new stage de 3e offers within this distance (km); null: none",
        examples=[15],
    )


class PartnerSettingsRead(PartnerSettings):
    updated_at: datetime | None = Field(description="Null until first set")


DeliveryStatus = Literal["pending", "delivered", "failed", "disabled"]


class Delivery(BaseModel):
    """One event queued for one endpoint, and where it stands."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    partner_id: uuid.UUID
    event_id: uuid.UUID = Field(description="The `webhook-id` header: the same on every attempt")
    event_type: str
    status: DeliveryStatus = Field(
        description="pending (an attempt is due), delivered, failed (retries exhausted), "
        "disabled (stopped: its endpoint was disabled)"
    )
    attempts: int
    last_status_code: int | None = Field(description="The receiver's last answer, if any")
    last_latency_ms: int | None = Field(description="How long the last attempt took")
    last_attempt_at: datetime | None
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="While pending: when it is due")
    created_at: datetime
    delivered_at: datetime | None


class Attempt(BaseModel):
    number: int
    started_at: datetime
    duration_ms: int
    status_code: int | None = Field(description="Null when no answer came (refused, timeout)")
    error: str | None


class DeliveryDetail(Delivery):
    payload: dict[str, Any] = Field(
        description="The body as signed and sent: {type, timestamp, data}"
    )
    attempt_log: list[Attempt] = Field(description="Every attempt, oldest first")


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class Recovery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: AwareDatetime = Field(
        description="Deliveries created since this time (with its offset) are sent again",
        examples=["2026-03-01T00:00:00Z"],
    )


class Recovered(BaseModel):
    queued: int = Field(description="How many deliveries are due again")


# --- documented answers ------------------------------------------------------------------------

Responses = dict[int | str, dict[str, Any]]

_FORBIDDEN: Responses = {403: {"description": "Not a partner (or an operator, for reading)"}}
_READ_ONLY: Responses = {403: {"description": "Not a partner: operators read, partners change"}}
_NO_ENDPOINT: Responses = {404: {"description": "No such webhook endpoint of yours"}}
_NO_CHANNEL: Responses = {404: {"description": "No such e-mail channel of yours"}}
_NO_DELIVERY: Responses = {404: {"description": "No such delivery to your endpoints"}}
_BAD_CURSOR: Responses = {400: {"description": "Invalid cursor"}}
_URL_REFUSED: Responses = {
    422: {
        "description": "Invalid body, unknown event type, or a URL the SSRF policy refuses "
        "(code `webhook_url_…`, the reason in `detail`)"
    }
}
_IDEMPOTENT: dict[str, Any] = {"parameters": [idempotency.OPENAPI_PARAMETER]}

# --- callers -----------------------------------------------------------------------------------


def _own_partner(caller: Caller) -> uuid.UUID:
    """The partner a caller acts for: only partners subscribe and change subscriptions."""
    if "partner" not in caller.roles or caller.partner_id is None:
        raise Problem(
            403,
            "forbidden",
            "Accès refusé",
            detail="Les notifications se gèrent au nom d'un partenaire (rôle partner, avec son "
            "partner_id).",
        )
    try:
        return uuid.UUID(caller.partner_id)
    except ValueError as error:
        raise Problem(
            403,
            "forbidden",
            "Accès refusé",
            detail="Le partner_id du jeton n'est pas un identifiant de partenaire.",
        ) from error


def _readable(caller: Caller, partner_id: uuid.UUID | None = None) -> uuid.UUID | None:
    """Whose resources the caller reads: an operator everyone's (or ``partner_id``'s, when
    given), a partner its own only."""
    if caller.roles & OPERATORS:
        return partner_id
    own = _own_partner(caller)
    if partner_id is not None and partner_id != own:
        raise Problem(
            403,
            "forbidden",
            "Accès refusé",
            detail="Un partenaire ne lit que ses propres notifications.",
        )
    return own


def _one_partner(caller: Caller, partner_id: uuid.UUID | None) -> uuid.UUID:
    """The one partner whose preferences or settings are read: operators must name it."""
    scope = _readable(caller, partner_id)
    if scope is None:
        raise Problem(
            422,
            "partner_id_required",
            "Partenaire à préciser",
            detail="Un opérateur lit les préférences d'un partenaire : ajoutez ?partner_id=.",
        )
    return scope


PartnerFilter = Annotated[
    uuid.UUID | None, Query(description="Operators: only this partner's (partners: their own)")
]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=200, description="The previous page's next_cursor")]


# --- helpers -----------------------------------------------------------------------------------


def _settings(request: Request) -> Any:
    return request.app.state.settings


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box
    return box


def _check_event_types(event_types: Sequence[str], field: str = "event_types") -> list[str]:
    """The known types, deduplicated in order; 422 naming each unknown one."""
    unknown = [
        {
            "in": "body",
            "pointer": f"#/{field}/{index}",
            "detail": f"{event_type!r} n'est pas un type d'événement du catalogue.",
            "type": "unknown_event_type",
        }
        for index, event_type in enumerate(event_types)
        if event_type not in catalog.events
    ]
    if unknown:
        raise Problem(
            422,
            "unknown_event_type",
            "Type d'événement inconnu",
            detail=f"{len(unknown)} type{'s' if len(unknown) > 1 else ''} d'événement hors du "
            "catalogue ; GET /preferences les liste tous.",
            errors=unknown,
        )
    return list(dict.fromkeys(event_types))


async def _checked_url(request: Request, url: str) -> str:
    """The URL as stored (normalised), once the SSRF policy accepts it and its host resolves to
    allowed addresses; a refusal is a 422 whose code and detail say why."""
    settings = _settings(request)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            parsed, _ = await ssrf.check_and_resolve(
                url,
                allow_http=settings.webhook_allow_http,
                allowed_hosts=settings.webhook_allowed_hosts,
                resolver=request.app.state.webhook_resolver,
            )
    except TimeoutError:
        refusal = ssrf.UnsafeUrl(
            ssrf.HOST_UNRESOLVABLE,
            f"Le nom d'hôte ne s'est pas résolu en {RESOLVE_TIMEOUT_S:g} s.",
        )
    except ssrf.UnsafeUrl as error:
        refusal = error
    else:
        return parsed.url
    raise Problem(
        422,
        refusal.code,
        "URL de webhook refusée",
        detail=refusal.message,
        errors=[
            {"in": "body", "pointer": "#/url", "detail": refusal.message, "type": refusal.code}
        ],
    )


def _endpoint_not_found(endpoint_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        "webhook_endpoint_not_found",
        "Point de réception introuvable",
        detail=f"Vous n'avez pas de point de réception de webhooks {endpoint_id}.",
    )


async def _own_endpoint(
    connection: asyncpg.Connection, endpoint_id: uuid.UUID, partner_id: uuid.UUID, now: datetime
) -> dict[str, Any]:
    """The caller's endpoint, locked for the transaction (404 when it is another's). Locking
    the endpoint before its deliveries is the order the delivery worker takes them too."""
    endpoint = await store.find_endpoint(
        connection, endpoint_id, partner_id=partner_id, now=now, for_update=True
    )
    if endpoint is None:
        raise _endpoint_not_found(endpoint_id)
    return endpoint


def _public(endpoint: dict[str, Any]) -> dict[str, Any]:
    return WebhookEndpoint.model_validate(endpoint).model_dump(mode="json")


# --- webhook endpoints -------------------------------------------------------------------------


@router.post(
    "/webhook-endpoints",
    status_code=201,
    response_model=WebhookEndpointWithSecret,
    tags=[ENDPOINTS_TAG],
    summary="Subscribe a webhook endpoint (its signing secret is shown once)",
    openapi_extra=_IDEMPOTENT,
    responses={
        400: {"description": "Invalid Idempotency-Key"},
        **_READ_ONLY,
        409: {
            "description": "Too many endpoints (`webhook_endpoint_limit`), or the "
            "Idempotency-Key was used for another request"
        },
        **_URL_REFUSED,
    },
)
async def create_webhook_endpoint(
    body: NewWebhookEndpoint, request: Request, caller: CurrentCaller, pool: Pool
) -> Any:
    """Deliveries to the endpoint are signed per Standard Webhooks (`webhook-id`,
    `webhook-timestamp`, `webhook-signature`) with the `whsec_` secret of this answer, which is
    never shown again: a lost secret is replaced by rotating it. The URL is refused unless it is
    https on a host that resolves only to public addresses. A retry with the same
    `Idempotency-Key` within 24 hours gets the same answer, secret included."""
    partner_id = _own_partner(caller)
    box = _box(request)
    claimed = await idempotency.claim(
        pool, request, f"partner:{partner_id}", body.model_dump(mode="json")
    )
    if isinstance(claimed, JSONResponse):
        return _replay_with_secret(claimed, box)
    try:
        return await _create_webhook_endpoint(body, request, partner_id, pool, box, claimed)
    except BaseException:
        await idempotency.release(pool, claimed)
        raise


async def _create_webhook_endpoint(
    body: NewWebhookEndpoint,
    request: Request,
    partner_id: uuid.UUID,
    pool: asyncpg.Pool,
    box: SecretBox,
    claimed: idempotency.IdempotencyKey | None,
) -> JSONResponse:
    event_types = _check_event_types(body.event_types)
    url = await _checked_url(request, body.url)
    limit = _settings(request).webhook_max_endpoints_per_partner
    endpoint_id, secret, now = uuid.uuid4(), signing.new_secret(), _now()
    sealed = box.seal(secret, endpoint_id)
    async with transaction(pool) as connection:
        await store.lock_partner_subscriptions(connection, partner_id)
        if await store.count_endpoints(connection, partner_id) >= limit:
            raise Problem(
                409,
                "webhook_endpoint_limit",
                "Trop de points de réception",
                detail=f"Un partenaire a au plus {limit} points de réception de webhooks ; "
                "supprimez-en un d'abord.",
            )
        await store.create_endpoint(
            connection,
            endpoint_id=endpoint_id,
            partner_id=partner_id,
            url=url,
            sealed_secret=sealed,
            event_types=event_types,
            description=body.description,
        )
        endpoint = _public(await _own_endpoint(connection, endpoint_id, partner_id, now))
        # The remembered answer keeps the secret sealed: idempotency rows are not in clear either.
        sealed_text = base64.b64encode(sealed).decode()
        await idempotency.remember(connection, claimed, 201, {**endpoint, "sealed": sealed_text})
    return JSONResponse({**endpoint, "secret": secret}, status_code=201)


def _replay_with_secret(replay: JSONResponse, box: SecretBox) -> JSONResponse:
    """A remembered creation, its secret unsealed again for the same partner's retry."""
    body = json.loads(bytes(replay.body))
    sealed = base64.b64decode(body.pop("sealed"))
    body["secret"] = box.open(sealed, uuid.UUID(body["id"]))
    return JSONResponse(
        body, status_code=replay.status_code, headers={"Idempotent-Replayed": "true"}
    )


@router.get(
    "/webhook-endpoints",
    response_model=WebhookEndpointPage,
    tags=[ENDPOINTS_TAG],
    summary="Your webhook endpoints, oldest first (operators: everyone's)",
    responses={**_BAD_CURSOR, **_FORBIDDEN},
)
async def list_webhook_endpoints(
    caller: CurrentCaller,
    pool: Pool,
    partner_id: PartnerFilter = None,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    scope = _readable(caller, partner_id)
    async with pool.acquire() as connection:
        rows = await store.list_endpoints(
            connection,
            partner_id=scope,
            after=pagination.decode_cursor(cursor),
            limit=limit + 1,
            now=_now(),
        )
    return pagination.page(rows, limit)


@router.get(
    "/webhook-endpoints/{endpoint_id}",
    response_model=WebhookEndpoint,
    tags=[ENDPOINTS_TAG],
    summary="One webhook endpoint (never its secret)",
    responses={**_FORBIDDEN, **_NO_ENDPOINT},
)
async def get_webhook_endpoint(
    endpoint_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with pool.acquire() as connection:
        endpoint = await store.find_endpoint(
            connection, endpoint_id, partner_id=_readable(caller), now=_now()
        )
    if endpoint is None:
        raise _endpoint_not_found(endpoint_id)
    return endpoint


@router.patch(
    "/webhook-endpoints/{endpoint_id}",
    response_model=WebhookEndpoint,
    tags=[ENDPOINTS_TAG],
    summary="Change an endpoint's URL, event types or description",
    responses={**_READ_ONLY, **_NO_ENDPOINT, **_URL_REFUSED},
)
async def change_webhook_endpoint(
    endpoint_id: uuid.UUID,
    changes: WebhookEndpointChanges,
    request: Request,
    caller: CurrentCaller,
    pool: Pool,
) -> dict[str, Any]:
    """A new URL is checked as at subscription, and starts a new health record (the failure
    streak of the old URL is forgotten)."""
    partner_id = _own_partner(caller)
    values = changes.model_dump(exclude_unset=True)
    if not values:
        raise Problem(
            422,
            "nothing_to_change",
            "Rien à modifier",
            detail="Envoyez au moins un champ.",
        )
    if "event_types" in values:
        values["event_types"] = _check_event_types(values["event_types"])
    if "url" in values:
        values["url"] = await _checked_url(request, values["url"])
    now = _now()
    async with transaction(pool) as connection:
        endpoint = await _own_endpoint(connection, endpoint_id, partner_id, now)
        merged = {**endpoint, **values}
        await store.update_endpoint(
            connection,
            endpoint_id,
            url=merged["url"],
            event_types=merged["event_types"],
            description=merged["description"],
            now=now,
        )
        return await _own_endpoint(connection, endpoint_id, partner_id, now)


@router.post(
    "/webhook-endpoints/{endpoint_id}/disable",
    response_model=WebhookEndpoint,
    tags=[ENDPOINTS_TAG],
    summary="Stop deliveries to an endpoint",
    responses={**_READ_ONLY, **_NO_ENDPOINT},
)
async def disable_webhook_endpoint(
    endpoint_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    """Its pending deliveries are stopped (status `disabled`); `recover` sends them again
    once it is enabled."""
    partner_id = _own_partner(caller)
    now = _now()
    async with transaction(pool) as connection:
        endpoint = await _own_endpoint(connection, endpoint_id, partner_id, now)
        if endpoint["enabled"]:
            # The partner's own choice: no "your endpoint was disabled" e-mail.
            await store.disable_endpoint(
                connection, endpoint_id, reason="disabled by its partner", notify=False
            )
            await store.touch_endpoint(connection, endpoint_id, now=now)
        return await _own_endpoint(connection, endpoint_id, partner_id, now)


@router.post(
    "/webhook-endpoints/{endpoint_id}/enable",
    response_model=WebhookEndpoint,
    tags=[ENDPOINTS_TAG],
    summary="Deliver to an endpoint again (its failure record is cleared)",
    responses={**_READ_ONLY, **_NO_ENDPOINT},
)
async def enable_webhook_endpoint(
    endpoint_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    """Events from now on are delivered; those stopped while it was disabled are sent again by
    `POST /webhook-endpoints/{endpoint_id}/recover`."""
    partner_id = _own_partner(caller)
    now = _now()
    async with transaction(pool) as connection:
        await _own_endpoint(connection, endpoint_id, partner_id, now)
        await store.enable_endpoint(connection, endpoint_id, now=now)
        return await _own_endpoint(connection, endpoint_id, partner_id, now)


@router.post(
    "/webhook-endpoints/{endpoint_id}/secret/rotate",
    response_model=WebhookEndpointWithSecret,
    tags=[ENDPOINTS_TAG],
    summary="Rotate the signing secret (the new one is shown once)",
    responses={**_READ_ONLY, **_NO_ENDPOINT},
)
async def rotate_webhook_secret(
    endpoint_id: uuid.UUID,
    request: Request,
    caller: CurrentCaller,
    pool: Pool,
    rotation: Annotated[SecretRotation | None, Body()] = None,
) -> JSONResponse:
    """During the overlap every delivery carries two signatures, one per secret, so the
    receiver verifies with either and can switch at any moment; then the previous secret stops
    signing."""
    partner_id = _own_partner(caller)
    overlap = timedelta(hours=(rotation or SecretRotation()).overlap_hours)
    secret, now = signing.new_secret(), _now()
    async with transaction(pool) as connection:
        await _own_endpoint(connection, endpoint_id, partner_id, now)
        await store.rotate_secret(
            connection,
            endpoint_id,
            _box(request).seal(secret, endpoint_id),
            now=now,
            overlap=overlap,
        )
        endpoint = _public(await _own_endpoint(connection, endpoint_id, partner_id, now))
    return JSONResponse({**endpoint, "secret": secret})


@router.delete(
    "/webhook-endpoints/{endpoint_id}",
    status_code=204,
    tags=[ENDPOINTS_TAG],
    summary="Delete an endpoint, with its secrets and delivery log",
    responses={**_READ_ONLY, **_NO_ENDPOINT},
)
async def delete_webhook_endpoint(
    endpoint_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> Response:
    partner_id = _own_partner(caller)
    async with transaction(pool) as connection:
        await _own_endpoint(connection, endpoint_id, partner_id, _now())
        await store.delete_endpoint(connection, endpoint_id)
    return Response(status_code=204)


# --- e-mail channels ---------------------------------------------------------------------------


def _channel(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "status": "confirmed" if row["confirmed_at"] is not None else "pending"}


def _channel_not_found(channel_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        "email_channel_not_found",
        "Adresse de notification introuvable",
        detail=f"Vous n'avez pas d'adresse de notification {channel_id}.",
    )


def _normalised_address(address: str) -> str:
    """Domains are case-insensitive: one spelling per address (the local part is kept)."""
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


def _confirmation_token() -> tuple[str, bytes]:
    """A token for the e-mail (shown nowhere else) and its SHA-256, the only thing stored."""
    token = secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode("ascii")).digest()


async def _send_confirmation(
    connection: asyncpg.Connection, channel: dict[str, Any], token: str
) -> None:
    await mail.queue(
        connection,
        to=channel["address"],
        template=CONFIRMATION_TEMPLATE,
        context={"token": token, "address": channel["address"]},
        partner_id=channel["partner_id"],
    )


@router.post(
    "/email-channels",
    status_code=201,
    response_model=EmailChannel,
    tags=[CHANNELS_TAG],
    summary="Add an e-mail address (a confirmation code is e-mailed to it)",
    openapi_extra=_IDEMPOTENT,
    responses={
        400: {"description": "Invalid Idempotency-Key"},
        **_READ_ONLY,
        409: {
            "description": "The address is already a channel of yours (`email_channel_exists`), "
            "too many channels (`email_channel_limit`), or the Idempotency-Key was used for "
            "another request"
        },
    },
)
async def create_email_channel(
    body: NewEmailChannel, request: Request, caller: CurrentCaller, pool: Pool
) -> Any:
    """The channel stays pending, and receives nothing, until the code e-mailed to it is sent
    to `POST /email-channels/confirm` (within 48 hours; it can be sent again)."""
    partner_id = _own_partner(caller)
    claimed = await idempotency.claim(
        pool, request, f"partner:{partner_id}", body.model_dump(mode="json")
    )
    if isinstance(claimed, JSONResponse):
        return claimed
    try:
        return await _create_email_channel(body, request, partner_id, pool, claimed)
    except BaseException:
        await idempotency.release(pool, claimed)
        raise


async def _create_email_channel(
    body: NewEmailChannel,
    request: Request,
    partner_id: uuid.UUID,
    pool: asyncpg.Pool,
    claimed: idempotency.IdempotencyKey | None,
) -> JSONResponse:
    settings = _settings(request)
    address = _normalised_address(body.address)
    token, token_hash = _confirmation_token()
    now = _now()
    try:
        async with transaction(pool) as connection:
            await store.lock_partner_subscriptions(connection, partner_id)
            limit = settings.email_max_channels_per_partner
            if await store.count_email_channels(connection, partner_id) >= limit:
                raise Problem(
                    409,
                    "email_channel_limit",
                    "Trop d'adresses de notification",
                    detail=f"Un partenaire a au plus {limit} adresses de notification ; "
                    "supprimez-en une d'abord.",
                )
            row = await store.create_email_channel(
                connection,
                channel_id=uuid.uuid4(),
                partner_id=partner_id,
                address=address,
                token_hash=token_hash,
                expires_at=now + timedelta(hours=settings.email_confirmation_ttl_hours),
                now=now,
            )
            await _send_confirmation(connection, row, token)
            channel = EmailChannel.model_validate(_channel(row)).model_dump(mode="json")
            await idempotency.remember(connection, claimed, 201, channel)
    except asyncpg.UniqueViolationError as error:
        raise Problem(
            409,
            "email_channel_exists",
            "Adresse déjà ajoutée",
            detail=f"{address} est déjà l'une de vos adresses de notification.",
        ) from error
    return JSONResponse(channel, status_code=201)


@router.post(
    "/email-channels/confirm",
    response_model=EmailChannel,
    tags=[CHANNELS_TAG],
    summary="Confirm an address with the code e-mailed to it (no token needed)",
    dependencies=[rate_limited("email confirmation")],
    responses={
        404: {"description": "No pending address has this code (mistyped, or already used)"},
        410: {"description": "The code has expired: ask for another one"},
        429: RATE_LIMITED_RESPONSE,
    },
)
async def confirm_email_channel(body: Confirmation, pool: Pool) -> dict[str, Any]:
    """The code is the proof that whoever calls reads the address's mail, so no bearer token is
    asked for; attempts are rate limited per client address."""
    token_hash = hashlib.sha256(body.token.encode("ascii")).digest()
    now = _now()
    async with transaction(pool) as connection:
        row = await store.channel_by_token(connection, token_hash)
        if row is None:
            raise Problem(
                404,
                "confirmation_not_found",
                "Code de confirmation inconnu",
                detail="Aucune adresse n'attend ce code : vérifiez-le ; il a peut-être déjà servi.",
            )
        if row["confirmation_expires_at"] <= now:
            raise Problem(
                410,
                "confirmation_expired",
                "Code de confirmation expiré",
                detail="Demandez un nouveau code : POST /email-channels/{id}/resend-confirmation.",
            )
        return _channel(await store.confirm_email_channel(connection, row["id"], now=now))


@router.post(
    "/email-channels/{channel_id}/resend-confirmation",
    status_code=202,
    response_model=EmailChannel,
    tags=[CHANNELS_TAG],
    summary="E-mail a new confirmation code (the previous one stops working)",
    responses={
        **_READ_ONLY,
        **_NO_CHANNEL,
        409: {"description": "The address is already confirmed"},
        429: {
            "description": "A code was sent less than a minute ago",
            "headers": RATE_LIMITED_RESPONSE["headers"],
        },
    },
)
async def resend_confirmation(
    channel_id: uuid.UUID, request: Request, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    partner_id = _own_partner(caller)
    settings = _settings(request)
    now = _now()
    async with transaction(pool) as connection:
        row = await store.find_email_channel(
            connection, channel_id, partner_id=partner_id, for_update=True
        )
        if row is None:
            raise _channel_not_found(channel_id)
        if row["confirmed_at"] is not None:
            raise Problem(
                409,
                "email_channel_confirmed",
                "Déjà confirmée",
                detail=f"{row['address']} est confirmée : il n'y a rien à confirmer.",
            )
        sent_at = row["confirmation_sent_at"]
        if sent_at is not None and now - sent_at < RESEND_CONFIRMATION_AFTER:
            wait = RESEND_CONFIRMATION_AFTER - (now - sent_at)
            raise Problem(
                429,
                "rate_limited",
                "Trop de requêtes",
                detail="Un code de confirmation a été envoyé il y a moins d'une minute.",
                headers={"Retry-After": str(max(1, int(wait.total_seconds()) + 1))},
            )
        token, token_hash = _confirmation_token()
        row = await store.renew_confirmation(
            connection,
            channel_id,
            token_hash=token_hash,
            expires_at=now + timedelta(hours=settings.email_confirmation_ttl_hours),
            now=now,
        )
        await _send_confirmation(connection, row, token)
    return _channel(row)


@router.get(
    "/email-channels",
    response_model=EmailChannelPage,
    tags=[CHANNELS_TAG],
    summary="Your e-mail channels, oldest first (operators: everyone's)",
    responses={**_BAD_CURSOR, **_FORBIDDEN},
)
async def list_email_channels(
    caller: CurrentCaller,
    pool: Pool,
    partner_id: PartnerFilter = None,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    scope = _readable(caller, partner_id)
    async with pool.acquire() as connection:
        rows = await store.list_email_channels(
            connection, partner_id=scope, after=pagination.decode_cursor(cursor), limit=limit + 1
        )
    return pagination.page([_channel(row) for row in rows], limit)


@router.get(
    "/email-channels/{channel_id}",
    response_model=EmailChannel,
    tags=[CHANNELS_TAG],
    summary="One e-mail channel",
    responses={**_FORBIDDEN, **_NO_CHANNEL},
)
async def get_email_channel(
    channel_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with pool.acquire() as connection:
        row = await store.find_email_channel(connection, channel_id, partner_id=_readable(caller))
    if row is None:
        raise _channel_not_found(channel_id)
    return _channel(row)


@router.delete(
    "/email-channels/{channel_id}",
    status_code=204,
    tags=[CHANNELS_TAG],
    summary="Remove an e-mail channel",
    responses={**_READ_ONLY, **_NO_CHANNEL},
)
async def delete_email_channel(
    channel_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> Response:
    partner_id = _own_partner(caller)
    async with transaction(pool) as connection:
        row = await store.find_email_channel(
            connection, channel_id, partner_id=partner_id, for_update=True
        )
        if row is None:
            raise _channel_not_found(channel_id)
        await store.delete_email_channel(connection, channel_id)
    return Response(status_code=204)


# --- preferences and settings ------------------------------------------------------------------


def _preference(event_type: str, choice: tuple[bool, bool] | None) -> dict[str, Any]:
    webhook, email = choice if choice is not None else (True, True)
    return {
        "event_type": event_type,
        "description": domain.DESCRIPTIONS[event_type],
        "webhook": webhook,
        "email": email,
    }


@router.get(
    "/preferences",
    response_model=list[Preference],
    tags=[PREFERENCES_TAG],
    summary="Every event type, and whether it goes to your webhooks and e-mail",
    responses={
        **_FORBIDDEN,
        422: {"description": "Operators: `partner_id` is required (`partner_id_required`)"},
    },
)
async def get_preferences(
    caller: CurrentCaller, pool: Pool, partner_id: PartnerFilter = None
) -> list[dict[str, Any]]:
    """Every event type a partner can hear of, with its description (French, for people). An
    event type nobody chose for is sent on both channels (the default)."""
    scope = _one_partner(caller, partner_id)
    async with pool.acquire() as connection:
        chosen = await store.preferences_of(connection, scope)
    return [_preference(event_type, chosen.get(event_type)) for event_type in domain.AUDIENCES]


@router.put(
    "/preferences/{event_type}",
    response_model=Preference,
    tags=[PREFERENCES_TAG],
    summary="Choose the channels of one event type",
    responses={**_READ_ONLY, 404: {"description": "Not an event type partners hear of"}},
)
async def put_preference(
    event_type: Annotated[str, Path(max_length=200)],
    choice: PreferenceChange,
    caller: CurrentCaller,
    pool: Pool,
) -> dict[str, Any]:
    partner_id = _own_partner(caller)
    if event_type not in domain.AUDIENCES:
        raise Problem(
            404,
            "event_type_not_found",
            "Type d'événement inconnu",
            detail="GET /preferences liste les types d'événements que vous pouvez choisir.",
        )
    async with transaction(pool) as connection:
        await store.set_preference(
            connection,
            partner_id,
            event_type,
            webhook=choice.webhook,
            email=choice.email,
            now=_now(),
        )
    return _preference(event_type, (choice.webhook, choice.email))


@router.get(
    "/settings",
    response_model=PartnerSettingsRead,
    tags=[PREFERENCES_TAG],
    summary="Your notification settings",
    responses={
        **_FORBIDDEN,
        422: {"description": "Operators: `partner_id` is required (`partner_id_required`)"},
    },
)
async def get_settings(
    caller: CurrentCaller, pool: Pool, partner_id: PartnerFilter = None
) -> dict[str, Any]:
    scope = _one_partner(caller, partner_id)
    async with pool.acquire() as connection:
        return await store.settings_of(connection, scope)


@router.put(
    "/settings",
    response_model=PartnerSettingsRead,
    tags=[PREFERENCES_TAG],
    summary="Replace your notification settings",
    responses=_READ_ONLY,
)
async def put_settings(body: PartnerSettings, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    """`stage_offers_within_km` makes sense for schools (collèges): they hear of each new stage
    de 3e offer within that distance of them. Any partner may set it."""
    partner_id = _own_partner(caller)
    async with transaction(pool) as connection:
        await store.put_settings(
            connection,
            partner_id,
            stage_offers_within_km=body.stage_offers_within_km,
            now=_now(),
        )
        return await store.settings_of(connection, partner_id)


# --- the delivery log --------------------------------------------------------------------------


def _delivery_not_found(delivery_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        "delivery_not_found",
        "Envoi introuvable",
        detail=f"Aucun envoi {delivery_id} vers vos points de réception.",
    )


def _endpoint_disabled(endpoint_id: uuid.UUID) -> Problem:
    return Problem(
        409,
        "webhook_endpoint_disabled",
        "Point de réception désactivé",
        detail=f"Réactivez-le d'abord : POST /webhook-endpoints/{endpoint_id}/enable.",
    )


StatusFilter = Annotated[DeliveryStatus | None, Query(description="Only deliveries in this state")]
EventFilter = Annotated[uuid.UUID | None, Query(description="Only this event (its webhook-id)")]


@router.get(
    "/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=DeliveryPage,
    tags=[LOG_TAG],
    summary="The deliveries to one endpoint, newest first",
    responses={**_BAD_CURSOR, **_FORBIDDEN, **_NO_ENDPOINT},
)
async def list_endpoint_deliveries(
    endpoint_id: uuid.UUID,
    caller: CurrentCaller,
    pool: Pool,
    status: StatusFilter = None,
    event_id: EventFilter = None,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    scope = _readable(caller)
    after = pagination.decode_cursor(cursor)
    async with pool.acquire() as connection:
        if await store.find_endpoint(connection, endpoint_id, partner_id=scope, now=_now()) is None:
            raise _endpoint_not_found(endpoint_id)
        rows = await store.delivery_log(
            connection,
            partner_id=scope,
            endpoint_id=endpoint_id,
            event_id=event_id,
            status=status,
            after=after,
            limit=limit + 1,
        )
    return pagination.page(rows, limit)


@router.get(
    "/deliveries",
    response_model=DeliveryPage,
    tags=[LOG_TAG],
    summary="Deliveries to all your endpoints, newest first (operators: across partners)",
    responses={**_BAD_CURSOR, **_FORBIDDEN},
)
async def list_deliveries(
    caller: CurrentCaller,
    pool: Pool,
    partner_id: PartnerFilter = None,
    status: StatusFilter = None,
    event_id: EventFilter = None,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    """Operators follow one event to every partner it reached with `event_id`."""
    scope = _readable(caller, partner_id)
    async with pool.acquire() as connection:
        rows = await store.delivery_log(
            connection,
            partner_id=scope,
            event_id=event_id,
            status=status,
            after=pagination.decode_cursor(cursor),
            limit=limit + 1,
        )
    return pagination.page(rows, limit)


@router.get(
    "/deliveries/{delivery_id}",
    response_model=DeliveryDetail,
    tags=[LOG_TAG],
    summary="One delivery, its payload and every attempt",
    responses={**_FORBIDDEN, **_NO_DELIVERY},
)
async def get_delivery(delivery_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    async with pool.acquire() as connection:
        row = await store.find_delivery(connection, delivery_id, partner_id=_readable(caller))
        if row is None:
            raise _delivery_not_found(delivery_id)
        attempts = await store.list_attempts(connection, delivery_id)
    return {**row, "payload": json.loads(row["payload"]), "attempt_log": attempts}


@router.post(
    "/deliveries/{delivery_id}/resend",
    status_code=202,
    response_model=Delivery,
    tags=[LOG_TAG],
    summary="Send a delivery again now (same webhook-id)",
    responses={
        **_READ_ONLY,
        **_NO_DELIVERY,
        409: {
            "description": "Already pending (`delivery_pending`), or its endpoint is disabled "
            "(`webhook_endpoint_disabled`)"
        },
    },
)
async def resend_delivery(
    delivery_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    """One more attempt, due at once, for a delivered, failed or stopped delivery (delivered
    ones too: a receiver that lost an event). It carries the same `webhook-id`, so a receiver
    that did get it can tell. If it fails the delivery is failed again: no new retry schedule."""
    partner_id = _own_partner(caller)
    async with transaction(pool) as connection:
        row = await store.find_delivery(
            connection, delivery_id, partner_id=partner_id, for_update=True
        )
        if row is None:
            raise _delivery_not_found(delivery_id)
        if row["status"] == "pending":
            raise Problem(
                409,
                "delivery_pending",
                "Envoi déjà en attente",
                detail="Une tentative est déjà prévue ; son heure est dans next_attempt_at.",
            )
        if not row["endpoint_enabled"]:
            raise _endpoint_disabled(row["endpoint_id"])
        await store.resend_delivery(connection, delivery_id, now=_now())
        updated = await store.find_delivery(connection, delivery_id, partner_id=partner_id)
    assert updated is not None  # locked above, in this transaction
    return updated


@router.post(
    "/webhook-endpoints/{endpoint_id}/recover",
    status_code=202,
    response_model=Recovered,
    tags=[LOG_TAG],
    summary="Send again every failed delivery since a time",
    responses={
        **_READ_ONLY,
        **_NO_ENDPOINT,
        409: {"description": "The endpoint is disabled: enable it first"},
    },
)
async def recover_endpoint(
    endpoint_id: uuid.UUID, body: Recovery, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    """After an outage of the receiver: every delivery created since `since` that failed, or
    was stopped while the endpoint was disabled, is due again at once, each with its own
    `webhook-id`."""
    partner_id = _own_partner(caller)
    now = _now()
    async with transaction(pool) as connection:
        endpoint = await _own_endpoint(connection, endpoint_id, partner_id, now)
        if not endpoint["enabled"]:
            raise _endpoint_disabled(endpoint_id)
        queued = await store.recover_deliveries(connection, endpoint_id, since=body.since, now=now)
    return {"queued": queued}
