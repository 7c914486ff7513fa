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
from maillage.common.auth import Caller, CurrentCaller, require_role
from maillage.common.catalog import (
    CordeeOfferClosed,
    CordeeOfferOpened,
    CordeeOfferUpdated,
    MatchRequested,
    MatchWithdrawn,
    PairingEnded,
    PairingEstablished,
)
from maillage.common.db import transaction
from maillage.common.http import Pool
from maillage.common.outbox import publish
from maillage.common.problems import Problem
from maillage.cordees import domain, matcher, store
from maillage.cordees.domain import PriorityClass

router = APIRouter()

STAFF_ROLES = frozenset({"operator", "admin"})
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
    capacity: int = Field(ge=1, le=1000, description="How many schools it can take (encordés)")
    levels: list[Level] = Field(min_length=1, max_length=5)
    thematics: list[Thematic] = Field(min_length=1, max_length=len(Thematic))
    max_distance_km: float | None = Field(default=None, gt=0, le=1000)
    academies: list[Annotated[str, Field(max_length=2, pattern=_ACADEMIE)]] = Field(
        default_factory=list, max_length=40
    )

    _year = field_validator("school_year")(_school_year)
    _academie_codes = field_validator("academies")(_academies)


class OfferChanges(BaseModel):
    """What a tête may change of an open offer; a field left out stays as it is. The capacity
    never goes below the schools already encordés."""

    model_config = ConfigDict(extra="forbid")
    capacity: int = Field(default=None, ge=1, le=1000, json_schema_extra=_omittable)
    levels: list[Level] = Field(
        default=None, min_length=1, max_length=5, json_schema_extra=_omittable
    )
    thematics: list[Thematic] = Field(
        default=None, min_length=1, max_length=len(Thematic), json_schema_extra=_omittable
    )
    max_distance_km: float | None = Field(default=None, gt=0, le=1000)
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
    max_distance_km: float | None = Field(default=None, gt=0, le=1000)

    _year = field_validator("school_year")(_school_year)


class ScorePart(BaseModel):
    name: str
    points: int
    reason: str


class Explanation(BaseModel):
    """Why this offer: distance, priority class, thematic overlap, places left, the score and
    its parts (which sum to the score)."""

    offer_id: uuid.UUID
    tete_partner_id: uuid.UUID
    score: int
    distance_km: float
    priority_class: str
    thematics: str
    remaining_capacity: int
    parts: list[ScorePart]


class Proposal(BaseModel):
    rank: int = Field(description="1 for the first proposal, 2 after one decline…")
    explanation: Explanation
    alternatives: list[Explanation] = Field(description="The next best candidates, in order")
    campaign_id: uuid.UUID | None = Field(description="The campaign that proposed it, if any")


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


class CampaignSummary(BaseModel):
    requests: int = Field(description="Waiting requests in scope")
    proposed: int
    coverage: dict[str, CoverageByClass] = Field(description="By priority class")
    total_distance_km: float
    objective: int = Field(description="Priority-weighted coverage minus distance (see docs)")
    solve_ms: float


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
        description="Where the national objective stands: every REP+ collège first, then every "
        "REP collège"
    )
    uncovered_rep_plus: list[UncoveredCollege] = Field(
        description="The REP+ collèges in scope not encordé this school year, by UAI"
    )


# --- helpers ------------------------------------------------------------------------------------

_FORBIDDEN: dict[int | str, dict[str, Any]] = {403: {"description": "Not for this caller"}}


# What a 404 names, in French: (title, detail's start).
_NAMES = {
    "offer": ("Offre introuvable", "Aucune offre"),
    "match request": ("Demande introuvable", "Aucune demande de cordée"),
    "pairing": ("Cordée introuvable", "Aucune cordée"),
    "campaign": ("Campagne introuvable", "Aucune campagne"),
}


def _not_found(what: str, identifier: uuid.UUID) -> Problem:
    title, none = _NAMES[what]
    return Problem(
        404, f"{what.replace(' ', '_')}_not_found", title, detail=f"{none} {identifier}."
    )


def _forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Accès refusé", detail=detail)


def _conflict(code: str, title: str, detail: str, **extensions: Any) -> Problem:
    return Problem(409, code, title, detail=detail, **extensions)


def _caller_partner(caller: Caller) -> uuid.UUID | None:
    try:
        return uuid.UUID(caller.partner_id) if caller.partner_id else None
    except ValueError:
        return None


async def _acting_partner(
    connection: asyncpg.Connection | asyncpg.Pool,
    caller: Caller,
    kinds: frozenset[str],
    role: str,
    what: str,
) -> dict[str, Any]:
    """The caller's partner from the read model: it must hold ``role``, be of one of ``kinds``
    and be verified (a suspended or rejected partner cannot act)."""
    partner_id = _caller_partner(caller)
    if partner_id is None or not caller.has_role(role):
        raise _forbidden(f"Réservé à un {what} (rôle {role}, avec son partner_id).")
    partner = await store.get_partner(connection, partner_id)
    if partner is None or partner["kind"] not in kinds:
        raise _forbidden(f"Votre partenaire n'est pas connu ici comme {what}.")
    if partner["status"] != "verified":
        raise _forbidden(
            f"Votre partenaire a le statut {partner['status']} : seuls les partenaires vérifiés "
            "agissent."
        )
    return partner


async def _tete(connection: asyncpg.Connection | asyncpg.Pool, caller: Caller) -> dict[str, Any]:
    return await _acting_partner(
        connection, caller, matcher.TETE_KINDS, "partner", "tête de cordée"
    )


async def _school(connection: asyncpg.Connection | asyncpg.Pool, caller: Caller) -> dict[str, Any]:
    return await _acting_partner(
        connection, caller, matcher.SCHOOL_KINDS, "school", "collège ou lycée"
    )


def _offer_facts(offer: dict[str, Any]) -> dict[str, Any]:
    return {
        "offer_id": offer["id"],
        "tete_partner_id": offer["tete_partner_id"],
        "school_year": offer["school_year"],
        "capacity": offer["capacity"],
        "levels": tuple(offer["levels"]),
        "thematics": tuple(offer["thematics"]),
        "max_distance_km": offer["max_distance_km"],
        "academies": tuple(offer["academies"]),
        "status": offer["status"],
        "version": offer["version"],
    }


def _offer_out(offer: dict[str, Any]) -> dict[str, Any]:
    return {**offer, "remaining": max(offer["capacity"] - offer["encordes"], 0)}


def _request_out(request: dict[str, Any]) -> dict[str, Any]:
    return {
        **request,
        "priority_class": matcher.PRIORITY_NAMES[PriorityClass(request["priority"])],
        "proposal": request["proposal"] if request["status"] == "proposed" else None,
    }


def _request_facts(request: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "request_id": request["id"],
        "school_partner_id": request["school_partner_id"],
        "school_year": request["school_year"],
        "status": status,
        "priority_class": matcher.PRIORITY_NAMES[PriorityClass(request["priority"])],
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
    tete = await _tete(pool, caller)
    if tete["latitude"] is None or tete["longitude"] is None:
        raise _conflict(
            "tete_location_unknown",
            "Position inconnue",
            "Donnez d'abord vos coordonnées au registre : les distances se mesurent depuis elles.",
        )
    claimed = await _creating(request, pool, caller, body)
    if isinstance(claimed, JSONResponse):
        return claimed
    try:
        async with transaction(pool) as connection:
            offer = await store.insert_offer(
                connection,
                {
                    "id": uuid.uuid4(),
                    "tete_partner_id": tete["partner_id"],
                    "school_year": body.school_year,
                    "capacity": body.capacity,
                    "levels": sorted({level.value for level in body.levels}),
                    "thematics": sorted({thematic.value for thematic in body.thematics}),
                    "max_distance_km": body.max_distance_km,
                    "academies": body.academies,
                },
            )
            await publish(connection, CordeeOfferOpened(**_offer_facts(offer)))
            # Nothing is proposed to a new offer yet: no rebalance; waiting requests go to the
            # next campaign (decision 26).
            offer = await store.get_offer(connection, offer["id"])
            assert offer is not None
            out = Offer(**_offer_out(offer)).model_dump(mode="json")
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
        raise _not_found("offer", offer_id)
    return _offer_out(offer)


async def _own_open_offer(
    connection: asyncpg.Connection, caller: Caller, offer_id: uuid.UUID
) -> dict[str, Any]:
    """The caller's offer, locked; 403 for another tête's, 409 when closed."""
    tete = await _tete(connection, caller)
    offer = await store.get_offer(connection, offer_id, for_update=True)
    if offer is None:
        raise _not_found("offer", offer_id)
    if offer["tete_partner_id"] != tete["partner_id"]:
        raise _forbidden("Une tête de cordée ne modifie que ses propres offres.")
    if offer["status"] != "open":
        raise _conflict("offer_closed", "Offre fermée", "Une offre fermée ne change plus.")
    return offer


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
    values = changes.model_dump(exclude_unset=True, mode="json")
    if not values:
        raise Problem(
            422, "nothing_to_change", "Rien à modifier", detail="Envoyez au moins un champ."
        )
    for name in ("levels", "thematics"):
        if name in values:
            values[name] = sorted(set(values[name]))
    async with transaction(pool) as connection:
        offer = await _own_open_offer(connection, caller, offer_id)
        if values.get("capacity", offer["capacity"]) < offer["encordes"]:
            raise _conflict(
                "capacity_below_encordes",
                "Places en dessous des encordés",
                f"{offer['encordes']} établissements sont encordés avec cette offre : mettez "
                "d'abord fin à des cordées.",
                encordes=offer["encordes"],
            )
        offer = await store.update_offer(connection, offer_id, values)
        await publish(connection, CordeeOfferUpdated(**_offer_facts(offer)))
        await matcher.rebalance(connection, offer_id)
        offer = await store.get_offer(connection, offer_id)
        assert offer is not None
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
        await _own_open_offer(connection, caller, offer_id)
        offer = await store.close_offer(connection, offer_id)
        await publish(connection, CordeeOfferClosed(**_offer_facts(offer)))
        await matcher.rebalance(connection, offer_id)
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
    body: NewMatchRequest, request: Request, caller: CurrentCaller, pool: Pool
) -> JSONResponse:
    # One connection for the whole request: the caller's school, the key's claim (committed at
    # once, so a concurrent retry sees it in progress), then the request's transaction.
    async with pool.acquire() as connection:
        partner = await _school(connection, caller)
        school = matcher.school_of(partner)
        if school is None:
            raise _conflict(
                "school_location_unknown",
                "Position inconnue",
                "Les coordonnées de l'établissement sont inconnues : le registre les tient de "
                "l'Annuaire de l'éducation.",
            )
        claimed = await _creating(request, connection, caller, body)
        if isinstance(claimed, JSONResponse):
            return claimed
        try:
            async with connection.transaction():
                match = await store.insert_request(
                    connection,
                    {
                        "id": uuid.uuid4(),
                        "school_partner_id": school.partner_id,
                        "school_year": body.school_year,
                        "thematics": sorted({thematic.value for thematic in body.thematics}),
                        "max_distance_km": body.max_distance_km,
                        "priority": int(school.priority),
                    },
                )
                await publish(
                    connection,
                    MatchRequested(
                        **_request_facts(match, "requested"),
                        thematics=tuple(match["thematics"]),
                        max_distance_km=match["max_distance_km"],
                    ),
                )
                # Matching runs in the request's transaction: the status URL never shows a
                # request the matcher has not seen.
                match = await matcher.propose_best(connection, match, school)
                out = MatchRequestOut(**_request_out(match)).model_dump(mode="json")
                await idempotency.remember(connection, claimed, 202, out)
        except BaseException:
            await idempotency.release(pool, claimed)
            raise
    return JSONResponse(
        out, status_code=202, headers={"Location": f"/match-requests/{match['id']}"}
    )


async def _visible_request(
    connection: asyncpg.Connection | asyncpg.Pool, caller: Caller, request_id: uuid.UUID
) -> dict[str, Any]:
    """A request its school, the tête of the offer it names, and operators may see."""
    match = await store.get_request(connection, request_id)
    if match is None:
        raise _not_found("match request", request_id)
    if caller.roles & STAFF_ROLES:
        return match
    partner_id = _caller_partner(caller)
    if partner_id is not None and partner_id == match["school_partner_id"]:
        return match
    if partner_id is not None and match["offer_id"] is not None:
        offer = await store.get_offer(connection, match["offer_id"])
        if offer is not None and offer["tete_partner_id"] == partner_id:
            return match
    raise _forbidden(
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
    partner_id = None if caller.roles & STAFF_ROLES else _caller_partner(caller)
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
    page["items"] = [_request_out(match) for match in page["items"]]
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
    return _request_out(await _visible_request(pool, caller, request_id))


_PROPOSAL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_FORBIDDEN,
    404: {"description": "No such request"},
    409: {
        "description": "The request is not proposed to your offer (any more), the offer is "
        "full, or the school is already encordé with it"
    },
}


async def _proposed_to_caller(
    connection: asyncpg.Connection, caller: Caller, request_id: uuid.UUID
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request, and the offer proposed to it, both locked (the offer first), after checking
    that the caller is that offer's verified tête de cordée."""
    tete = await _tete(connection, caller)
    match = await store.get_request(connection, request_id)
    if match is None:
        raise _not_found("match request", request_id)
    offer = None
    if match["offer_id"] is not None:
        offer = await store.get_offer(connection, match["offer_id"], for_update=True)
    if offer is None or offer["tete_partner_id"] != tete["partner_id"]:
        raise _forbidden("Seule la tête de cordée proposée répond à une proposition.")
    match = await store.get_request(connection, request_id, for_update=True)
    assert match is not None
    if match["status"] != "proposed" or match["offer_id"] != offer["id"]:
        raise _conflict(
            "not_proposed",
            "Pas proposée à votre offre",
            f"La demande a le statut {match['status']} : elle n'est plus proposée à cette offre.",
            request_status=match["status"],
        )
    return match, offer


@router.post(
    "/match-requests/{request_id}/accept",
    response_model=Pairing,
    tags=["match requests"],
    summary="Accept the school proposed to your offer: they are paired (within capacity)",
    responses=_PROPOSAL_RESPONSES,
)
async def accept_match(request_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    async with transaction(pool) as connection:
        match, offer = await _proposed_to_caller(connection, caller, request_id)
        if offer["encordes"] >= offer["capacity"]:  # under the offer's row lock
            raise _conflict(
                "offer_full",
                "Offre complète",
                "L'offre n'a plus de place.",
                capacity=offer["capacity"],
            )
        if offer["id"] in await store.offers_paired_with(connection, match["school_partner_id"]):
            raise _conflict(
                "already_encorde",
                "Déjà encordé",
                "L'établissement est déjà encordé avec cette offre (par une autre demande).",
            )
        pairing = await store.insert_pairing(
            connection,
            {
                "id": uuid.uuid4(),
                "request_id": match["id"],
                "offer_id": offer["id"],
                "tete_partner_id": offer["tete_partner_id"],
                "school_partner_id": match["school_partner_id"],
                "school_year": match["school_year"],
            },
        )
        await store.set_request_state(
            connection,
            match["id"],
            status="established",
            offer_id=offer["id"],
            proposal=match["proposal"],
        )
        await publish(connection, PairingEstablished(**matcher.pairing_facts(pairing)))
        await matcher.rebalance(connection, offer["id"])
    return pairing


@router.post(
    "/match-requests/{request_id}/decline",
    response_model=MatchRequestOut,
    tags=["match requests"],
    summary="Decline the school proposed to your offer: its next candidate is proposed",
    responses=_PROPOSAL_RESPONSES,
)
async def decline_match(request_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    async with transaction(pool) as connection:
        match, _ = await _proposed_to_caller(connection, caller, request_id)
        match = await matcher.move_on(connection, match, declined=True)
    return _request_out(match)


@router.post(
    "/match-requests/{request_id}/withdraw",
    response_model=MatchRequestOut,
    tags=["match requests"],
    summary="Withdraw your request (not once paired: end the pairing instead)",
    responses={
        **_FORBIDDEN,
        404: {"description": "No such request"},
        409: {"description": "Already withdrawn, or paired"},
    },
)
async def withdraw_match(
    request_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        school = await _school(connection, caller)
        match = await store.get_request(connection, request_id, for_update=True)
        if match is None:
            raise _not_found("match request", request_id)
        if match["school_partner_id"] != school["partner_id"]:
            raise _forbidden("Un établissement ne retire que ses propres demandes.")
        if match["status"] in ("withdrawn", "established"):
            raise _conflict(
                "not_withdrawable",
                "Retrait impossible",
                f"La demande a le statut {match['status']}.",
                request_status=match["status"],
            )
        offer = await store.get_offer(connection, match["offer_id"]) if match["offer_id"] else None
        withdrawn = await store.set_request_state(connection, match["id"], status="withdrawn")
        await publish(
            connection,
            MatchWithdrawn(
                **_request_facts(withdrawn, "withdrawn"),
                offer_id=offer["id"] if offer else None,
                tete_partner_id=offer["tete_partner_id"] if offer else None,
            ),
        )
    return _request_out(withdrawn)


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
    partner_id = None if caller.roles & STAFF_ROLES else _caller_partner(caller)
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


async def _visible_pairing(
    connection: asyncpg.Connection | asyncpg.Pool,
    caller: Caller,
    pairing_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> dict[str, Any]:
    pairing = await store.get_pairing(connection, pairing_id, for_update=for_update)
    if pairing is None:
        raise _not_found("pairing", pairing_id)
    partner_id = _caller_partner(caller)
    sides = (pairing["tete_partner_id"], pairing["school_partner_id"])
    if partner_id not in sides and not caller.roles & STAFF_ROLES:
        raise _forbidden(
            "Une cordée n'est visible que de sa tête de cordée, de son établissement et des "
            "opérateurs."
        )
    return pairing


@router.get(
    "/pairings/{pairing_id}",
    response_model=Pairing,
    tags=["pairings"],
    summary="One pairing",
    responses={**_FORBIDDEN, 404: {"description": "No such pairing"}},
)
async def get_pairing(pairing_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    return await _visible_pairing(pool, caller, pairing_id)


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
        pairing = await _visible_pairing(connection, caller, pairing_id)
        partner_id = _caller_partner(caller)
        if partner_id == pairing["tete_partner_id"]:
            await _tete(connection, caller)
            reason = "tete_request"
        elif partner_id == pairing["school_partner_id"]:
            await _school(connection, caller)
            reason = "school_request"
        else:
            raise _forbidden(
                "Seules la tête de cordée ou l'établissement d'une cordée y mettent fin."
            )
        await store.get_offer(connection, pairing["offer_id"], for_update=True)  # offer first
        pairing = await _visible_pairing(connection, caller, pairing_id, for_update=True)
        if pairing["status"] != "active":
            raise _conflict("pairing_ended", "Déjà terminée", "Cette cordée a pris fin.")
        pairing = await store.end_pairing(connection, pairing_id, reason)
        await publish(connection, PairingEnded(**matcher.pairing_facts(pairing), reason=reason))
        await matcher.rebalance(connection, pairing["offer_id"])  # a place is free again
    return pairing


@router.post(
    "/pairings/end-of-school-year",
    response_model=EndedPairings,
    tags=["pairings"],
    summary="End every pairing of a finished school year (operators; safe to repeat)",
    responses=_FORBIDDEN,
)
async def end_finished_school_years(
    caller: Annotated[Caller, require_role("operator", "admin")], pool: Pool
) -> dict[str, Any]:
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
    scope: CampaignScope,
    request: Request,
    caller: Annotated[Caller, require_role("operator", "admin")],
    pool: Pool,
) -> JSONResponse:
    claimed = await _creating(request, pool, caller, scope)
    if isinstance(claimed, JSONResponse):
        return claimed
    try:
        async with transaction(pool) as connection:
            campaign_id = uuid.uuid4()
            summary = await matcher.run_campaign(
                connection, campaign_id, departement=scope.departement, academie=scope.academie
            )
            campaign = await store.insert_campaign(
                connection, campaign_id, scope.model_dump(), summary, caller.subject
            )
            out = Campaign(**campaign).model_dump(mode="json")
            await idempotency.remember(connection, claimed, 201, out)
    except BaseException:
        await idempotency.release(pool, claimed)
        raise
    return JSONResponse(out, status_code=201, headers={"Location": f"/campaigns/{campaign_id}"})


@router.get(
    "/campaigns/{campaign_id}",
    response_model=Campaign,
    tags=["campaigns"],
    summary="A campaign's scope and result (operators)",
    responses={**_FORBIDDEN, 404: {"description": "No such campaign"}},
)
async def get_campaign(
    campaign_id: uuid.UUID,
    caller: Annotated[Caller, require_role("operator", "admin")],
    pool: Pool,
) -> dict[str, Any]:
    campaign = await store.get_campaign(pool, campaign_id)
    if campaign is None:
        raise _not_found("campaign", campaign_id)
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
        objective = "no REP+ or REP collège in the reference data for this scope"
    elif uncovered:
        objective = f"every REP+ collège: {len(uncovered)} still to encorder"
    elif any(not s["encorde"] for s in rep):
        objective = "every REP+ collège is encordé; next, every REP collège"
    else:
        objective = "met: every REP+ and REP collège is encordé"
    return {
        "scope": {"departement": departement, "academie": academie},
        "school_year": year,
        "rep_plus": _share(rep_plus),
        "rep": _share(rep),
        "objective": objective,
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
