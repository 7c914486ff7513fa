"""The match flow around the pure engine (``domain``): ranking against the read model,
proposals with their explanation, moving a request on, serving waiting requests, campaigns.

Every function runs inside the caller's transaction and publishes its events there.

A proposal holds no place: several schools may be proposed the same offer, and the tête de
cordée accepts them first come, first served, up to its capacity. Capacity is checked under the
offer's row lock at acceptance; when an offer fills up (or closes, shrinks, or its tête is no
longer verified), the requests still proposed to it move on to their next candidate, so no
request waits on an offer that cannot take it.

A request no open offer can take is unmatched: it waits for the next campaign, which assigns
every waiting request in its scope at once, optimally (REP+ first), rather than one by one to
whichever offer opens first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from maillage.common.catalog import MatchDeclined, MatchProposed, MatchUnmatched, PairingEnded
from maillage.common.db import CONNECTION_ERRORS, transaction
from maillage.common.logging import get_logger
from maillage.common.outbox import publish
from maillage.cordees import domain, store
from maillage.cordees.domain import PriorityClass

log = get_logger(__name__)

# A lycée with CPGE or STS may lead a cordée too. The registry does not say which lycées have
# them, so any verified lycée may open offers (it is also a school that may be encordé, never
# with its own offers).
TETE_KINDS = frozenset({"etablissement_superieur", "lycee"})
SCHOOL_KINDS = frozenset(domain.LEVELS_BY_KIND)
ALTERNATIVES = 4  # ranked alternatives shown besides the proposal
PRIORITY_NAMES = {  # as events and the API name them
    PriorityClass.REP_PLUS: "REP+",
    PriorityClass.REP: "REP",
    PriorityClass.QPV_OR_RURAL: "QPV_OR_RURAL",
    PriorityClass.OTHER: "OTHER",
}


# --- school years -------------------------------------------------------------------------------


def school_year_of(day: date) -> str:
    """The school year a day falls in: it starts on 1 September."""
    first = day.year if day.month >= 9 else day.year - 1
    return f"{first}-{first + 1}"


def is_school_year(value: str) -> bool:
    """ "2026-2027": two consecutive years."""
    first, _, second = value.partition("-")
    return (
        len(first) == 4 and first.isdigit() and second.isdigit() and int(second) == int(first) + 1
    )


# --- from the read model to the engine's values -------------------------------------------------


def school_of(partner: dict[str, Any]) -> domain.School | None:
    """The matcher's view of a school, or None when it cannot be matched (not verified: a
    suspended school is proposed nothing; or no coordinates)."""
    if (
        partner["status"] != "verified"
        or partner["kind"] not in SCHOOL_KINDS
        or partner["latitude"] is None
        or partner["longitude"] is None
        or not partner["uai"]
        or not partner["departement"]
    ):
        return None
    return domain.School(
        partner_id=partner["partner_id"],
        uai=partner["uai"],
        kind=partner["kind"],
        departement=partner["departement"],
        academie=partner["academie"],
        latitude=partner["latitude"],
        longitude=partner["longitude"],
        priority=priority_of(partner),
    )


def priority_of(partner: dict[str, Any]) -> PriorityClass:
    return domain.priority_class(partner["education_prioritaire"], partner["qpv_proximity"])


def offer_of(row: dict[str, Any]) -> domain.Offer:
    """An open offer (from ``store.open_offers``) as the engine sees it."""
    return domain.Offer(
        offer_id=row["id"],
        tete_partner_id=row["tete_partner_id"],
        latitude=row["latitude"],
        longitude=row["longitude"],
        levels=tuple(row["levels"]),
        thematics=tuple(row["thematics"]),
        max_distance_km=row["max_distance_km"],
        academies=tuple(row["academies"]),
        remaining_capacity=row["remaining"],
        school_year=row["school_year"],
    )


def request_of(
    request: dict[str, Any], school: domain.School, *, paired: frozenset[uuid.UUID] = frozenset()
) -> domain.Request:
    """The engine's view of a request: the offers it declined, and those its school is already
    encordé with (``paired``), are never proposed to it."""
    return domain.Request(
        request_id=request["id"],
        school=school,
        thematics=tuple(request["thematics"]),
        max_distance_km=request["max_distance_km"],
        school_year=request["school_year"],
        excluded_offer_ids=frozenset(request["declined_offer_ids"]) | paired,
    )


def explained(explanation: domain.Explanation, offer: domain.Offer) -> dict[str, Any]:
    """An explanation as the API shows it: the facts, the score and its parts."""
    return {
        "offer_id": str(offer.offer_id),
        "tete_partner_id": str(offer.tete_partner_id),
        "score": explanation.score,
        "distance_km": round(explanation.distance_km, 2),
        "priority_class": explanation.part("priority").reason,
        "thematics": explanation.part("thematics").reason,
        "remaining_capacity": offer.remaining_capacity,
        "parts": [
            {"name": part.name, "points": part.points, "reason": part.reason}
            for part in explanation.parts
        ],
    }


# --- proposals ----------------------------------------------------------------------------------


async def candidate_offers(connection: asyncpg.Connection, school_year: str) -> list[domain.Offer]:
    return [offer_of(row) for row in await store.open_offers(connection, school_year)]


KM_PER_DEGREE_OF_LATITUDE = domain.EARTH_RADIUS_KM * math.pi / 180


async def reachable_offers(
    connection: asyncpg.Connection, request: domain.Request
) -> list[domain.Offer]:
    """The open offers that may be eligible for the request: a superset of those
    ``domain.rank_candidates`` keeps (which leaves out the declined ones), cut down in SQL so that
    one request neither reads nor builds every offer of the country. Never the school's own
    offers: a lycée never leads its own cordée."""
    school = request.school
    rows = await store.reachable_offers(
        connection,
        request.school_year,
        school_partner_id=school.partner_id,
        levels=sorted(domain.LEVELS_BY_KIND[school.kind]),
        latitude=school.latitude,
        academie=school.academie,
        max_band_degrees=(
            None
            if request.max_distance_km is None
            else request.max_distance_km / KM_PER_DEGREE_OF_LATITUDE
        ),
        km_per_degree=KM_PER_DEGREE_OF_LATITUDE,
    )
    return [offer_of(row) for row in rows]


def _facts(request: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "request_id": request["id"],
        "school_partner_id": request["school_partner_id"],
        "school_year": request["school_year"],
        "status": status,
        "priority_class": PRIORITY_NAMES[PriorityClass(request["priority"])],
    }


async def propose_best(
    connection: asyncpg.Connection,
    request: dict[str, Any],
    school: domain.School | None,
    *,
    passing_over: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Propose the request its best candidate with ranked alternatives, or mark it unmatched.
    ``passing_over``: an offer not to propose now (the one it moves on from)."""
    candidates: list[domain.Candidate] = []
    if school is not None:
        paired = await store.offers_paired_with(connection, school.partner_id)
        match = request_of(request, school, paired=paired)
        offers = [
            offer
            for offer in await reachable_offers(connection, match)
            if offer.offer_id != passing_over
        ]
        candidates = domain.rank_candidates(match, offers, limit=1 + ALTERNATIVES)
    if not candidates:
        return await _unmatched(connection, request)
    best, *alternatives = candidates
    return await _propose(
        connection,
        request,
        best.offer,
        best.explanation,
        [explained(c.explanation, c.offer) for c in alternatives],
    )


async def _propose(
    connection: asyncpg.Connection,
    request: dict[str, Any],
    offer: domain.Offer,
    explanation: domain.Explanation,
    alternatives: list[dict[str, Any]],
    campaign_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    proposal = {
        "rank": request["proposals"] + 1,
        "explanation": explained(explanation, offer),
        "alternatives": alternatives,
        "campaign_id": str(campaign_id) if campaign_id else None,
    }
    updated = await store.set_request_state(
        connection,
        request["id"],
        status="proposed",
        offer_id=offer.offer_id,
        proposal=proposal,
        proposed=True,
    )
    await publish(
        connection,
        MatchProposed(
            **_facts(updated, "proposed"),
            offer_id=offer.offer_id,
            tete_partner_id=offer.tete_partner_id,
            score=float(explanation.score),
            distance_km=round(explanation.distance_km, 3),
            rank=proposal["rank"],
        ),
    )
    return updated


async def _unmatched(connection: asyncpg.Connection, request: dict[str, Any]) -> dict[str, Any]:
    updated = await store.set_request_state(connection, request["id"], status="unmatched")
    await publish(connection, MatchUnmatched(**_facts(updated, "unmatched")))
    return updated


async def move_on(
    connection: asyncpg.Connection, request: dict[str, Any], *, declined: bool
) -> dict[str, Any]:
    """The offer proposed to a (locked) request is no longer for it: declined by its tête (then
    never proposed again), or unable to take it (full, closed, tête suspended). The next
    candidate is proposed."""
    offer_id = request["offer_id"]
    if declined:
        tete = request["proposal"]["explanation"]["tete_partner_id"]
        request = await store.set_request_state(
            connection, request["id"], status="unmatched", declined_offer_id=offer_id
        )
        await publish(
            connection,
            MatchDeclined(**_facts(request, "declined"), offer_id=offer_id, tete_partner_id=tete),
        )
    school = await store.get_partner(connection, request["school_partner_id"])
    return await propose_best(
        connection, request, school_of(school) if school else None, passing_over=offer_id
    )


async def rebalance(connection: asyncpg.Connection, offer_id: uuid.UUID) -> None:
    """After an offer changed (under its row lock): the requests proposed to it that it can no
    longer take (closed, full, out of its territory now) move on to their next candidate."""
    row = await store.get_offer(connection, offer_id)
    assert row is not None
    still_open = await store.open_offers(connection, row["school_year"], offer_id=offer_id)
    offer = offer_of(still_open[0]) if still_open else None
    for request in await store.proposed_to_offer(connection, offer_id, for_update=True):
        school = await store.get_partner(connection, request["school_partner_id"])
        still = school_of(school) if school else None
        if offer is None or still is None or not domain.eligible(request_of(request, still), offer):
            await move_on(connection, request, declined=False)


def _school_columns(row: dict[str, Any]) -> dict[str, Any]:
    """The school's facts of a ``store.waiting_requests`` row, as a read-model partner."""
    return {
        "partner_id": row["school_partner_id"],
        "status": "verified",  # waiting_requests keeps verified schools only
        "uai": row["school_uai"],
        "kind": row["school_kind"],
        "departement": row["school_departement"],
        "academie": row["school_academie"],
        "latitude": row["school_latitude"],
        "longitude": row["school_longitude"],
        "education_prioritaire": row["school_education_prioritaire"],
        "qpv_proximity": row["school_qpv_proximity"],
    }


# --- campaigns ----------------------------------------------------------------------------------


async def run_campaign(
    connection: asyncpg.Connection,
    campaign_id: uuid.UUID,
    *,
    departement: str | None,
    academie: str | None,
) -> dict[str, Any]:
    """Solve the optimal assignment of every waiting request in scope against the open offers'
    places left, and propose each assigned offer. Returns the summary."""
    waiting = await store.waiting_requests(connection, departement=departement, academie=academie)
    requests: list[domain.Request] = []
    rows: dict[uuid.UUID, dict[str, Any]] = {}
    for row in waiting:
        school = school_of(_school_columns(row))
        if school is not None:
            requests.append(request_of(row, school))
            rows[row["id"]] = row
    offers: list[domain.Offer] = []
    for year in sorted({request.school_year for request in requests}):
        offers += await candidate_offers(connection, year)
    # A lycée never leads its own cordée: its own offers are out of its reach.
    requests = [
        domain.Request(
            request_id=r.request_id,
            school=r.school,
            thematics=r.thematics,
            max_distance_km=r.max_distance_km,
            school_year=r.school_year,
            excluded_offer_ids=r.excluded_offer_ids
            | {o.offer_id for o in offers if o.tete_partner_id == r.school.partner_id},
        )
        for r in requests
    ]
    started = time.perf_counter()
    result = domain.solve_campaign(requests, offers)
    solve_ms = (time.perf_counter() - started) * 1000
    by_id = {offer.offer_id: offer for offer in offers}
    for request in requests:
        offer_id = result.assignments.get(request.request_id)
        if offer_id is None:
            continue
        offer = by_id[offer_id]
        alternatives = [
            explained(c.explanation, c.offer)
            for c in domain.rank_candidates(request, offers, limit=1 + ALTERNATIVES)
            if c.offer.offer_id != offer_id
        ][:ALTERNATIVES]
        await _propose(
            connection,
            rows[request.request_id],
            offer,
            domain.score(request, offer),
            alternatives,
            campaign_id,
        )
    return {
        "requests": len(requests),
        "proposed": len(result.assignments),
        "coverage": {
            PRIORITY_NAMES[priority]: {"requested": c.requested, "served": c.served}
            for priority, c in sorted(result.coverage.items())
        },
        "total_distance_km": round(result.total_distance_km, 3),
        "objective": result.objective,
        "solve_ms": round(solve_ms, 3),
    }


# --- pairings -----------------------------------------------------------------------------------


def pairing_facts(pairing: dict[str, Any]) -> dict[str, Any]:
    """The facts every pairing event carries."""
    return {
        "pairing_id": pairing["id"],
        **{
            name: pairing[name]
            for name in (
                "request_id",
                "offer_id",
                "tete_partner_id",
                "school_partner_id",
                "school_year",
            )
        },
    }


async def end_finished_school_years(connection: asyncpg.Connection, current_year: str) -> int:
    """End every active pairing of a school year before ``current_year``; how many.

    Cordées run for a school year: the worker (:class:`SchoolYearEnd`) calls this at start-up
    and then hourly, operators may too (``POST /pairings/end-of-school-year``). Safe to repeat.
    """
    over = await store.active_pairings_before(connection, current_year)
    for pairing in over:
        reason = "school_year_end"
        ended = await store.end_pairing(connection, pairing["id"], reason)
        await publish(connection, PairingEnded(**pairing_facts(ended), reason=reason))
    return len(over)


class SchoolYearEnd:
    """Ends the pairings of finished school years: at start-up, then every ``interval``
    seconds (a background worker of the app). A failed pass is logged and retried next time."""

    def __init__(self, pool: asyncpg.Pool, *, interval: float = 3600.0) -> None:
        self.pool = pool
        self.interval = interval
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                async with transaction(self.pool) as connection:
                    current = school_year_of(datetime.now(UTC).date())
                    ended = await end_finished_school_years(connection, current)
                if ended:
                    log.info("pairings of finished school years ended", ended=ended)
            except CONNECTION_ERRORS as error:
                log.warning("ending finished school years failed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    def stop(self) -> None:
        self._stopping.set()
