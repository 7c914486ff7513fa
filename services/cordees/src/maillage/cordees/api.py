"""HTTP routes of the cordees service: cordée offers, match requests, pairings, campaigns and
coverage.

Who may do what, checked against the read model of partners (``consumers``), so a partner the
registry suspended or rejected can no longer act:

- a verified tête de cordée (an établissement supérieur, or a lycée with CPGE/STS: token role
  ``partner``) opens, changes and closes its offers, and accepts or declines what is proposed
  to them;
- a verified collège or lycée (role ``school``) requests a match, withdraws it, sees its own;
- either side of a pairing sees it and may end it; operators see everything, run campaigns and
  end the pairings of finished school years;
- offers and coverage are public facts: any authenticated caller reads them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from maillage.common import idempotency, pagination
from maillage.common.auth import (
    Caller,
    CurrentCaller,
    StandingReadByRoute,
    check_standing,
    require_role,
)
from maillage.common.db import transaction
from maillage.common.http import Pool
from maillage.common.kinds import Bool, Float, Int
from maillage.cordees import domain, matcher, store, usecases
from maillage.cordees.domain import PriorityClass

router = APIRouter()

STAFF_ROLES = usecases.STAFF_ROLES
_DEPARTEMENT = r"^(0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-6])$"
_ACADEMIE = r"^[0-9]{2}$"
_SCHOOL_YEAR = r"^[0-9]{4}-[0-9]{4}$"


class Level(StrEnum):
    QUATRIEME = "4e"
    TROISIEME = "3e"
    SECONDE = "2nde"
    PREMIERE = "1re"
    TERMINALE = "terminale"


class Thematic(StrEnum):
    """The fixed vocabulary of cordée thematics."""

    SCIENCES = "sciences"
    NUMERIQUE = "numerique"
    INGENIERIE = "ingenierie"
    SANTE = "sante"
    DROIT = "droit"
    ECONOMIE = "economie"
    SERVICE_PUBLIC = "service_public"
    ARTS = "arts"
    LETTRES = "lettres"
    LANGUES = "langues"
    SPORT = "sport"
    ENVIRONNEMENT = "environnement"
    CITOYENNETE = "citoyennete"


assert {level.value for level in Level} == set(domain.LEVELS)


def _school_year(value: str) -> str:
    if not matcher.is_school_year(value):
        raise ValueError("Une année scolaire s'écrit avec deux années consécutives : 2026-2027.")
    if value < matcher.school_year_of(date.today()):
        raise ValueError(f"L'année scolaire {value} est terminée.")
    return value


def _academies(values: list[str]) -> list[str]:
    unknown = sorted(set(values) - set(domain.ACADEMIE_OF_DEPARTEMENT.values()))
    if unknown:
        raise ValueError(f"Code académie inconnu : {', '.join(unknown)}.")
    return sorted(set(values))


def _omittable(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class NewOffer(BaseModel):
    """A cordée offer. Territory: within `max_distance_km` of the tête, or in one of
    `academies` (codes académie, "24" Créteil); with neither, the whole country."""

    model_config = ConfigDict(extra="forbid")
    school_year: str = Field(max_length=9, pattern=_SCHOOL_YEAR, examples=["2026-2027"])
    capacity: Int = Field(ge=1, le=1000, description="How many schools it can take (encordés)")
    levels: list[Level] = Field(min_length=1, max_length=5)
    thematics: list[Thematic] = Field(min_length=1, max_length=len(Thematic))
    max_distance_km: Float | None = Field(default=None, gt=0, le=1000)
    academies: list[Annotated[str, Field(max_length=2, pattern=_ACADEMIE)]] = Field(
        default_factory=list, max_length=40
    )

    _year = field_validator("school_year")(_school_year)
    _academie_codes = field_validator("academies")(_academies)


class OfferChanges(BaseModel):
    """What a tête may change of an open offer; a field left out stays as it is. The capacity
    never goes below the schools already encordés."""

    model_config = ConfigDict(extra="forbid")
    capacity: Int = Field(default=None, ge=1, le=1000, json_schema_extra=_omittable)
    levels: list[Level] = Field(
        default=None, min_length=1, max_length=5, json_schema_extra=_omittable
    )
    thematics: list[Thematic] = Field(
        default=None, min_length=1, max_length=len(Thematic), json_schema_extra=_omittable
    )
    max_distance_km: Float | None = Field(default=None, gt=0, le=1000)
    academies: list[Annotated[str, Field(max_length=2, pattern=_ACADEMIE)]] = Field(
        default=None, max_length=40, json_schema_extra=_omittable
    )

    _academie_codes = field_validator("academies")(_academies)


class Offer(BaseModel):
    id: uuid.UUID
    tete_partner_id: uuid.UUID
    school_year: str
    capacity: int
    encordes: int = Field(description="Schools paired with this offer now")
    remaining: int = Field(description="Places left")
    status: str = Field(description="open or closed")
    levels: list[str]
    thematics: list[str]
    max_distance_km: float | None
    academies: list[str]
    version: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


class OfferPage(BaseModel):
    items: list[Offer]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class NewMatchRequest(BaseModel):
    """A school asks for a cordée: the thematics it wishes (none: any) and how far it goes."""

    model_config = ConfigDict(extra="forbid")
    school_year: str = Field(max_length=9, pattern=_SCHOOL_YEAR, examples=["2026-2027"])
    thematics: list[Thematic] = Field(default_factory=list, max_length=len(Thematic))
    max_distance_km: Float | None = Field(default=None, gt=0, le=1000)

    _year = field_validator("school_year")(_school_year)


class ScorePart(BaseModel):
    name: str = Field(description="Stable code: priority, distance, thematics or capacity")
    points: int
    reason: str = Field(description="Why, in French: « collège REP+ (priorité nationale) »")


class Explanation(BaseModel):
    """Why this offer: the stable facts (priority class, distance, thematics covered, places
    left, the score and its parts, which sum to the score) and the same in French words
    (`reasons`, each part's `reason`)."""

    offer_id: uuid.UUID
    tete_partner_id: uuid.UUID
    score: int
    distance_km: float
    priority_class: str = Field(description="REP+, REP, QPV_OR_RURAL or OTHER")
    thematics_covered: list[str] = Field(
        default_factory=list, description="The wished thematics the offer covers"
    )
    remaining_capacity: int = Field(description="Places left (capacity minus encordés)")
    reasons: list[str] = Field(
        default_factory=list,
        description="In French: « collège REP+ (priorité nationale) », « à 5,2 km »…",
    )
    parts: list[ScorePart]


class Proposal(BaseModel):
    rank: int = Field(description="1 for the first proposal, 2 after the first move…")
    explanation: Explanation
    alternatives: list[Explanation] = Field(description="The next best candidates, in order")
    campaign_id: uuid.UUID | None = Field(description="The campaign that proposed it, if any")
    reason: str = Field(
        default="request_filed",
        description="Stable code of what made the live flow propose it (matcher.MATCH_REASONS): "
        "request_filed, declined, expired, request_withdrawn, accepted, offer_opened, "
        "offer_changed, offer_closed, pairing_ended, partner_changed, campaign",
    )
    reason_text: str | None = Field(default=None, description="The same, in French")
    objective: str | None = Field(
        default=None, description="The rule proposals follow, in French (REP+ first…)"
    )
    expires_at: datetime | None = Field(
        default=None,
        description=f"Unanswered by then ({matcher.PROPOSAL_DAYS} days), the proposal counts "
        "as declined and the request moves on",
    )


class MatchRequestOut(BaseModel):
    id: uuid.UUID
    school_partner_id: uuid.UUID
    school_year: str
    thematics: list[str]
    max_distance_km: float | None
    priority_class: str = Field(description="REP+, REP, QPV_OR_RURAL or OTHER")
    status: str = Field(description="requested, proposed, unmatched, withdrawn or established")
    offer_id: uuid.UUID | None = Field(description="The offer proposed, or paired with")
    proposal: Proposal | None
    declined_offer_ids: list[uuid.UUID]
    created_at: datetime
    updated_at: datetime


class MatchRequestPage(BaseModel):
    items: list[MatchRequestOut]
    next_cursor: str | None


class Pairing(BaseModel):
    id: uuid.UUID
    request_id: uuid.UUID
    offer_id: uuid.UUID
    tete_partner_id: uuid.UUID
    school_partner_id: uuid.UUID
    school_year: str
    status: str = Field(description="active or ended")
    established_at: datetime
    ended_at: datetime | None
    end_reason: str | None = Field(description="school_year_end, tete_request or school_request")


class PairingPage(BaseModel):
    items: list[Pairing]
    next_cursor: str | None


class EndedPairings(BaseModel):
    school_year: str = Field(description="The current school year; earlier ones are over")
    ended: int


class CampaignScope(BaseModel):
    """One département, one académie, or (neither) the whole country."""

    model_config = ConfigDict(extra="forbid")
    departement: str | None = Field(
        default=None, max_length=3, pattern=_DEPARTEMENT, examples=["94"]
    )
    academie: str | None = Field(default=None, max_length=2, pattern=_ACADEMIE, examples=["24"])
    dry_run: Bool = Field(
        default=False, description="Show the optimum and the moves it would make; change nothing"
    )

    @model_validator(mode="after")
    def _one_scope(self) -> CampaignScope:
        if self.departement is not None and self.academie is not None:
            raise ValueError("Une campagne couvre un département ou une académie, pas les deux.")
        if self.academie is not None:
            _academies([self.academie])
        return self


class CoverageByClass(BaseModel):
    requested: int
    served: int


class CampaignMove(BaseModel):
    request_id: uuid.UUID
    priority_class: str
    from_offer_id: uuid.UUID | None = Field(description="The offer proposed before, if any")
    to_offer_id: uuid.UUID | None = Field(description="The offer proposed in the optimum")


class CampaignSummary(BaseModel):
    requests: int = Field(description="Requests in scope waiting for a cordée (proposed or not)")
    proposed: int = Field(description="Of which proposed an offer in the optimum")
    coverage: dict[str, CoverageByClass] = Field(description="By priority class")
    total_distance_km: float
    objective: int = Field(description="Priority-weighted coverage minus distance (see docs)")
    solve_ms: float
    dry_run: bool = False
    changes: int = Field(
        default=0,
        description="Requests whose proposal the optimum changes: none when the live flow is up "
        "to date",
    )
    moves: list[CampaignMove] = Field(
        default_factory=list, description=f"The changes (the first {usecases.MOVES_SHOWN})"
    )


class Campaign(BaseModel):
    id: uuid.UUID
    scope: dict[str, str | None]
    summary: CampaignSummary
    created_at: datetime


class UncoveredCollege(BaseModel):
    uai: str
    name: str = Field(description="As the Annuaire de l'éducation names it")
    commune_code: str | None = Field(description="Code commune INSEE")
    commune_name: str | None
    registered: bool = Field(
        description="Whether the collège registered in Maillage (rejected registrations do not "
        "count): the others are the ones to reach first"
    )
    partner_id: uuid.UUID | None = Field(description="Its partner id when registered")


class ShareOf(BaseModel):
    colleges: int = Field(description="Collèges of the reference in scope, registered or not")
    encordes: int = Field(description="Of which encordés this school year")
    share: float | None = Field(description="encordés / colleges; null when there are none")


class CoverageReport(BaseModel):
    scope: dict[str, str | None]
    school_year: str
    rep_plus: ShareOf
    rep: ShareOf
    objective: str = Field(
        description="Where the national objective stands, in French: every REP+ collège first, "
        "then every REP collège"
    )
    objective_code: str = Field(
        description="The same as a stable code: no_reference (no REP+ or REP collège in the "
        "reference for the scope), rep_plus (REP+ collèges still to encorder), rep (every REP+ "
        "one is encordé, REP ones still to), met"
    )
    uncovered_rep_plus: list[UncoveredCollege] = Field(
        description="The REP+ collèges in scope not encordé this school year, by UAI"
    )


# --- helpers ------------------------------------------------------------------------------------

_FORBIDDEN: dict[int | str, dict[str, Any]] = {403: {"description": "Not for this caller"}}
Operator = Annotated[Caller, require_role(*STAFF_ROLES)]


def _now() -> datetime:
    return datetime.now(UTC)


def _offer_out(offer: dict[str, Any]) -> dict[str, Any]:
    return {**offer, "remaining": max(offer["capacity"] - offer["encordes"], 0)}


def _match_request_out(match_request: dict[str, Any]) -> dict[str, Any]:
    return {
        **match_request,
        "priority_class": matcher.PRIORITY_NAMES[PriorityClass(match_request["priority"])],
        "proposal": match_request["proposal"] if match_request["status"] == "proposed" else None,
    }


async def _creating(
    request: Request,
    database: asyncpg.Pool | asyncpg.Connection,
    caller: Caller,
    body: BaseModel,
) -> idempotency.IdempotencyKey | JSONResponse | None:
    return await idempotency.claim(
        database, request, f"caller:{caller.subject}", body.model_dump(mode="json")
    )


# --- cordée offers ------------------------------------------------------------------------------


@router.post(
    "/offers",
    status_code=201,
    response_model=Offer,
    tags=["offers"],
    summary="Open a cordée offer (verified têtes de cordée)",
    openapi_extra={"parameters": [idempotency.OPENAPI_PARAMETER]},
    responses={
        **_FORBIDDEN,
        400: {"description": "Invalid Idempotency-Key"},
        409: {
            "description": "The tête has no coordinates, or the Idempotency-Key was used for "
            "another request"
        },
    },
)
async def open_offer(
    body: NewOffer, request: Request, caller: CurrentCaller, pool: Pool
) -> JSONResponse:
    tete = await usecases.acting_tete(pool, caller)
    if tete["latitude"] is None or tete["longitude"] is None:
        raise usecases.tete_location_unknown()
    claimed = await _creating(request, pool, caller, body)
    if isinstance(claimed, JSONResponse):
        return claimed
    try:
        async with transaction(pool) as connection:
            offer = await usecases.open_offer(connection, caller, **body.model_dump(), now=_now())
            opened = await store.get_offer(connection, offer["id"])
            assert opened is not None
            out = Offer(**_offer_out(opened)).model_dump(mode="json")
            await idempotency.remember(connection, claimed, 201, out)
    except BaseException:
        await idempotency.release(pool, claimed)
        raise
    return JSONResponse(out, status_code=201, headers={"Location": f"/offers/{offer['id']}"})


@router.get(
    "/offers",
    response_model=OfferPage,
    tags=["offers"],
    summary="Cordée offers, oldest first (public facts)",
    responses={400: {"description": "Invalid cursor"}},
)
async def list_offers(
    caller: CurrentCaller,
    pool: Pool,
    tete_partner_id: uuid.UUID | None = None,
    school_year: Annotated[str | None, Query(max_length=9, pattern=_SCHOOL_YEAR)] = None,
    status: Annotated[str | None, Query(max_length=16, pattern=r"^(open|closed)$")] = None,
    thematic: Thematic | None = None,
    level: Level | None = None,
    cursor: pagination.Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    rows = await store.list_offers(
        pool,
        tete_partner_id=tete_partner_id,
        school_year=school_year,
        status=status,
        thematic=thematic.value if thematic else None,
        level=level.value if level else None,
        after=pagination.decode_cursor(cursor),
        limit=limit + 1,
    )
    page = pagination.page(rows, limit, "created_at")
    page["items"] = [_offer_out(offer) for offer in page["items"]]
    return page


@router.get(
    "/offers/{offer_id}",
    response_model=Offer,
    tags=["offers"],
    summary="One cordée offer",
    responses={404: {"description": "No such offer"}},
)
async def get_offer(offer_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    offer = await store.get_offer(pool, offer_id)
    if offer is None:
        raise usecases.offer_not_found(offer_id)
    return _offer_out(offer)


_OFFER_CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_FORBIDDEN,
    404: {"description": "No such offer"},
    409: {"description": "The offer is closed, or the capacity is below the encordés"},
}


@router.patch(
    "/offers/{offer_id}",
    response_model=Offer,
    tags=["offers"],
    summary="Change your open offer",
    responses=_OFFER_CHANGE_RESPONSES,
)
async def change_offer(
    offer_id: uuid.UUID, changes: OfferChanges, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        offer = await usecases.change_offer(
            connection,
            caller,
            offer_id,
            changes.model_dump(exclude_unset=True, mode="json"),
            now=_now(),
        )
    return _offer_out(offer)


@router.post(
    "/offers/{offer_id}/close",
    response_model=Offer,
    tags=["offers"],
    summary="Close your offer: no new proposals; established pairings go on",
    responses=_OFFER_CHANGE_RESPONSES,
)
async def close_offer(offer_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    async with transaction(pool) as connection:
        offer = await usecases.close_offer(connection, caller, offer_id, now=_now())
    return _offer_out(offer)


# --- match requests -----------------------------------------------------------------------------


@router.post(
    "/match-requests",
    status_code=202,
    response_model=MatchRequestOut,
    tags=["match requests"],
    summary="Ask for a cordée (verified colleges and lycées); follow the Location",
    openapi_extra={"parameters": [idempotency.OPENAPI_PARAMETER]},
    responses={
        202: {
            "description": "Accepted: the matcher proposes a tête de cordée, or says unmatched",
            "headers": {
                "Location": {
                    "description": "The request's status URL",
                    "schema": {"type": "string"},
                }
            },
        },
        **_FORBIDDEN,
        400: {"description": "Invalid Idempotency-Key"},
        409: {
            "description": "The school has no coordinates, or the Idempotency-Key was used for "
            "another request"
        },
    },
)
async def request_match(
    body: NewMatchRequest, request: Request, caller: StandingReadByRoute, pool: Pool
) -> JSONResponse:
    # One connection for the whole request: the partner's standing (decision 40, read here and
    # not by the dependency: decision 71), the caller's school, the key's claim (committed at
    # once, so a concurrent retry sees it in progress), then the request's transaction.
    async with pool.acquire() as connection:
        await check_standing(request, caller, connection)
        partner = await usecases.acting_school(connection, caller)
        if matcher.school_of(partner) is None:
            raise usecases.school_location_unknown()
        claimed = await _creating(request, connection, caller, body)
        if isinstance(claimed, JSONResponse):
            return claimed
        try:
            async with connection.transaction():
                # Matching runs in the request's transaction: the status URL never shows a
                # request the matcher has not seen.
                match_request = await usecases.request_match(
                    connection, caller, **body.model_dump(), now=_now()
                )
                out = MatchRequestOut(**_match_request_out(match_request)).model_dump(mode="json")
                await idempotency.remember(connection, claimed, 202, out)
        except BaseException:
            await idempotency.release(pool, claimed)
            raise
    return JSONResponse(
        out, status_code=202, headers={"Location": f"/match-requests/{match_request['id']}"}
    )


async def _visible_request(
    connection: asyncpg.Connection | asyncpg.Pool, caller: Caller, request_id: uuid.UUID
) -> dict[str, Any]:
    """A request its school, the tête of the offer it names, and operators may see."""
    match = await store.get_request(connection, request_id)
    if match is None:
        raise usecases.match_request_not_found(request_id)
    if caller.roles & STAFF_ROLES:
        return match
    partner_id = usecases.caller_partner(caller)
    if partner_id is not None and partner_id == match["school_partner_id"]:
        return match
    if partner_id is not None and match["offer_id"] is not None:
        offer = await store.get_offer(connection, match["offer_id"])
        if offer is not None and offer["tete_partner_id"] == partner_id:
            return match
    raise usecases.forbidden(
        "Une demande n'est visible que de son établissement, de la tête de cordée proposée et "
        "des opérateurs."
    )


@router.get(
    "/match-requests",
    response_model=MatchRequestPage,
    tags=["match requests"],
    summary="Your requests (a school), those proposed to you (a tête), or all (operators)",
    responses={400: {"description": "Invalid cursor"}},
)
async def list_match_requests(
    caller: CurrentCaller,
    pool: Pool,
    status: Annotated[
        str | None,
        Query(max_length=16, pattern=r"^(requested|proposed|unmatched|withdrawn|established)$"),
    ] = None,
    school_year: Annotated[str | None, Query(max_length=9, pattern=_SCHOOL_YEAR)] = None,
    cursor: pagination.Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    partner_id = None if caller.roles & STAFF_ROLES else usecases.caller_partner(caller)
    if partner_id is None and not caller.roles & STAFF_ROLES:
        return {"items": [], "next_cursor": None}
    rows = await store.list_requests(
        pool,
        partner_id=partner_id,
        status=status,
        school_year=school_year,
        after=pagination.decode_cursor(cursor),
        limit=limit + 1,
    )
    page = pagination.page(rows, limit, "created_at")
    page["items"] = [_match_request_out(match) for match in page["items"]]
    return page


@router.get(
    "/match-requests/{request_id}",
    response_model=MatchRequestOut,
    tags=["match requests"],
    summary="A request: its status, and the proposal with its explanation and alternatives",
    responses={**_FORBIDDEN, 404: {"description": "No such request"}},
)
async def get_match_request(
    request_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    return _match_request_out(await _visible_request(pool, caller, request_id))


_PROPOSAL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_FORBIDDEN,
    404: {"description": "No such request"},
    409: {
        "description": "The request is not proposed to your offer (any more), the offer is "
        "full, or the school is already encordé with it"
    },
}


@router.post(
    "/match-requests/{request_id}/accept",
    response_model=Pairing,
    tags=["match requests"],
    summary="Accept the school proposed to your offer: they are paired (within capacity)",
    responses=_PROPOSAL_RESPONSES,
)
async def accept_match(request_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    async with transaction(pool) as connection:
        return await usecases.accept_match(connection, caller, request_id, now=_now())


@router.post(
    "/match-requests/{request_id}/decline",
    response_model=MatchRequestOut,
    tags=["match requests"],
    summary="Decline the school proposed to your offer: the year's optimum is solved again",
    responses=_PROPOSAL_RESPONSES,
)
async def decline_match(request_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    async with transaction(pool) as connection:
        match_request = await usecases.decline_match(connection, caller, request_id, now=_now())
    return _match_request_out(match_request)


@router.post(
    "/match-requests/{request_id}/withdraw",
    response_model=MatchRequestOut,
    tags=["match requests"],
    summary="Withdraw your request (not once paired: end the pairing instead)",
    responses={
        **_FORBIDDEN,
        404: {"description": "No such request"},
        409: {"description": "Already withdrawn, or paired (not_withdrawable)"},
    },
)
async def withdraw_match(
    request_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        match_request = await usecases.withdraw_match(connection, caller, request_id, now=_now())
    return _match_request_out(match_request)


# --- pairings -----------------------------------------------------------------------------------


@router.get(
    "/pairings",
    response_model=PairingPage,
    tags=["pairings"],
    summary="Your pairings (as tête or school), or all (operators)",
    responses={400: {"description": "Invalid cursor"}},
)
async def list_pairings(
    caller: CurrentCaller,
    pool: Pool,
    status: Annotated[str | None, Query(max_length=16, pattern=r"^(active|ended)$")] = None,
    school_year: Annotated[str | None, Query(max_length=9, pattern=_SCHOOL_YEAR)] = None,
    cursor: pagination.Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    partner_id = None if caller.roles & STAFF_ROLES else usecases.caller_partner(caller)
    if partner_id is None and not caller.roles & STAFF_ROLES:
        return {"items": [], "next_cursor": None}
    rows = await store.list_pairings(
        pool,
        partner_id=partner_id,
        status=status,
        school_year=school_year,
        after=pagination.decode_cursor(cursor),
        limit=limit + 1,
    )
    return pagination.page(rows, limit, "established_at")


@router.get(
    "/pairings/{pairing_id}",
    response_model=Pairing,
    tags=["pairings"],
    summary="One pairing",
    responses={**_FORBIDDEN, 404: {"description": "No such pairing"}},
)
async def get_pairing(pairing_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    return await usecases.visible_pairing(pool, caller, pairing_id)


@router.post(
    "/pairings/{pairing_id}/end",
    response_model=Pairing,
    tags=["pairings"],
    summary="End a pairing you are part of (the tête or the school)",
    responses={
        **_FORBIDDEN,
        404: {"description": "No such pairing"},
        409: {"description": "Already ended"},
    },
)
async def end_pairing(pairing_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    async with transaction(pool) as connection:
        return await usecases.end_pairing(connection, caller, pairing_id, now=_now())


@router.post(
    "/pairings/end-of-school-year",
    response_model=EndedPairings,
    tags=["pairings"],
    summary="End every pairing of a finished school year (operators; safe to repeat)",
    responses=_FORBIDDEN,
)
async def end_finished_school_years(caller: Operator, pool: Pool) -> dict[str, Any]:
    current = matcher.school_year_of(datetime.now(UTC).date())
    async with transaction(pool) as connection:
        ended = await matcher.end_finished_school_years(connection, current)
    return {"school_year": current, "ended": ended}


# --- campaigns ----------------------------------------------------------------------------------


@router.post(
    "/campaigns",
    status_code=201,
    response_model=Campaign,
    tags=["campaigns"],
    summary="Run a campaign: the optimal assignment of every waiting request in scope",
    openapi_extra={"parameters": [idempotency.OPENAPI_PARAMETER]},
    responses={
        **_FORBIDDEN,
        400: {"description": "Invalid Idempotency-Key"},
        409: {"description": "The Idempotency-Key was used for another request"},
    },
)
async def run_campaign(
    scope: CampaignScope, request: Request, caller: Operator, pool: Pool
) -> JSONResponse:
    claimed = await _creating(request, pool, caller, scope)
    if isinstance(claimed, JSONResponse):
        return claimed
    try:
        async with transaction(pool) as connection:
            campaign = await usecases.run_campaign(
                connection, caller, **scope.model_dump(), now=_now()
            )
            out = Campaign(**campaign).model_dump(mode="json")
            await idempotency.remember(connection, claimed, 201, out)
    except BaseException:
        await idempotency.release(pool, claimed)
        raise
    return JSONResponse(out, status_code=201, headers={"Location": f"/campaigns/{campaign['id']}"})


@router.get(
    "/campaigns/{campaign_id}",
    response_model=Campaign,
    tags=["campaigns"],
    summary="A campaign's scope and result (operators)",
    responses={**_FORBIDDEN, 404: {"description": "No such campaign"}},
)
async def get_campaign(campaign_id: uuid.UUID, caller: Operator, pool: Pool) -> dict[str, Any]:
    campaign = await store.get_campaign(pool, campaign_id)
    if campaign is None:
        raise usecases.campaign_not_found(campaign_id)
    return campaign


# --- coverage -----------------------------------------------------------------------------------


def _share(colleges: list[dict[str, Any]]) -> dict[str, Any]:
    encordes = sum(1 for school in colleges if school["encorde"])
    share = round(encordes / len(colleges), 4) if colleges else None
    return {"colleges": len(colleges), "encordes": encordes, "share": share}


@router.get(
    "/coverage",
    response_model=CoverageReport,
    tags=["coverage"],
    summary="Share of REP+ and REP colleges encordés, against the national objective",
    description="Counts every REP+ and REP collège of the reference data (the Annuaire de "
    "l'éducation and the éducation prioritaire list, as the registry imported them) in the "
    "scope: a département, an académie, or the whole country when neither is given. A collège "
    "is encordé when a partner registered with its UAI has an active pairing in the school "
    "year. Collèges that never registered count as not encordés: they are the ones operators "
    "must reach, and `uncovered_rep_plus` says which are not registered.",
)
async def coverage(
    caller: CurrentCaller,
    pool: Pool,
    departement: Annotated[
        str | None, Query(max_length=3, pattern=_DEPARTEMENT, description="INSEE form: 94, 2A, 971")
    ] = None,
    academie: Annotated[
        str | None,
        Query(max_length=2, pattern=_ACADEMIE, description="Code académie: 24 is Créteil"),
    ] = None,
    school_year: Annotated[
        str | None,
        Query(max_length=9, pattern=_SCHOOL_YEAR, description="Default: the current one"),
    ] = None,
) -> dict[str, Any]:
    year = school_year or matcher.school_year_of(datetime.now(UTC).date())
    schools = await store.coverage(
        pool, school_year=year, departement=departement, academie=academie
    )
    rep_plus = [s for s in schools if s["education_prioritaire"] == "REP+"]
    rep = [s for s in schools if s["education_prioritaire"] == "REP"]
    uncovered = [s for s in rep_plus if not s["encorde"]]
    if not rep_plus and not rep:
        # Not "met": the reference may simply not have been imported for this scope.
        code, objective = (
            "no_reference",
            "aucun collège REP+ ou REP dans les données de référence pour ce périmètre",
        )
    elif uncovered:
        code, objective = (
            "rep_plus",
            f"chaque collège REP+ : encore {len(uncovered)} à encorder",
        )
    elif any(not s["encorde"] for s in rep):
        code, objective = (
            "rep",
            "chaque collège REP+ est encordé ; ensuite, chaque collège REP",
        )
    else:
        code, objective = ("met", "atteint : chaque collège REP+ et REP est encordé")
    return {
        "scope": {"departement": departement, "academie": academie},
        "school_year": year,
        "rep_plus": _share(rep_plus),
        "rep": _share(rep),
        "objective": objective,
        "objective_code": code,
        "uncovered_rep_plus": [
            {
                "uai": s["uai"],
                "name": s["name"],
                "commune_code": s["commune_code"],
                "commune_name": s["commune_name"],
                "registered": s["partner_id"] is not None,
                "partner_id": s["partner_id"],
            }
            for s in uncovered
        ],
    }
