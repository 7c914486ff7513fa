"""HTTP routes of the stages3e service: offers, search, applications, schools' weeks, erasure,
statistics. Request and response models, and thin routes: writes go through `usecases` in one
transaction; reads go to `store`.

Who may do what (checked in the use cases against the read model of partners):

- a verified partner that is not a school (role `partner`) publishes, changes, unpublishes
  and withdraws its offers (also by its own `remote_id`), and answers the applications to
  them (accept, decline, cancel);
- a verified collège (role `school`) searches, applies for its pupils, confirms or withdraws,
  declares its stage weeks, asks for the erasure of its pupils' references;
- offers are public facts to any authenticated caller; an application is visible to its school
  and its host only (404 to anyone else), and the pupil's reference to its school only;
- operators see everything and read statistics (so do verified partners).

Every write is rate limited per caller (429 with `Retry-After`).
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections import OrderedDict
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, cast

import asyncpg
import typing_extensions
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from maillage.common import idempotency, pagination
from maillage.common.auth import Caller, CurrentCaller, require_role
from maillage.common.db import transaction
from maillage.common.http import Pool, ReadConnection
from maillage.common.kinds import Bool, Float, Int, Line, LineOrNone, Prose, ProseOrNone
from maillage.common.problems import Problem
from maillage.common.ratelimit import RATE_LIMITED_RESPONSE, TokenBucket
from maillage.stages3e import domain, store, usecases
from maillage.stages3e.domain import IsoWeek

router = APIRouter()

Operator = Annotated[Caller, require_role(*usecases.STAFF_ROLES)]

_WEEK = r"^[0-9]{4}-W[0-9]{2}$"
_DEPARTEMENT = r"^(0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-6])$"
_ACADEMIE = r"^[0-9]{2}$"
_REMOTE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
MAX_RADIUS_KM = 100.0
DEFAULT_RADIUS_KM = 10.0

Sector = Literal[
    "A", "B", "C", "E", "F", "H", "J", "K", "L", "M", "N", "O", "P", "Q", "R", "S", "T", "U", "V",
    "W",
]  # fmt: skip
assert set(Sector.__args__) == set(domain.SECTORS)  # type: ignore[attr-defined]


def _now(request: Request) -> datetime:
    """The service's one clock (tests move it with `app.state.clock`)."""
    clock = getattr(request.app.state, "clock", None)
    return clock() if clock is not None else datetime.now(UTC)


def _reserved_open_days(request: Request) -> int:
    days: int = request.app.state.runtime.settings.reserved_open_days
    return days


async def _write_limit(request: Request, caller: CurrentCaller) -> None:
    """Writes per caller: the bucket `writes` sized by the composition root."""
    bucket: TokenBucket = request.app.state.rate_limits["writes"]
    wait = bucket.take(caller.subject)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise Problem(
            429,
            "rate_limited",
            "Trop de requêtes",
            detail=f"Trop d'écritures ; réessayez dans {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )


RateLimited = Depends(_write_limit)

# --- models -------------------------------------------------------------------------------------


class WeekSeatsIn(BaseModel):
    """One ISO week of the offer and its seats; `reserved` of them go to pupils of REP+/REP
    collèges or collèges near a QPV until 14 days before the week."""

    model_config = ConfigDict(extra="forbid")
    week: str = Field(
        max_length=8, pattern=_WEEK, examples=["2027-W05"], description="ISO week (week-year)"
    )
    seats: Int = Field(ge=1, le=domain.MAX_SEATS_PER_WEEK)
    reserved: Int = Field(default=0, ge=0, le=domain.MAX_SEATS_PER_WEEK)


class NewOffer(BaseModel):
    """A stage de 3e offer. Where: the coordinates given, else the partner's (from the
    registry). When: ISO weeks of one school year's window (first Monday of September to the
    last Friday of May), not yet begun."""

    model_config = ConfigDict(extra="forbid")
    title: Line = Field(min_length=1, max_length=200)
    description: Prose = Field(min_length=1, max_length=5000)
    sector: Sector = Field(description="ONISEP GFE sector code (A Agriculture … W Droit)")
    address: ProseOrNone = Field(default=None, max_length=300)
    commune_code: str | None = Field(
        default=None,
        max_length=5,
        pattern=r"^([0-9]{5}|2[AB][0-9]{3})$",
        description="Code commune INSEE",
    )
    commune_name: LineOrNone = Field(default=None, max_length=100)
    latitude: Float | None = Field(default=None, ge=-90, le=90)
    longitude: Float | None = Field(default=None, ge=-180, le=180)
    daily_hours: LineOrNone = Field(default=None, max_length=200, examples=["9h-12h, 14h-17h"])
    accessible: Bool = Field(default=False, description="Open to pupils with a disability")
    accessibility: ProseOrNone = Field(default=None, max_length=1000)
    max_candidates: Int | None = Field(
        default=None, ge=1, le=10_000, description="Live applications over the whole offer"
    )
    weeks: list[WeekSeatsIn] = Field(min_length=1, max_length=domain.MAX_WEEKS)

    @model_validator(mode="after")
    def _a_real_place(self) -> NewOffer:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("Donnez latitude et longitude ensemble, ou aucune des deux.")
        if self.latitude == 0 and self.longitude == 0:
            raise ValueError("Les coordonnées 0, 0 ne sont pas un lieu de stage.")
        return self


class OfferWeek(BaseModel):
    week: str
    monday: date
    seats: int
    reserved: int
    held: int = Field(description="Seats held by accepted or confirmed applications")
    free: int = Field(description="Seats the caller may still take (reserved seats included "
                      "only for eligible schools, or once they opened)")  # fmt: skip


class Offer(BaseModel):
    id: uuid.UUID
    partner_id: uuid.UUID
    remote_id: str | None
    title: str
    description: str
    sector: str
    address: str | None
    commune_code: str | None
    commune_name: str | None
    departement: str | None
    latitude: float
    longitude: float
    daily_hours: str | None
    accessible: bool
    accessibility: str | None
    max_candidates: int | None
    school_year: str
    status: str = Field(description="published, unpublished, withdrawn or closed")
    closed_reason: str | None = Field(description="past or full, when closed")
    version: int
    created_at: datetime
    updated_at: datetime
    weeks: list[OfferWeek]
    distance_km: float | None = Field(default=None, description="From the search's point")


class OfferPage(BaseModel):
    items: list[Offer]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


def _fields_of(model: type[BaseModel], **replaced: Any) -> Any:
    """A TypedDict of the model's fields (those of ``replaced`` with another type): pydantic
    serializes a dict through it as it serializes the model, extra keys left out, without
    building the model first."""
    fields = {name: replaced.get(name, f.annotation) for name, f in model.model_fields.items()}
    # typing_extensions': pydantic needs its TypedDict before Python 3.12
    return cast(Any, typing_extensions.TypedDict)(f"{model.__name__}Fields", fields)


_OFFER_PAGE_JSON: TypeAdapter[Any] = TypeAdapter(
    _fields_of(
        OfferPage,
        items=list[_fields_of(Offer, weeks=list[_fields_of(OfferWeek)])],  # type: ignore[misc]
    )
)
"""`GET /offers`'s page written as JSON once, from the dicts the search shapes: the same bytes
as `OfferPage`'s (tests/test_search.py compares them) without FastAPI validating the 20 offers
into models first (docs/performance.md, "second pass")."""


class NewApplication(BaseModel):
    """A school's application for one of its pupils, named by the school's own opaque
    reference (never a name: level 1, kept only here and shown only to the school)."""

    model_config = ConfigDict(extra="forbid")
    offer_id: uuid.UUID
    week: str = Field(max_length=8, pattern=_WEEK, examples=["2027-W05"])
    pupil_reference: str = Field(
        pattern=domain.PUPIL_REFERENCE.pattern,
        max_length=domain.PUPIL_REFERENCE_MAX,
        examples=["3B-07"],
    )


class Application(BaseModel):
    id: uuid.UUID
    offer_id: uuid.UUID
    week: str
    host_partner_id: uuid.UUID
    school_partner_id: uuid.UUID
    school_year: str
    pupil_reference: str | None = Field(description="Shown to its school only; null once erased")
    status: str = Field(
        description="submitted, accepted, confirmed, declined, withdrawn, cancelled or expired"
    )
    reason: str | None
    expires_at: datetime | None = Field(description="When it expires without an answer")
    erased_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ApplicationPage(BaseModel):
    items: list[Application]
    next_cursor: str | None


class Cancellation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Literal["host_unavailable", "safety", "pupil_absent", "other"]


class SchoolWeeks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weeks: list[Annotated[str, Field(max_length=8, pattern=_WEEK)]] = Field(
        max_length=domain.MAX_WEEKS
    )


class ErasureRequest(BaseModel):
    """Erase one pupil's reference, or (null) every reference of the school."""

    model_config = ConfigDict(extra="forbid")
    pupil_reference: str | None = Field(
        default=None, pattern=domain.PUPIL_REFERENCE.pattern, max_length=40
    )


class Erasure(BaseModel):
    erased: int


class WeekStats(BaseModel):
    week: str
    offers: int
    seats: int
    reserved: int
    held: int
    applications: dict[str, int] = Field(description="By status")
    confirmed_rep: int = Field(description="Confirmed stages of pupils of REP+ or REP collèges")
    rep_share: float | None = Field(description="confirmed_rep / confirmed; null when none")


class Stats(BaseModel):
    scope: dict[str, str | None]
    school_year: str
    offers: int
    seats: int
    reserved: int
    confirmed: int
    rep_share: float | None
    weeks: list[WeekStats]


_FORBIDDEN: dict[int | str, dict[str, Any]] = {403: {"description": "Not for this caller"}}
_CREATING: dict[int | str, dict[str, Any]] = {
    **_FORBIDDEN,
    429: RATE_LIMITED_RESPONSE,
    400: {"description": "Invalid Idempotency-Key"},
    409: {"description": "A conflict (the problem's code says which)"},
}

# --- offers -------------------------------------------------------------------------------------


async def _offer_response(
    connection: asyncpg.Connection | asyncpg.Pool,
    offer: dict[str, Any],
    weeks: list[dict[str, Any]],
    caller: Caller,
    request: Request,
) -> dict[str, Any]:
    view = await _seat_view(connection, caller, request)
    return usecases.offer_out(offer, weeks, view)


async def _seat_view(
    connection: asyncpg.Connection | asyncpg.Pool, caller: Caller, request: Request
) -> usecases.SeatView:
    partner_id = usecases.caller_partner_id(caller)
    partner = await store.get_partner(connection, partner_id) if partner_id else None
    return _view_of(partner, caller, request)


class RecentPartners:
    """The read model's partners as searches read them, each kept ``seconds`` (bounded, oldest
    out): a collège paging or refining a search does not read its own record again each time.
    Only searches use it; every write reads the partner again inside its transaction. A change
    of a partner's place or REP status reaches its searches at most ``seconds`` later."""

    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self.seconds = seconds
        self.size = size
        self._kept: OrderedDict[uuid.UUID, tuple[float, store.KnownPartner]] = OrderedDict()

    async def get(
        self, connection: asyncpg.Connection, partner_id: uuid.UUID
    ) -> store.KnownPartner | None:
        now = time.monotonic()
        kept = self._kept.get(partner_id)
        if kept is not None and kept[0] > now:
            return kept[1]
        partner = await store.get_partner(connection, partner_id)
        if partner is None:  # not known yet: not remembered, its event may arrive any moment
            self._kept.pop(partner_id, None)
            return None
        if self.seconds > 0:
            self._kept[partner_id] = (now + self.seconds, partner)
            self._kept.move_to_end(partner_id)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return partner


def _view_of(
    partner: store.KnownPartner | None, caller: Caller, request: Request
) -> usecases.SeatView:
    """A school sees reserved seats as free only when eligible; others see every seat."""
    eligible = True
    if caller.has_role("school"):
        eligible = partner is not None and domain.eligible(
            partner.education_prioritaire, partner.qpv_proximity
        )
    return usecases.SeatView(eligible, _now(request).date(), _reserved_open_days(request))


@router.post(
    "/offers",
    status_code=201,
    response_model=Offer,
    tags=["offers"],
    summary="Publish a stage de 3e offer (verified partners that are not schools)",
    openapi_extra={"parameters": [idempotency.OPENAPI_PARAMETER]},
    responses={**_CREATING, 422: {"description": "Invalid weeks, or no location"}},
    dependencies=[RateLimited],
)
async def publish_offer(
    body: NewOffer, request: Request, caller: CurrentCaller, pool: Pool
) -> JSONResponse:
    async def run(connection: asyncpg.Connection) -> tuple[dict[str, Any], str]:
        offer, weeks = await usecases.publish_offer(
            connection, caller, _now(request).date(), **body.model_dump()
        )
        out = Offer(**await _offer_response(connection, offer, weeks, caller, request))
        return out.model_dump(mode="json"), f"/offers/{offer['id']}"

    return await idempotency.respond(
        request, pool, f"caller:{caller.subject}", body.model_dump(mode="json"), 201, run
    )


def _encode_distance_cursor(distance_m: float, offer_id: uuid.UUID) -> str:
    raw = json.dumps([distance_m, str(offer_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_distance_cursor(cursor: str | None) -> tuple[float, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        distance, offer_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(distance), uuid.UUID(offer_id)
    except (ValueError, TypeError, AttributeError, RecursionError) as error:
        raise Problem(
            400,
            "invalid_cursor",
            "Curseur non valide",
            detail="Reprenez le next_cursor d'une page.",
        ) from error


class SearchQuery(BaseModel):
    """The query of `GET /offers`, validated in one pass (one model rather than nine
    parameters: FastAPI then checks them in one call)."""

    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    radius_km: float = Field(default=DEFAULT_RADIUS_KM, gt=0, le=MAX_RADIUS_KM)
    week: list[Annotated[str, StringConstraints(max_length=8)]] | None = Field(
        default=None, max_length=domain.MAX_WEEKS
    )
    sector: Sector | None = None
    q: str | None = Field(default=None, min_length=2, max_length=100, pattern=r"^[^\x00-\x1f]+$")
    cursor: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=20, ge=1, le=100)


@router.get(
    "/offers",
    response_model=OfferPage,
    tags=["offers"],
    summary="Search offers by distance, week, sector and text, nearest first",
    description="From `latitude`/`longitude`, or from the calling school's own place. Weeks "
    "default to the school's declared weeks (`PUT /schools/me/weeks`), else any week not yet "
    "begun. Only offers with a seat the caller may take in one of those weeks: a school sees "
    "reserved seats only when it is eligible (REP+, REP, QPV) or once they opened. Text matches "
    "title and description, accents and case ignored.",
    responses={400: {"description": "Invalid cursor"}, 422: {"description": "No point"}},
)
async def search_offers(
    request: Request,
    caller: CurrentCaller,
    connection: ReadConnection,
    query: Annotated[SearchQuery, Query()],
) -> Response:
    page = await _search(
        connection, request, caller, query.latitude, query.longitude, query.radius_km,
        query.week, query.sector, query.q, query.cursor, query.limit,
    )  # fmt: skip
    return Response(_OFFER_PAGE_JSON.dump_json(page), media_type="application/json")


async def _search(
    connection: asyncpg.Connection,
    request: Request,
    caller: Caller,
    latitude: float | None,
    longitude: float | None,
    radius_km: float,
    week: list[str] | None,
    sector: str | None,
    q: str | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    partner_id = usecases.caller_partner_id(caller)
    recent: RecentPartners = request.app.state.recent_partners
    partner = await recent.get(connection, partner_id) if partner_id else None
    if latitude is None or longitude is None:
        if partner is None or partner.latitude is None or partner.longitude is None:
            raise Problem(
                422,
                "point_required",
                "Point de recherche manquant",
                detail="Donnez latitude et longitude (votre fiche n'a pas de coordonnées).",
            )
        latitude, longitude = partner.latitude, partner.longitude
    mondays: list[date] | None = None
    if week:
        try:
            mondays = [IsoWeek.parse(text).monday for text in week]
        except ValueError:
            raise Problem(
                422, "invalid_weeks", "Semaines non valides", detail="Semaines ISO : 2027-W05."
            ) from None
    elif partner is not None and caller.has_role("school"):
        mondays = await store.school_mondays(connection, partner.partner_id) or None
    view = _view_of(partner, caller, request)
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") if q else None
    rows = await store.search_offers(
        connection,
        latitude=latitude,
        longitude=longitude,
        radius_m=radius_km * 1000,
        mondays=mondays,
        sector=sector,
        text=escaped,
        school_eligible=view.school_eligible,
        today=view.today,
        reserved_open_days=view.reserved_open_days,
        after=_decode_distance_cursor(cursor),
        limit=limit + 1,
    )
    page = rows[:limit]
    items = [
        {**usecases.offer_out(row, row["weeks"], view), "distance_km": row["distance_m"] / 1000}
        for row in page
    ]
    more = len(rows) > limit
    return {
        "items": items,
        "next_cursor": _encode_distance_cursor(page[-1]["distance_m"], page[-1]["id"])
        if more
        else None,
    }


@router.get(
    "/offers/mine",
    response_model=OfferPage,
    tags=["offers"],
    summary="The calling partner's own offers, every status, oldest first",
    responses={400: {"description": "Invalid cursor"}},
)
async def my_offers(
    request: Request,
    caller: CurrentCaller,
    pool: Pool,
    status: Annotated[
        str | None, Query(max_length=16, pattern=r"^(published|unpublished|withdrawn|closed)$")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    partner_id = usecases.caller_partner_id(caller)
    if partner_id is None:
        return {"items": [], "next_cursor": None}
    rows = await store.list_offers(
        pool,
        partner_id=partner_id,
        status=status,
        after=pagination.decode_cursor(cursor),
        limit=limit + 1,
    )
    page = pagination.page(rows, limit)
    weeks = await store.weeks_of(pool, [row["id"] for row in page["items"]])
    view = await _seat_view(pool, caller, request)
    page["items"] = [
        usecases.offer_out(row, [w for w in weeks if w["offer_id"] == row["id"]], view)
        for row in page["items"]
    ]
    return page


@router.put(
    "/offers/by-remote-id/{remote_id}",
    response_model=Offer,
    tags=["offers"],
    summary="Create or replace your offer by your own id (upsert, scoped to your partner)",
    description="Two partners may use the same `remote_id`: each reaches only its own offer. "
    "201 when created, 200 when replaced; safe to repeat.",
    responses={
        **_FORBIDDEN,
        429: RATE_LIMITED_RESPONSE,
        201: {"description": "Created", "model": Offer},
        409: {"description": "Withdrawn or closed, or below the seats held"},
    },
    dependencies=[RateLimited],
)
async def upsert_offer(
    remote_id: Annotated[str, Path(pattern=_REMOTE_ID, max_length=100)],
    body: NewOffer,
    request: Request,
    caller: CurrentCaller,
    pool: Pool,
) -> JSONResponse:
    async with transaction(pool) as connection:
        offer, weeks, created = await usecases.upsert_offer_by_remote_id(
            connection, caller, remote_id, _now(request).date(), **body.model_dump()
        )
        out = Offer(**await _offer_response(connection, offer, weeks, caller, request))
    return JSONResponse(
        out.model_dump(mode="json"),
        status_code=201 if created else 200,
        headers={"Location": f"/offers/{offer['id']}"},
    )


@router.get(
    "/offers/by-remote-id/{remote_id}",
    response_model=Offer,
    tags=["offers"],
    summary="Your offer by your own id",
    responses={404: {"description": "None of yours under this id"}},
)
async def get_offer_by_remote_id(
    remote_id: Annotated[str, Path(pattern=_REMOTE_ID, max_length=100)],
    request: Request,
    caller: CurrentCaller,
    pool: Pool,
) -> dict[str, Any]:
    partner_id = usecases.caller_partner_id(caller)
    offer = await store.offer_by_remote_id(pool, partner_id, remote_id) if partner_id else None
    if offer is None:
        raise Problem(
            404, "offer_not_found", "Offre introuvable", detail="Aucune de vos offres sous ce id."
        )
    weeks = await store.weeks_of(pool, [offer["id"]])
    return await _offer_response(pool, offer, weeks, caller, request)


@router.get(
    "/offers/{offer_id}",
    response_model=Offer,
    tags=["offers"],
    summary="One offer (public to any authenticated caller)",
    responses={404: {"description": "No such offer"}},
)
async def get_offer(
    offer_id: uuid.UUID, request: Request, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    offer = await store.get_offer(pool, offer_id)
    if offer is None:
        raise Problem(
            404, "offer_not_found", "Offre introuvable", detail=f"Aucune offre {offer_id}."
        )
    weeks = await store.weeks_of(pool, [offer_id])
    return await _offer_response(pool, offer, weeks, caller, request)


_CHANGING: dict[int | str, dict[str, Any]] = {
    **_FORBIDDEN,
    429: RATE_LIMITED_RESPONSE,
    404: {"description": "No such offer"},
    409: {"description": "Not in a status that allows it (the problem's code says why)"},
}


@router.put(
    "/offers/{offer_id}",
    response_model=Offer,
    tags=["offers"],
    summary="Replace your offer (never below the seats held; weeks with applications stay)",
    responses=_CHANGING,
    dependencies=[RateLimited],
)
async def update_offer(
    offer_id: uuid.UUID, body: NewOffer, request: Request, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        offer, weeks = await usecases.update_offer(
            connection, caller, offer_id, _now(request).date(), **body.model_dump()
        )
        return await _offer_response(connection, offer, weeks, caller, request)


@router.post(
    "/offers/{offer_id}/unpublish",
    response_model=Offer,
    tags=["offers"],
    summary="Take your offer out of search (its applications go on)",
    responses=_CHANGING,
    dependencies=[RateLimited],
)
async def unpublish_offer(
    offer_id: uuid.UUID, request: Request, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        offer, weeks = await usecases.unpublish_offer(connection, caller, offer_id)
        return await _offer_response(connection, offer, weeks, caller, request)


@router.post(
    "/offers/{offer_id}/publish",
    response_model=Offer,
    tags=["offers"],
    summary="Publish your unpublished offer again",
    responses=_CHANGING,
    dependencies=[RateLimited],
)
async def republish_offer(
    offer_id: uuid.UUID, request: Request, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        offer, weeks = await usecases.republish_offer(connection, caller, offer_id)
        return await _offer_response(connection, offer, weeks, caller, request)


@router.post(
    "/offers/{offer_id}/withdraw",
    response_model=Offer,
    tags=["offers"],
    summary="Withdraw your offer: its live applications are cancelled",
    responses=_CHANGING,
    dependencies=[RateLimited],
)
async def withdraw_offer(
    offer_id: uuid.UUID, request: Request, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        offer, weeks = await usecases.withdraw_offer(connection, caller, offer_id, _now(request))
        return await _offer_response(connection, offer, weeks, caller, request)


# --- applications -------------------------------------------------------------------------------


@router.post(
    "/applications",
    status_code=201,
    response_model=Application,
    tags=["applications"],
    summary="Apply for one of your pupils to one week of an offer (verified collèges)",
    openapi_extra={"parameters": [idempotency.OPENAPI_PARAMETER]},
    responses={**_CREATING, 404: {"description": "No such offer"}},
    dependencies=[RateLimited],
)
async def apply(
    body: NewApplication, request: Request, caller: CurrentCaller, pool: Pool
) -> JSONResponse:
    async def run(connection: asyncpg.Connection) -> tuple[dict[str, Any], str]:
        application = await usecases.apply(
            connection, caller, _now(request), _reserved_open_days(request), **body.model_dump()
        )
        out = Application(**usecases.application_out(application, caller))
        return out.model_dump(mode="json"), f"/applications/{application['id']}"

    return await idempotency.respond(
        request, pool, f"caller:{caller.subject}", body.model_dump(mode="json"), 201, run
    )


@router.get(
    "/applications",
    response_model=ApplicationPage,
    tags=["applications"],
    summary="Your applications (as school or host), or all (operators), oldest first",
    responses={400: {"description": "Invalid cursor"}},
)
async def list_applications(
    caller: CurrentCaller,
    pool: Pool,
    offer_id: uuid.UUID | None = None,
    status: Annotated[str | None, Query(max_length=20, pattern=r"^[a-z]{1,20}$")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    staff = caller.has_role(*usecases.STAFF_ROLES)
    partner_id = None if staff else usecases.caller_partner_id(caller)
    if partner_id is None and not staff:
        return {"items": [], "next_cursor": None}
    rows = await store.list_applications(
        pool,
        partner_id=partner_id,
        offer_id=offer_id,
        status=status,
        after=pagination.decode_cursor(cursor),
        limit=limit + 1,
    )
    page = pagination.page(rows, limit)
    page["items"] = [usecases.application_out(row, caller) for row in page["items"]]
    return page


@router.get(
    "/applications/{application_id}",
    response_model=Application,
    tags=["applications"],
    summary="One application (its school, its host, operators)",
    responses={404: {"description": "None of yours"}},
)
async def get_application(
    application_id: uuid.UUID, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    staff = caller.has_role(*usecases.STAFF_ROLES)
    partner_id = usecases.caller_partner_id(caller)
    if partner_id is None and not staff:
        raise usecases.application_not_found(application_id)
    application = await store.get_application(
        pool, application_id, partner_id=None if staff else partner_id
    )
    if application is None:
        raise usecases.application_not_found(application_id)
    return usecases.application_out(application, caller)


_ANSWERING: dict[int | str, dict[str, Any]] = {
    **_FORBIDDEN,
    429: RATE_LIMITED_RESPONSE,
    404: {"description": "None of yours"},
    409: {"description": "Not in a status that allows it, week begun or full"},
}


@router.post(
    "/applications/{application_id}/accept",
    response_model=Application,
    tags=["applications"],
    summary="Accept (host): a seat of the week is held, never more than the week has",
    responses=_ANSWERING,
    dependencies=[RateLimited],
)
async def accept(
    application_id: uuid.UUID, request: Request, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        application = await usecases.accept(
            connection, caller, application_id, _now(request), _reserved_open_days(request)
        )
    return usecases.application_out(application, caller)


@router.post(
    "/applications/{application_id}/decline",
    response_model=Application,
    tags=["applications"],
    summary="Decline a submitted application (host)",
    responses=_ANSWERING,
    dependencies=[RateLimited],
)
async def decline(application_id: uuid.UUID, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    async with transaction(pool) as connection:
        application = await usecases.decline(connection, caller, application_id)
    return usecases.application_out(application, caller)


@router.post(
    "/applications/{application_id}/cancel",
    response_model=Application,
    tags=["applications"],
    summary="Cancel an accepted or confirmed stage, with a reason (host); the seat is freed",
    responses=_ANSWERING,
    dependencies=[RateLimited],
)
async def cancel(
    application_id: uuid.UUID, body: Cancellation, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        application = await usecases.cancel(connection, caller, application_id, body.reason)
    return usecases.application_out(application, caller)


@router.post(
    "/applications/{application_id}/confirm",
    response_model=Application,
    tags=["applications"],
    summary="Confirm an accepted stage (school): the pupil's other applications are withdrawn",
    responses=_ANSWERING,
    dependencies=[RateLimited],
)
async def confirm(
    application_id: uuid.UUID, request: Request, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        application = await usecases.confirm(connection, caller, application_id, _now(request))
    return usecases.application_out(application, caller)


@router.post(
    "/applications/{application_id}/withdraw",
    response_model=Application,
    tags=["applications"],
    summary="Withdraw your application (school), any time before the week",
    responses=_ANSWERING,
    dependencies=[RateLimited],
)
async def withdraw(
    application_id: uuid.UUID, request: Request, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        application = await usecases.withdraw(
            connection, caller, application_id, _now(request).date()
        )
    return usecases.application_out(application, caller)


# --- schools ------------------------------------------------------------------------------------


@router.put(
    "/schools/me/weeks",
    response_model=SchoolWeeks,
    tags=["schools"],
    summary="Declare your stage weeks (collèges): search defaults to them",
    responses={**_FORBIDDEN, 429: RATE_LIMITED_RESPONSE, 422: {"description": "Invalid weeks"}},
    dependencies=[RateLimited],
)
async def put_school_weeks(body: SchoolWeeks, caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    async with transaction(pool) as connection:
        weeks = await usecases.put_school_weeks(connection, caller, body.weeks)
    return {"weeks": weeks}


@router.get(
    "/schools/me/weeks",
    response_model=SchoolWeeks,
    tags=["schools"],
    summary="Your declared stage weeks",
)
async def get_school_weeks(caller: CurrentCaller, pool: Pool) -> dict[str, Any]:
    partner_id = usecases.caller_partner_id(caller)
    mondays = await store.school_mondays(pool, partner_id) if partner_id else []
    return {"weeks": [str(IsoWeek.of(monday)) for monday in mondays]}


@router.post(
    "/schools/me/erasure",
    response_model=Erasure,
    tags=["schools"],
    summary="Erase a pupil's reference, or all of yours (collèges); applications keep facts",
    responses={**_FORBIDDEN, 429: RATE_LIMITED_RESPONSE},
    dependencies=[RateLimited],
)
async def erase(
    body: ErasureRequest, request: Request, caller: CurrentCaller, pool: Pool
) -> dict[str, Any]:
    async with transaction(pool) as connection:
        erased = await usecases.erase_pupil(connection, caller, _now(request), body.pupil_reference)
    return {"erased": erased}


# --- statistics ---------------------------------------------------------------------------------


@router.get(
    "/stats",
    response_model=Stats,
    tags=["statistics"],
    summary="Offers, seats, applications by status and the REP+/REP share, per week",
    description="By the offers' département or académie, or national. Staff and verified "
    "partners. `rep_share` is the share of confirmed stages that went to pupils of REP+ or "
    "REP collèges.",
    responses=_FORBIDDEN,
)
async def stats(
    request: Request,
    caller: CurrentCaller,
    pool: Pool,
    departement: Annotated[str | None, Query(max_length=3, pattern=_DEPARTEMENT)] = None,
    academie: Annotated[str | None, Query(max_length=2, pattern=_ACADEMIE)] = None,
    school_year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
) -> dict[str, Any]:
    if not caller.has_role(*usecases.STAFF_ROLES):
        partner_id = usecases.caller_partner_id(caller)
        partner = await store.get_partner(pool, partner_id) if partner_id else None
        if partner is None or partner.status != "verified":
            raise Problem(
                403,
                "forbidden",
                "Accès refusé",
                detail="Statistiques réservées aux opérateurs et aux partenaires vérifiés.",
            )
    year = school_year or domain.current_school_year(_now(request).date())
    rows = await store.stats(pool, departement=departement, academie=academie, school_year=year)
    statuses = ("submitted", "accepted", "confirmed", "declined", "withdrawn", "cancelled",
                "expired")  # fmt: skip
    weeks = [
        {
            "week": row["week"],
            "offers": row["offers"],
            "seats": row["seats"],
            "reserved": row["reserved"],
            "held": row["held"],
            "applications": {status: row[status] for status in statuses},
            "confirmed_rep": row["confirmed_rep"],
            "rep_share": round(row["confirmed_rep"] / row["confirmed"], 4)
            if row["confirmed"]
            else None,
        }
        for row in rows
    ]
    confirmed = sum(row["confirmed"] for row in rows)
    confirmed_rep = sum(row["confirmed_rep"] for row in rows)
    offers = await store.count_offers(
        pool, departement=departement, academie=academie, school_year=year
    )
    return {
        "scope": {"departement": departement, "academie": academie},
        "school_year": domain.school_year_label(year),
        "offers": offers,
        "seats": sum(row["seats"] for row in rows),
        "reserved": sum(row["reserved"] for row in rows),
        "confirmed": confirmed,
        "rep_share": round(confirmed_rep / confirmed, 4) if confirmed else None,
        "weeks": weeks,
    }
