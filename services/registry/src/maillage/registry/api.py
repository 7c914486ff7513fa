"""HTTP routes of the registry: the registre des partenaires.

Anyone may register (rate limited, ``Idempotency-Key`` honoured); reading needs a token and shows
each caller what its clearance allows (``domain.clearance``); a partner changes only itself;
only operators move a partner's status, and every move is kept in its history.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from maillage.common import idempotency, limits, pagination
from maillage.common.auth import (
    SAFE_METHODS,
    Caller,
    CurrentCaller,
    check_standing,
    current_caller,
    partners_table_status,
    require_role,
)
from maillage.common.catalog import (
    PartnerRegistered,
    PartnerRejected,
    PartnerSuspended,
    PartnerUpdated,
    PartnerVerified,
)
from maillage.common.db import transaction
from maillage.common.events import Level
from maillage.common.http import Pool
from maillage.common.kinds import LINE_CHECK, Float, Line, LineOrNone, Prose, ProseOrNone
from maillage.common.messages import status_label
from maillage.common.outbox import publish
from maillage.common.problems import Problem
from maillage.common.ratelimit import (
    RATE_LIMITED_RESPONSE,
    FailureThrottle,
    client_address,
    rate_limited,
)
from maillage.common.sealing import SealingKey
from maillage.registry import domain, identifiers, reference, store, tokens, usecases
from maillage.registry.domain import PartnerKind, PartnerStatus, Programme

router = APIRouter(tags=["partners"])

# PostgreSQL text holds every character but NUL: free text must not contain it.
_TEXT = r"^[^\x00]*$"
_EMAIL = r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$"
_DEPARTEMENT = r"^(0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-6])$"


CiteEducative = Annotated[str, Field(max_length=200, pattern=_TEXT), LINE_CHECK]


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Line = Field(min_length=1, max_length=200, pattern=_TEXT, examples=["Camille Martin"])
    role: Line = Field(
        min_length=1, max_length=200, pattern=_TEXT, examples=["Principale adjointe"]
    )
    email: Line = Field(max_length=320, pattern=_EMAIL, examples=["camille.martin@ac-creteil.fr"])
    phone: str | None = Field(default=None, max_length=40, pattern=r"^\+?[0-9 .()-]{6,40}$")


class Territory(BaseModel):
    address: ProseOrNone = Field(default=None, max_length=300, pattern=_TEXT)
    postal_code: str | None = Field(default=None, max_length=5, pattern=r"^[0-9]{5}$")
    commune_code: str | None = Field(
        default=None, max_length=10, description="Code commune INSEE (94054 Orly)"
    )
    commune_name: LineOrNone = Field(default=None, max_length=200, pattern=_TEXT)
    departement: str | None = Field(default=None, max_length=3, pattern=_DEPARTEMENT)
    latitude: Float | None = Field(default=None, ge=-90, le=90)
    longitude: Float | None = Field(default=None, ge=-180, le=180)
    cites_educatives: list[CiteEducative] = Field(default_factory=list, max_length=20)
    programmes: list[Programme] = Field(default_factory=list, max_length=20)


def _omittable(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class Registration(Territory):
    """A partner organisation registering. REP status and pupil count are never declared: they
    come from the Annuaire de l'éducation for collèges and lycées."""

    model_config = ConfigDict(extra="forbid")
    kind: PartnerKind
    legal_name: Line = Field(min_length=1, max_length=300, pattern=_TEXT)
    siret: str | None = Field(
        default=None, max_length=20, description="14 digits; required by kind"
    )
    rna: str | None = Field(default=None, max_length=20, description="W + 9 digits (associations)")
    uai: str | None = Field(
        default=None, max_length=20, description="7 digits + check letter (schools)"
    )
    contacts: list[Contact] = Field(min_length=1, max_length=10)


class PartnerChanges(BaseModel):
    """What a partner may change of its own record (not its kind, identifiers or status).

    A field left out stays as it is; null clears a field, except the name and the lists, which
    are never null (send an empty list)."""

    model_config = ConfigDict(extra="forbid")
    # Not null, yet optional: the default is never validated, and not documented.
    legal_name: Line = Field(
        default=None, min_length=1, max_length=300, pattern=_TEXT, json_schema_extra=_omittable
    )
    address: ProseOrNone = Field(default=None, max_length=300, pattern=_TEXT)
    postal_code: str | None = Field(default=None, max_length=5, pattern=r"^[0-9]{5}$")
    commune_code: str | None = Field(default=None, max_length=10)
    commune_name: LineOrNone = Field(default=None, max_length=200, pattern=_TEXT)
    departement: str | None = Field(default=None, max_length=3, pattern=_DEPARTEMENT)
    latitude: Float | None = Field(default=None, ge=-90, le=90)
    longitude: Float | None = Field(default=None, ge=-180, le=180)
    cites_educatives: list[CiteEducative] = Field(
        default=None, max_length=20, json_schema_extra=_omittable
    )
    programmes: list[Programme] = Field(default=None, max_length=20, json_schema_extra=_omittable)


class Partner(BaseModel):
    """A partner as the caller may see it: fields above its clearance are left out."""

    id: str
    kind: PartnerKind | None = None
    legal_name: str | None = None
    status: PartnerStatus | None = None
    siret: str | None = None
    siren: str | None = None
    rna: str | None = None
    uai: str | None = None
    commune_code: str | None = None
    commune_name: str | None = None
    departement: str | None = None
    cites_educatives: list[str] | None = None
    programmes: list[str] | None = None
    education_prioritaire: str | None = None
    qpv_proximity: bool | None = None
    qpv_code: str | None = None
    created_at: datetime | None = None
    address: str | None = None
    postal_code: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    pupils: int | None = None
    updated_at: datetime | None = None
    contacts: list[dict[str, Any]] | None = None


class PartnerPage(BaseModel):
    items: list[Partner]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Prose = Field(min_length=3, max_length=2000, pattern=_TEXT)


class HistoryEntry(BaseModel):
    from_status: PartnerStatus | None
    to_status: PartnerStatus
    actor: str
    reason: str
    at: datetime


# --- helpers ------------------------------------------------------------------------------------


# Documented error answers (problem documents: maillage.common.problems.document_problems).
_NOT_FOUND = {404: {"description": "No such partner"}}
_FORBIDDEN = {403: {"description": "Not for this caller"}}


_facts = usecases.partner_facts


def _invalid(errors: list[domain.FieldError]) -> Problem:
    return Problem(
        422,
        "validation_failed",
        "Requête non valide",
        detail=f"{len(errors)} champ{'s' if len(errors) != 1 else ''} non "
        f"valide{'s' if len(errors) != 1 else ''}.",
        errors=[
            {"in": "body", "pointer": f"#/{e.field}", "detail": e.message, "type": "value_error"}
            for e in errors
        ],
    )


def _not_found(partner_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        "partner_not_found",
        "Partenaire introuvable",
        detail=f"Aucun partenaire {partner_id}.",
    )


_partner_status = partners_table_status("id")


async def _caller_clearance(pool: asyncpg.Pool, caller: Caller, partner_id: str) -> Level:
    verified = False
    if (
        caller.partner_id
        and caller.partner_id != partner_id
        and not caller.roles & domain.STAFF_ROLES
    ):
        verified = await _partner_status(pool, caller.partner_id) == PartnerStatus.VERIFIED
    return domain.clearance(
        roles=caller.roles,
        caller_partner_id=caller.partner_id,
        caller_partner_verified=verified,
        partner_id=partner_id,
    )


def _require_self(caller: Caller, partner_id: uuid.UUID) -> None:
    if caller.partner_id != str(partner_id) and "admin" not in caller.roles:
        raise Problem(
            403,
            "forbidden",
            "Accès refusé",
            detail="Un partenaire ne modifie que sa propre fiche.",
        )


_bearer = HTTPBearer(
    auto_error=False,
    description="A JWT issued by the registry, or (on a partner's own registration) the "
    "registration access token answered by POST /partners",
)


async def registrant_or_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    pool: Pool,
) -> Caller:
    """The caller of a partner's own registration routes: a ``mrt_`` registration access token
    (the partner itself, decision 41) or a JWT (:func:`maillage.common.auth.current_caller`).
    401 for an unknown, expired or used-up registration token; a write by a suspended or
    rejected partner is refused either way (decision 40)."""
    if credentials is not None and credentials.credentials.startswith(
        usecases.REGISTRATION_TOKEN_PREFIX
    ):
        caller = await usecases.registrant(pool, credentials.credentials, now=datetime.now(UTC))
        if caller is None:
            raise Problem(
                401,
                "unauthenticated",
                "Authentification requise",
                detail="Ce jeton d'inscription est inconnu, a expiré ou a déjà servi ; un "
                "opérateur peut en émettre un nouveau.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if request.method not in SAFE_METHODS:
            await check_standing(request, caller)
        return caller
    return await current_caller(request, credentials)


Registrant = Annotated[Caller, Depends(registrant_or_caller)]
"""Route parameter type: a partner's registration access token, or any bearer JWT."""


# --- registration -------------------------------------------------------------------------------


class SchoolClaim(BaseModel):
    mailbox: str = Field(
        description="The school's institutional mailbox (Annuaire de l'éducation) the code went to"
    )
    expires_at: datetime = Field(description="Send the code back before this moment")


class Registered(Partner):
    """The registration, with what is shown only once."""

    registration_access_token: str = Field(
        description="Shown once (RFC 7591 §3.2.1): `Authorization: Bearer <token>` reads and "
        "manages this registration and, once verified, creates its first API client (which uses "
        "it up). Only its hash is kept; an operator issues a new one when it is lost. A replay "
        "of the same request with the same Idempotency-Key answers a new one (the previous one "
        "stops working)."
    )
    registration_access_token_expires_at: datetime
    school_claim: SchoolClaim | None = Field(
        default=None,
        description="A collège or lycée of the Annuaire: where the one-time code went. Send it "
        "to POST /partners/{id}/school-claim (decision 41). Absent: the registration waits for "
        "an operator.",
    )


def _token_lifetime(request: Request) -> timedelta:
    lifetime: timedelta = request.app.state.registration_token_lifetime
    return lifetime


@router.post(
    "/partners",
    status_code=201,
    response_model=Registered,
    response_model_exclude_unset=True,
    summary="Register a partner organisation (no account needed)",
    dependencies=[rate_limited("registration")],
    openapi_extra={"parameters": [idempotency.OPENAPI_PARAMETER]},
    responses={
        400: {"description": "Invalid Idempotency-Key"},
        409: {
            "description": "An identifier is already registered (problem+json naming the "
            "partner), or the Idempotency-Key was used for another request"
        },
        429: RATE_LIMITED_RESPONSE,
    },
)
async def register(registration: Registration, request: Request, pool: Pool) -> Any:
    claimed = await idempotency.claim(
        pool, request, f"anonymous:{client_address(request)}", registration.model_dump(mode="json")
    )
    if isinstance(claimed, JSONResponse):
        return await _replayed(claimed, request, pool)
    try:
        body = await _register(
            registration,
            pool,
            claimed,
            lifetime=_token_lifetime(request),
            claim_sealing=request.app.state.claim_sealing,
        )
    except BaseException:
        await idempotency.release(pool, claimed)
        raise
    return JSONResponse(body, status_code=201)


async def _replayed(replay: JSONResponse, request: Request, pool: asyncpg.Pool) -> JSONResponse:
    """The stored answer of a registration replayed with its Idempotency-Key, with a new
    registration access token: the stored answer never holds one (it is shown once)."""
    if replay.status_code != 201:
        return replay
    body = json.loads(bytes(replay.body))
    async with transaction(pool) as connection:
        token, expires_at = await usecases.issue_registration_token(
            connection,
            uuid.UUID(body["id"]),
            issued_by="registration",
            now=datetime.now(UTC),
            lifetime=_token_lifetime(request),
        )
    body.update(
        registration_access_token=token,
        registration_access_token_expires_at=expires_at.isoformat(),
    )
    return JSONResponse(body, status_code=201, headers={"Idempotent-Replayed": "true"})


async def _register(
    registration: Registration,
    pool: asyncpg.Pool,
    claimed: idempotency.IdempotencyKey | None,
    *,
    lifetime: timedelta,
    claim_sealing: SealingKey,
) -> dict[str, Any]:
    errors: list[domain.FieldError] = []
    normalised: dict[str, str | None] = {}
    for name, check in (
        ("siret", identifiers.siret),
        ("rna", identifiers.rna),
        ("uai", identifiers.uai),
    ):
        value = getattr(registration, name)
        try:
            normalised[name] = check(value) if value else None
        except identifiers.InvalidIdentifier as error:
            errors.append(domain.FieldError(name, str(error)))
    commune_code: str | None = None
    if registration.commune_code is not None:  # "" too: it is not a code
        try:
            commune_code = identifiers.insee_commune(registration.commune_code)
        except identifiers.InvalidIdentifier as error:
            errors.append(domain.FieldError("commune_code", str(error)))
    failed = {error.field for error in errors}
    errors += [
        e for e in domain.identifier_errors(registration.kind, normalised) if e.field not in failed
    ]
    if errors:
        raise _invalid(errors)

    record: dict[str, Any] = {
        "id": uuid.uuid4(),
        "kind": registration.kind.value,
        "legal_name": registration.legal_name,
        **normalised,
        **registration.model_dump(
            include={
                "address",
                "postal_code",
                "commune_name",
                "departement",
                "latitude",
                "longitude",
                "cites_educatives",
            }
        ),
        "commune_code": commune_code,  # normalised: " 2a004" is stored as 2A004
        "programmes": [programme.value for programme in registration.programmes],
    }
    try:
        async with transaction(pool) as connection:
            existing = await store.find_by_identifiers(
                connection, siret=normalised["siret"], rna=normalised["rna"], uai=normalised["uai"]
            )
            if existing:
                raise _already_registered(*existing)
            school = None
            if registration.kind in domain.SCHOOL_KINDS and normalised["uai"]:
                school = await reference.lookup_school(connection, normalised["uai"])
            if school is not None:  # its facts from the Annuaire; verified once it proves control
                record.update(domain.facts_from_reference(school))
            partner = await store.insert_partner(connection, record)
            await store.replace_contacts(
                connection, partner["id"], [c.model_dump() for c in registration.contacts]
            )
            await store.record_status(
                connection,
                record["id"],
                None,
                PartnerStatus.PENDING.value,
                "registration",
                "registered",
            )
            await publish(connection, PartnerRegistered(**_facts(partner)))
            now = datetime.now(UTC)
            school_claim = None
            if school is not None:
                school_claim = await usecases.open_school_claim(
                    connection, partner, school, now=now, sealing=claim_sealing
                )
            contacts = await store.contacts_of(connection, [partner["id"]])
            body = Partner(**partner, contacts=contacts[partner["id"]]).model_dump(
                mode="json", exclude_none=True
            )
            if school_claim is not None:
                body["school_claim"] = SchoolClaim(**school_claim).model_dump(mode="json")
            await idempotency.remember(connection, claimed, 201, body)  # never the token
            token, expires_at = await usecases.issue_registration_token(
                connection, record["id"], issued_by="registration", now=now, lifetime=lifetime
            )
    except asyncpg.UniqueViolationError as error:  # a concurrent registration won the race
        raise Problem(
            409,
            "partner_exists",
            "Partenaire déjà inscrit",
            detail="Un de ces identifiants est déjà inscrit.",
            constraint=error.constraint_name,
        ) from error
    return {
        **body,
        "registration_access_token": token,
        "registration_access_token_expires_at": expires_at.isoformat(),
    }


def _already_registered(partner_id: str, field: str) -> Problem:
    return Problem(
        409,
        "partner_exists",
        "Partenaire déjà inscrit",
        detail=f"Ce {field.upper()} est déjà inscrit, par le partenaire {partner_id}.",
        existing_partner_id=partner_id,
        field=field,
    )


# --- reading ------------------------------------------------------------------------------------


@router.get(
    "/partners",
    response_model=PartnerPage,
    response_model_exclude_unset=True,
    summary="Search the registry (fields filtered by your clearance)",
    responses={400: {"description": "Invalid cursor"}},
)
async def list_partners(
    caller: CurrentCaller,
    pool: Pool,
    kind: PartnerKind | None = None,
    departement: Annotated[str | None, Query(max_length=3, pattern=_DEPARTEMENT)] = None,
    commune: Annotated[
        str | None, Query(max_length=10, pattern=_TEXT, description="Code commune INSEE")
    ] = None,
    programme: Programme | None = None,
    status: Annotated[
        PartnerStatus | None,
        Query(description="Operators' queue: `pending`, the registrations still to check"),
    ] = None,
    education_prioritaire: Annotated[
        str | None, Query(max_length=4, pattern=r"^(REP|REP\+)$")
    ] = None,
    q: Annotated[
        str | None,
        Query(min_length=2, max_length=100, pattern=_TEXT, description="Text in the name"),
    ] = None,
    cursor: pagination.Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    rows = await store.list_partners(
        pool,
        kind=kind.value if kind else None,
        departement=departement,
        commune_code=commune,
        programme=programme.value if programme else None,
        education_prioritaire=education_prioritaire,
        text=q,
        after=pagination.decode_cursor(cursor),
        limit=limit + 1,
        status=status.value if status else None,
    )
    page, more = rows[:limit], len(rows) > limit
    levels = {p["id"]: await _caller_clearance(pool, caller, p["id"]) for p in page}
    nominative = [pid for pid, level in levels.items() if level is Level.NOMINATIVE]
    contacts = await store.contacts_of(pool, nominative) if nominative else {}
    items = []
    for partner in page:
        if partner["id"] in contacts:
            partner = {**partner, "contacts": contacts[partner["id"]]}
        items.append(domain.visible(partner, levels[partner["id"]]))
    last = page[-1] if more else None
    return {
        "items": items,
        "next_cursor": pagination.encode_cursor(last["created_at"], last["id"]) if last else None,
    }


@router.get(
    "/partners/{partner_id}",
    response_model=Partner,
    response_model_exclude_unset=True,
    summary="One partner (fields filtered by your clearance)",
    responses=_NOT_FOUND,
)
async def get_partner(partner_id: uuid.UUID, caller: Registrant, pool: Pool) -> dict[str, Any]:
    partner = await store.get_partner(pool, partner_id)
    if partner is None:
        raise _not_found(partner_id)
    level = await _caller_clearance(pool, caller, partner["id"])
    if level is Level.NOMINATIVE:
        partner["contacts"] = (await store.contacts_of(pool, [partner["id"]]))[partner["id"]]
    return domain.visible(partner, level)


@router.patch(
    "/partners/{partner_id}",
    response_model=Partner,
    response_model_exclude_unset=True,
    summary="Change your own record",
    responses={**_FORBIDDEN, **_NOT_FOUND},
)
async def change_partner(
    partner_id: uuid.UUID, changes: PartnerChanges, caller: Registrant, pool: Pool
) -> dict[str, Any]:
    _require_self(caller, partner_id)
    values = changes.model_dump(exclude_unset=True, mode="json")
    if not values:
        raise Problem(
            422,
            "nothing_to_change",
            "Rien à modifier",
            detail="Envoyez au moins un champ.",
        )
    if values.get("commune_code") is not None:  # "" too: it is not a code
        try:
            values["commune_code"] = identifiers.insee_commune(values["commune_code"])
        except identifiers.InvalidIdentifier as error:
            raise _invalid([domain.FieldError("commune_code", str(error))]) from error
    async with transaction(pool) as connection:
        if await store.get_partner(connection, partner_id, for_update=True) is None:
            raise _not_found(partner_id)
        partner = await store.update_partner(connection, partner_id, values)
        await publish(connection, PartnerUpdated(**_facts(partner)))
        partner["contacts"] = (await store.contacts_of(connection, [partner["id"]]))[partner["id"]]
    return partner


@router.get(
    "/partners/{partner_id}/contacts",
    response_model=list[Contact],
    summary="Your contacts (level 1: you and operators only)",
    responses={**_FORBIDDEN, **_NOT_FOUND},
)
async def get_contacts(
    partner_id: uuid.UUID, caller: Registrant, pool: Pool
) -> list[dict[str, Any]]:
    if caller.partner_id != str(partner_id) and not caller.roles & {"operator", "admin"}:
        raise Problem(
            403,
            "forbidden",
            "Accès refusé",
            detail="Les contacts ne sont visibles que de leur partenaire et des opérateurs.",
        )
    if await store.get_partner(pool, partner_id) is None:
        raise _not_found(partner_id)
    contacts = (await store.contacts_of(pool, [str(partner_id)]))[str(partner_id)]
    return [{k: v for k, v in c.items() if k != "id"} for c in contacts]


@router.put(
    "/partners/{partner_id}/contacts",
    response_model=list[Contact],
    summary="Replace your contacts",
    responses={**_FORBIDDEN, **_NOT_FOUND},
)
async def put_contacts(
    partner_id: uuid.UUID,
    contacts: Annotated[list[Contact], Field(min_length=1, max_length=10)],
    caller: Registrant,
    pool: Pool,
) -> list[dict[str, Any]]:
    _require_self(caller, partner_id)
    async with transaction(pool) as connection:
        if await store.get_partner(connection, partner_id, for_update=True) is None:
            raise _not_found(partner_id)
        await store.replace_contacts(
            connection, str(partner_id), [c.model_dump() for c in contacts]
        )
    return [c.model_dump() for c in contacts]


# --- verification -------------------------------------------------------------------------------

_EVENT_OF_TARGET = {
    PartnerStatus.VERIFIED: PartnerVerified,
    PartnerStatus.REJECTED: PartnerRejected,
    PartnerStatus.SUSPENDED: PartnerSuspended,
}


async def change_status(
    verb: domain.Verb,
    partner_id: uuid.UUID,
    change: StatusChange,
    caller: Caller,
    pool: asyncpg.Pool,
) -> dict[str, Any]:
    """Where a partner is verified, rejected, suspended or reinstated."""
    target = domain.TARGET_OF_VERB[verb.value]
    async with transaction(pool) as connection:
        partner = await store.get_partner(connection, partner_id, for_update=True)
        if partner is None:
            raise _not_found(partner_id)
        current = PartnerStatus(partner["status"])
        if not domain.can_transition(current, target):
            raise Problem(
                409,
                "invalid_transition",
                "Impossible depuis ce statut",
                detail=f"Un partenaire au statut {status_label(current)} ne peut pas passer au "
                f"statut {status_label(target)}.",
                partner_status=current.value,
            )
        partner = await store.change_status(
            connection,
            partner_id,
            from_status=current.value,
            to_status=target.value,
            actor=f"operator:{caller.subject}",
            reason=change.reason,
        )
        await publish(connection, _EVENT_OF_TARGET[target](**_facts(partner)))
    return partner


def _status_route(verb: domain.Verb) -> None:
    async def route(
        partner_id: uuid.UUID,
        change: StatusChange,
        caller: Annotated[Caller, require_role("operator")],
        pool: Pool,
    ) -> dict[str, Any]:
        return await change_status(verb, partner_id, change, caller, pool)

    router.add_api_route(
        f"/partners/{{partner_id}}/{verb.value}",
        route,
        methods=["POST"],
        name=f"{verb.value}_partner",
        response_model=Partner,
        response_model_exclude_unset=True,
        summary=f"{verb.value.capitalize()} a partner (operators; the reason is kept)",
        responses={
            **_FORBIDDEN,
            **_NOT_FOUND,
            409: {"description": "Not possible from the partner's current status"},
        },
    )


for _verb in domain.Verb:
    _status_route(_verb)


@router.get(
    "/partners/{partner_id}/history",
    response_model=list[HistoryEntry],
    summary="Who changed the partner's status, when and why",
    responses={**_FORBIDDEN, **_NOT_FOUND},
)
async def get_history(
    partner_id: uuid.UUID, caller: Registrant, pool: Pool
) -> list[dict[str, Any]]:
    if caller.partner_id != str(partner_id) and not caller.roles & domain.STAFF_ROLES:
        raise Problem(
            403,
            "forbidden",
            "Accès refusé",
            detail="L'historique n'est visible que de son partenaire et du personnel.",
        )
    if await store.get_partner(pool, partner_id) is None:
        raise _not_found(partner_id)
    return await store.history(pool, partner_id)


class ClaimCode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Line = Field(
        min_length=1,
        max_length=32,
        pattern=_TEXT,
        description="The eight digits e-mailed to the school's institutional mailbox",
        examples=["04719263"],
    )


@router.post(
    "/partners/{partner_id}/school-claim",
    response_model=Partner,
    response_model_exclude_unset=True,
    summary="Send back the code e-mailed to your school's mailbox: the school is verified",
    description="With the registration access token (or a token of the partner), within a day "
    "and five tries (422 `wrong_code` with `attempts_left`). The other pending registrations of "
    "the same UAI are rejected, each with its history (decision 41).",
    responses={
        **_FORBIDDEN,
        **_NOT_FOUND,
        409: {
            "description": "Not pending (partner_not_pending), no code awaited "
            "(no_school_claim: expired, five wrong codes, never sent), or the school is held "
            "by a verified partner (school_already_registered)"
        },
    },
)
async def prove_school_claim(
    partner_id: uuid.UUID, body: ClaimCode, caller: Registrant, pool: Pool
) -> dict[str, Any]:
    # The school, verified; a wrong code's count commits before its 422.
    async with transaction(pool) as connection:
        outcome = await usecases.prove_school_claim(
            connection, caller, partner_id, body.code.strip(), now=datetime.now(UTC)
        )
    if isinstance(outcome, usecases.WrongCode):  # its count committed
        raise usecases.wrong_code(outcome.attempts_left)
    return outcome


class NewRegistrationToken(BaseModel):
    registration_access_token: str = Field(description="Shown once; the previous one is void")
    registration_access_token_expires_at: datetime


@router.post(
    "/partners/{partner_id}/registration-token",
    status_code=201,
    response_model=NewRegistrationToken,
    summary="Issue a new registration access token (operators; kept in the history)",
    description="For a partner that lost its token or let it expire (RFC 7592 leaves this to "
    "the server): the old token stops working; the partner's history names the operator and "
    "the reason.",
    responses={**_FORBIDDEN, **_NOT_FOUND},
)
async def reissue_registration_token(
    partner_id: uuid.UUID,
    change: StatusChange,
    request: Request,
    caller: Annotated[Caller, require_role("operator", "admin")],
    pool: Pool,
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        token, expires_at = await usecases.reissue_registration_token(
            connection,
            caller,
            partner_id,
            reason=change.reason,
            now=datetime.now(UTC),
            lifetime=_token_lifetime(request),
        )
    return {
        "registration_access_token": token,
        "registration_access_token_expires_at": expires_at,
    }


# --- credentials and the token issuer ------------------------------------------------------------

credentials = APIRouter(tags=["credentials"])


class NewClient(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Line = Field(min_length=1, max_length=100, pattern=_TEXT, examples=["Connecteur ERP"])


class Client(BaseModel):
    client_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class ClientWithSecret(Client):
    client_secret: str = Field(description="Shown once: store it now; only its hash is kept")


def _issuer(request: Request) -> tokens.Issuer:
    issuer: tokens.Issuer = request.app.state.issuer
    return issuer


def _owner_or_operator(caller: Caller, partner_id: uuid.UUID) -> None:
    if caller.partner_id != str(partner_id) and not caller.roles & {"operator", "admin"}:
        raise Problem(
            403,
            "forbidden",
            "Accès refusé",
            detail="Seuls le partenaire lui-même et les opérateurs y ont accès.",
        )


@credentials.post(
    "/partners/{partner_id}/clients",
    status_code=201,
    response_model=ClientWithSecret,
    summary="Create an API client (verified partners; the secret is shown once)",
    responses={
        **_FORBIDDEN,
        **_NOT_FOUND,
        409: {"description": "The partner is not verified"},
    },
)
async def create_client(
    partner_id: uuid.UUID, body: NewClient, caller: Registrant, pool: Pool
) -> dict[str, Any]:
    # The partner itself (its first client with its registration access token, the next ones
    # with a token of its client), or an operator onboarding it.
    _owner_or_operator(caller, partner_id)
    partner = await store.get_partner(pool, partner_id)
    if partner is None:
        raise _not_found(partner_id)
    if partner["status"] != PartnerStatus.VERIFIED:
        raise Problem(
            409,
            "partner_not_verified",
            "Partenaire non vérifié",
            detail="Seul un partenaire vérifié obtient des clients d'API.",
            partner_status=partner["status"],
        )
    client_id, secret = tokens.new_client_credentials()
    secret_hash = await tokens.hash_secret_off_loop(secret)
    async with transaction(pool) as connection:
        created = await store.insert_client(
            connection,
            client_id=client_id,
            partner_id=partner_id,
            name=body.name,
            secret_hash=secret_hash,
        )
        if usecases.is_registrant(caller):  # its first client: from now on it uses that
            await store.use_up_registration_token(connection, partner_id, datetime.now(UTC))
    return {**created, "client_secret": secret}


@credentials.get(
    "/partners/{partner_id}/clients",
    response_model=list[Client],
    summary="A partner's API clients (never their secrets)",
    responses=_FORBIDDEN,
)
async def list_clients(
    partner_id: uuid.UUID, caller: Registrant, pool: Pool
) -> list[dict[str, Any]]:
    _owner_or_operator(caller, partner_id)
    return await store.clients_of(pool, partner_id)


@credentials.delete(
    "/partners/{partner_id}/clients/{client_id}",
    status_code=204,
    summary="Revoke an API client: its tokens are no longer issued",
    responses={**_FORBIDDEN, 404: {"description": "No such API client of this partner"}},
)
async def revoke_client(
    partner_id: uuid.UUID,
    client_id: Annotated[str, Path(max_length=limits.CODE, pattern=_TEXT)],
    caller: Registrant,
    pool: Pool,
) -> None:
    _owner_or_operator(caller, partner_id)
    if not await store.revoke_client(pool, partner_id, client_id):
        raise Problem(
            404,
            "client_not_found",
            "Client d'API introuvable",
            detail=f"Aucun client {client_id}.",
        )


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    """RFC 6749 §5.2: OAuth clients expect this shape, not problem+json."""
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="maillage"'
    return JSONResponse({"error": error, "error_description": description}, status, headers=headers)


def _attempt(request: Request, account: str) -> None:
    """Let one secret or password be tried for ``account`` (a client id, a staff username), or
    429 while the account or the caller's address waits after too many failures
    (``FailureThrottle``: nothing is verified meanwhile). The attempt counts as a failure until
    :func:`_succeeded` says otherwise, so concurrent guesses cannot all pass before one fails."""
    throttles: dict[str, FailureThrottle] = request.app.state.failure_throttles
    address = client_address(request)
    wait = max(throttles["account"].wait(account), throttles["address"].wait(address))
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise Problem(
            429,
            "too_many_failures",
            "Trop d'échecs",
            detail=f"Trop d'identifiants erronés ; réessayez dans {seconds} s.",
            headers={"Retry-After": str(seconds), "Cache-Control": "no-store"},
        )
    throttles["account"].failed(account)
    throttles["address"].failed(address)


def _succeeded(request: Request, account: str) -> None:
    """A right secret clears the account's failures and takes back the address's count of this
    attempt; the address keeps its earlier failures (a guesser could otherwise clear them with
    its own good credentials)."""
    throttles: dict[str, FailureThrottle] = request.app.state.failure_throttles
    throttles["account"].succeeded(account)
    throttles["address"].forgive(client_address(request))


class AccessToken(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="Seconds")


_OAUTH_ERROR = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["error", "error_description"],
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
        }
    }
}


@credentials.post(
    "/oauth/token",
    summary="Get an access token (client credentials, or a staff password)",
    dependencies=[rate_limited("token")],
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {"enum": ["client_credentials", "password"]},
                            "client_id": {"type": "string", "maxLength": limits.SECRET},
                            "client_secret": {"type": "string", "maxLength": limits.SECRET},
                            "username": {"type": "string", "maxLength": limits.SECRET},
                            "password": {"type": "string", "maxLength": limits.SECRET},
                        },
                    }
                }
            },
            "required": True,
        }
    },
    responses={
        200: {"model": AccessToken},
        400: {"description": "RFC 6749 error", "content": _OAUTH_ERROR},
        401: {
            "description": "RFC 6749 invalid_client",
            "content": _OAUTH_ERROR,
            "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
        },
        429: {
            **RATE_LIMITED_RESPONSE,
            "description": "Too many requests from this address (rate_limited), or too many "
            "wrong secrets or passwords for this account or address (too_many_failures): "
            "retry after Retry-After seconds",
        },
    },
)
async def token(request: Request, pool: Pool) -> JSONResponse:
    if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
        return _oauth_error(400, "invalid_request", "Send application/x-www-form-urlencoded.")
    form = {
        k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()
    }
    if any("\x00" in value for value in form.values()):  # no database text holds NUL
        return _oauth_error(400, "invalid_request", "Parameters may not contain NUL.")
    if any(len(value) > limits.SECRET for value in form.values()):
        return _oauth_error(400, "invalid_request", f"Parameters hold {limits.SECRET} at most.")
    grant = form.get("grant_type")
    issuer = _issuer(request)
    if grant == "client_credentials":
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                return _oauth_error(401, "invalid_client", "Malformed Basic credentials.")
        if not client_id or not secret or "\x00" in client_id:
            return _oauth_error(401, "invalid_client", "Client authentication failed.")
        account = f"client:{client_id}"
        _attempt(request, account)
        row = await store.client_for_token(pool, client_id)
        secret_hash = row["secret_hash"] if row else None
        if not await tokens.verify_secret_off_loop(secret_hash, secret) or row is None:
            return _oauth_error(401, "invalid_client", "Client authentication failed.")
        _succeeded(request, account)
        if row["status"] != PartnerStatus.VERIFIED:
            return _oauth_error(400, "invalid_grant", f"The partner is {row['status']}.")
        roles = ["partner"] + (["school"] if row["kind"] in domain.SCHOOL_KINDS else [])
        access, ttl = await issuer.issue(
            pool, subject=client_id, partner_id=str(row["partner_id"]), roles=roles
        )
        await store.touch_client(pool, client_id)
    elif grant == "password":
        username, password = form.get("username"), form.get("password")
        if not username or not password:
            return _oauth_error(400, "invalid_request", "username and password are required.")
        account = f"staff:{username.lower()}"
        _attempt(request, account)
        staff = await store.staff_by_email(pool, username)
        password_hash = staff["password_hash"] if staff else None
        if not await tokens.verify_secret_off_loop(password_hash, password) or staff is None:
            return _oauth_error(400, "invalid_grant", "Wrong username or password.")
        _succeeded(request, account)
        access, ttl = await issuer.issue(
            pool,
            subject=f"staff:{staff['id']}",
            partner_id=None,
            roles=list(staff["roles"]),
            departements=list(staff["departements"]),
            national=staff["national"],
        )
    elif grant is None:
        return _oauth_error(400, "invalid_request", "grant_type is required.")
    else:
        return _oauth_error(400, "unsupported_grant_type", f"{grant!r} is not supported.")
    return JSONResponse(
        {"access_token": access, "token_type": "Bearer", "expires_in": ttl},
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


@credentials.get("/.well-known/jwks.json", summary="The public keys tokens are signed with")
async def jwks(request: Request, pool: Pool) -> JSONResponse:
    keys = await _issuer(request).jwks(pool)
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=300"})
