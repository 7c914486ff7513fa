"""The live flow around the pure engine (``domain``): every change re-solves the school year's
assignment, so that the proposals standing together with the established pairings are always an
optimal campaign (decision 48).

The invariant, after every request filed, decline, withdrawal, acceptance, expiry, offer opened,
changed or closed, pairing ended and partner change: the open proposals are an optimal
assignment (``domain.solve_campaign``: coverage by priority class first, REP+ then REP then QPV
or rural then the others, then the least total distance) of the waiting requests to the places
left (capacity minus established pairings). So:

1. a proposal holds a place: an offer never has more proposals than places left, and a request
   is never left proposed to a full offer;
2. an established pairing is never undone: its place is no longer among the places left;
3. a REP+ collège that arrives after a REP collège takes its proposed place when no other place
   can serve both: the REP collège moves to its next best offer (``MatchProposed`` with
   ``previous_offer_id``) or waits (``MatchUnmatched`` with ``previous_offer_id``); both sides of
   each change are told, with the reason (``MATCH_REASONS``);
4. among optimal assignments, the one that moves the fewest standing proposals is kept
   (``domain.solve_min_cost_flow``'s tie-break), so proposals move only to serve the objective;
5. a proposal left unanswered ``PROPOSAL_DAYS`` days expires: it counts as declined by that
   offer (``MatchDeclined`` with reason ``expired``) and the year is re-solved
   (:func:`proposal_expiry`, hourly).

How: ``rematch`` reads every request of the year still in the flow and every open offer with
places left, solves the min-cost flow, writes only the differences, and keeps the prices of a
place of each offer that prove that optimum (``domain.offer_prices``, table ``offer_prices``).
When a request is filed (the hot path), nothing is re-solved: one shortest augmenting path from
the new request, guided by those prices, is the new optimum (:func:`_augment`,
``domain.augmenting_path``, decision 55): the same served count per class and total distance as
the whole re-solve, which every other change still runs, and which a request filed falls back to
when no prices prove the standing proposals optimal. The caller holds the
year's matching lock (``store.lock_matching``), taken first by every use case that changes the
flow: re-solves never interleave, and the lock order of ``store`` leaves no deadlock.

Campaigns (``usecases.run_campaign``) are the same re-solve, run by an operator for a scope: it
shows the current optimum, and with ``dry_run`` the differences it would apply (none when the
live flow is up to date).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
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
PROPOSAL_DAYS = 14  # an unanswered proposal expires after this many days (decision 48)
PROPOSAL_DELAY = timedelta(days=PROPOSAL_DAYS)

# Why the live flow re-solved: the stable ``reason`` code of MatchProposed, MatchUnmatched and
# a proposal, with its French explanation (the e-mails say the same).
MATCH_REASONS = {
    "request_filed": "une demande a été déposée",
    "declined": "la tête de cordée a décliné la proposition",
    "expired": f"la proposition est restée sans réponse {PROPOSAL_DAYS} jours",
    "request_withdrawn": "un établissement a retiré sa demande",
    "accepted": "une tête de cordée a accepté une proposition",
    "offer_opened": "une offre a été ouverte",
    "offer_changed": "une offre a été modifiée",
    "offer_closed": "une offre a été fermée",
    "pairing_ended": "une cordée a pris fin : une place s'est libérée",
    "partner_changed": "la fiche ou le statut d'un partenaire a changé",
    "campaign": "un opérateur a appliqué une campagne",
}
OBJECTIVE_TEXT = (
    "les places vont d'abord aux collèges REP+, puis REP, puis proches d'un quartier prioritaire "
    "ou ruraux, puis aux autres, et au plus près à priorité égale"
)


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


def explained(
    explanation: domain.Explanation, offer: domain.Offer, request: domain.Request
) -> dict[str, Any]:
    """An explanation as the API shows it: the facts as stable values (``priority_class``,
    ``distance_km``, ``thematics_covered``, ``remaining_capacity``, each part's ``name`` and
    points), and the French words beside them (``reasons``, each part's ``reason``)."""
    return {
        "offer_id": str(offer.offer_id),
        "tete_partner_id": str(offer.tete_partner_id),
        "score": explanation.score,
        "distance_km": round(explanation.distance_km, 2),
        "priority_class": PRIORITY_NAMES[request.school.priority],
        "thematics_covered": domain.covered_thematics(request, offer),
        "remaining_capacity": offer.remaining_capacity,
        "reasons": [part.reason for part in explanation.parts],
        "parts": [
            {"name": part.name, "points": part.points, "reason": part.reason}
            for part in explanation.parts
        ],
    }


# --- the live flow -----------------------------------------------------------------------------


async def candidate_offers(connection: asyncpg.Connection, school_year: str) -> list[domain.Offer]:
    return list((await year_offers(connection, school_year)).offers)


@dataclass(frozen=True)
class YearOffers:
    """The open offers of a year with places left, as the engine sees them: the rows read, the
    offers, their table (``domain.OfferTable``) and each tête's offers."""

    rows: tuple[Any, ...]
    offers: tuple[domain.Offer, ...]
    table: domain.OfferTable
    by_tete: dict[uuid.UUID, frozenset[uuid.UUID]]


# The last YearOffers built per year, in this process: reused when the rows read again in the
# caller's transaction are equal (comparing 1,500 records costs far less than building 1,500
# offers and their table anew for every request filed).
_built: dict[str, YearOffers] = {}


async def year_offers(connection: asyncpg.Connection, school_year: str) -> YearOffers:
    """The open offers of the year with places left, read now (built again only when a row
    differs from the last read)."""
    rows = tuple(await store.open_offers(connection, school_year))
    known = _built.get(school_year)
    if known is not None and known.rows == rows:
        return known
    offers = tuple(offer_of(row) for row in rows)
    by_tete: dict[uuid.UUID, set[uuid.UUID]] = {}
    for offer in offers:
        by_tete.setdefault(offer.tete_partner_id, set()).add(offer.offer_id)
    built = YearOffers(
        rows,
        offers,
        domain.OfferTable.of(offers),
        {tete: frozenset(ids) for tete, ids in by_tete.items()},
    )
    _built[school_year] = built
    return built


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


@dataclass(frozen=True, slots=True)
class Move:
    """One request whose proposal a re-solve changes (``None``: no offer)."""

    request_id: uuid.UUID
    school_partner_id: uuid.UUID
    priority_class: str
    from_offer_id: uuid.UUID | None
    to_offer_id: uuid.UUID | None


@dataclass
class Solved:
    """A re-solve of one school year: the requests it weighed (with their rows), the offers,
    the optimal result and the moves from the standing proposals."""

    requests: list[domain.Request]
    rows: dict[uuid.UUID, Any]  # store.live_requests records (or a Holder's row)
    offers: list[domain.Offer]
    result: domain.CampaignResult
    moves: list[Move] = field(default_factory=list)
    solve_ms: float = 0.0
    prices: dict[uuid.UUID, int] | None = None  # every offer's price after it (when written)


@dataclass(frozen=True, slots=True)
class Holder:
    """A request proposed to an offer: the engine's request, and the columns of its row that
    the moves read (``HOLDER_COLUMNS``; kept, then changed in memory by the moves written)."""

    request: domain.Request
    row: dict[str, Any]


HOLDER_COLUMNS = (
    "id",
    "school_partner_id",
    "school_year",
    "priority",
    "status",
    "offer_id",
    "proposals",
    "created_at",
)


def _holder(request: domain.Request, row: Any) -> Holder:
    return Holder(request, {column: row[column] for column in HOLDER_COLUMNS})


def _order(holder: Holder) -> tuple[datetime, uuid.UUID]:
    """The order ``store.proposed_to`` gives an offer's holders in."""
    return holder.row["created_at"], holder.row["id"]


@dataclass(frozen=True)
class Kept:
    """A year's matching state as a transaction of this process left it, with the stamp of the
    year's matching state it wrote (decisions 56 and 69): still true for a transaction that
    replaces that stamp, as then no one else held the year's matching lock since (nor ended its
    pairings) and the transaction that wrote it committed. The offers with places left and
    their table, every offer's price, the offers each school may not be proposed, and the
    holders of the offers read so far (offer id → its proposed requests, oldest first: an offer
    not there is read from the database when needed)."""

    stamp: uuid.UUID
    offers: YearOffers
    prices: dict[uuid.UUID, int]
    own: NotProposable
    holders: dict[uuid.UUID, list[Holder]]


_kept: dict[str, Kept] = {}


def _take(school_year: str, version: tuple[uuid.UUID | None, uuid.UUID]) -> Kept | None:
    """What this process kept of the year, if still true at ``version`` (this transaction's:
    the stamp it replaced, the stamp it wrote). Taken out either way: the caller, which holds
    the year's matching lock, changes it and keeps it again with its own stamp once its writes
    are done; a transaction that fails before leaves nothing kept."""
    kept = _kept.pop(school_year, None)
    if kept is None or kept.stamp != version[0]:
        return None
    return kept


async def carry_over(connection: asyncpg.Connection, school_year: str) -> None:
    """Keep what this process kept of the year for the next transaction, this one having
    changed neither the year's offers, prices nor proposals (a request filed that no offer may
    take). The caller holds the year's matching lock."""
    version = await store.matching_version(connection, school_year)
    kept = _take(school_year, version)
    if kept is not None:
        _kept[school_year] = dataclasses.replace(kept, stamp=version[1])


async def may_be_proposed(
    connection: asyncpg.Connection,
    school_year: str,
    request: dict[str, Any],
    school: domain.School,
) -> bool:
    """Whether an open offer with a place left may take the request just filed: from the offer
    table this process kept of the year when still true (decisions 56 and 69: the offers and
    pairs the answer will use), read otherwise. The caller holds the year's matching lock."""
    version = await store.matching_version(connection, school_year)
    kept = _kept.get(school_year)
    if kept is not None and kept.stamp == version[0]:
        wanted = request_of(request, school, paired=kept.own.get(school.partner_id))
        return len(kept.offers.table.pairs(wanted)[0]) > 0
    paired = await store.offers_paired_with(connection, school.partner_id)
    wanted = request_of(request, school, paired=paired)
    return any(domain.eligible(wanted, o) for o in await reachable_offers(connection, wanted))


async def rematch(
    connection: asyncpg.Connection,
    school_year: str,
    *,
    reason: str,
    now: datetime,
    campaign_id: uuid.UUID | None = None,
    apply: bool = True,
) -> Solved:
    """Re-solve the year and (``apply``) write the differences: each moved request is proposed
    its new offer, or becomes unmatched, with its event; a request just filed is always
    answered. The caller holds the year's matching lock. ``reason``: a ``MATCH_REASONS`` code.

    ``request_filed`` is answered by one augmenting path (:func:`_augment`) when the year's
    prices allow; every other reason, and a path that cannot answer, re-solve the whole year
    and (``apply``) replace the year's prices with those of its optimum.
    """
    assert reason in MATCH_REASONS, reason
    version = await store.matching_version(connection, school_year)
    # the other use cases change the year's offers or pairings before they re-solve
    kept = _take(school_year, version) if reason == "request_filed" else None
    if kept is not None:
        known, own, holders = kept.offers, kept.own, kept.holders
    else:
        known = await year_offers(connection, school_year)
        own = await _not_proposable(connection, school_year, known)
        holders = {}
    offers, table = list(known.offers), known.table
    solved = None
    if reason == "request_filed":
        prices = kept.prices if kept is not None else None
        solved = await _augment(connection, school_year, offers, table, own, prices, holders)
    if solved is None:
        holders = {}  # the whole re-solve may move any proposal: read them anew next time
        rows = await store.live_requests(connection, school_year)
        requests, by_id = _requests_of(rows, own)
        keep = {row["id"]: row["offer_id"] for row in rows if row["status"] == "proposed"}
        started = time.perf_counter()
        graph = domain.campaign_graph(requests, offers)
        result = domain.solve_graph(graph, keep=keep)
        solved = Solved(
            requests, by_id, offers, result, solve_ms=(time.perf_counter() - started) * 1000
        )
        if apply:  # the prices that prove it optimal, for the next request filed
            prices = domain.offer_prices(graph, result.assignments)
            await store.replace_offer_prices(connection, school_year, prices or {})
            solved.prices = prices or {}
    matchable = {request.request_id: request for request in solved.requests}
    offers_by_id = {offer.offer_id: offer for offer in offers}
    states: list[store.RequestState] = []
    events: list[MatchProposed | MatchUnmatched] = []
    for row in solved.rows.values():
        target = solved.result.assignments.get(row["id"])
        current = row["offer_id"] if row["status"] == "proposed" else None
        if target == current and row["status"] != "requested":
            continue
        solved.moves.append(
            Move(
                row["id"],
                row["school_partner_id"],
                PRIORITY_NAMES[PriorityClass(row["priority"])],
                current,
                target,
            )
        )
        if not apply:
            continue
        previous = await _previous_tete(connection, current, offers_by_id)
        if target is None:
            states.append(store.RequestState(row["id"], "unmatched"))
            events.append(_unmatched(row, reason=reason, previous=previous))
        else:
            state, event = _proposal(
                row,
                matchable[row["id"]],
                offers_by_id[target],
                table,
                reason=reason,
                now=now,
                previous=previous,
                campaign_id=campaign_id,
            )
            states.append(state)
            events.append(event)
    await store.set_request_states(connection, states)  # one statement for every move
    for event in events:
        await publish(connection, event)
    if reason == "request_filed" and apply and solved.prices is not None:
        # nothing else changes the offers, prices or proposals of the year in this transaction
        _moved(holders, solved)
        _kept[school_year] = Kept(version[1], known, solved.prices, own, holders)
    return solved


def _moved(holders: dict[uuid.UUID, list[Holder]], solved: Solved) -> None:
    """The holders kept, after the moves ``solved`` wrote: each moved request leaves the offer
    it held and joins the one it is now proposed (when that offer's holders are kept), with the
    row as the writes left it."""
    matchable = {request.request_id: request for request in solved.requests}
    for move in solved.moves:
        if move.from_offer_id is not None and move.from_offer_id in holders:
            holders[move.from_offer_id] = [
                h for h in holders[move.from_offer_id] if h.row["id"] != move.request_id
            ]
        if move.to_offer_id is not None and move.to_offer_id in holders:
            holder = _holder(matchable[move.request_id], solved.rows[move.request_id])
            holder.row.update(
                status="proposed", offer_id=move.to_offer_id, proposals=holder.row["proposals"] + 1
            )
            bisect.insort(holders[move.to_offer_id], holder, key=_order)


@dataclass(frozen=True)
class NotProposable:
    """Per school, the open offers it may not be proposed: its own (a lycée never leads its
    own cordée) and those it is encordé with."""

    by_tete: dict[uuid.UUID, frozenset[uuid.UUID]]
    paired: dict[uuid.UUID, set[uuid.UUID]]

    def get(self, school_id: uuid.UUID) -> frozenset[uuid.UUID]:
        return self.by_tete.get(school_id, frozenset()) | self.paired.get(school_id, set())


async def _not_proposable(
    connection: asyncpg.Connection, school_year: str, known: YearOffers
) -> NotProposable:
    paired: dict[uuid.UUID, set[uuid.UUID]] = {}
    for school_id, offer_id in await store.active_pairs(connection, school_year):
        paired.setdefault(school_id, set()).add(offer_id)
    return NotProposable(known.by_tete, paired)


def _requests_of(
    rows: list[Any], own: NotProposable
) -> tuple[list[domain.Request], dict[uuid.UUID, Any]]:
    """The engine's requests of ``store.live_requests`` rows (those whose school may be
    matched), and the rows by id."""
    requests: list[domain.Request] = []
    by_id: dict[uuid.UUID, Any] = {}
    for row in rows:
        by_id[row["id"]] = row
        school = school_of(_school_columns(row))
        if school is not None:
            paired = own.get(school.partner_id)
            requests.append(request_of(row, school, paired=paired))
    return requests, by_id


async def _augment(
    connection: asyncpg.Connection,
    school_year: str,
    offers: list[domain.Offer],
    table: domain.OfferTable,
    own: NotProposable,
    prices: dict[uuid.UUID, int] | None,
    holders: dict[uuid.UUID, list[Holder]],
) -> Solved | None:
    """The answer to a request filed, by one shortest augmenting path from it
    (``domain.augmenting_path``, whose docstring says why that is the new optimum): the prices
    kept for the year's offers (``store.offer_prices``) guide the search, which reads the
    requests proposed to the offers it reaches (``holders``, the holders kept: the others a few
    offers per statement, then kept there too), and stops at the first free place or request
    let go that nothing cheaper can beat. The prices of the offers it settled are then raised,
    in the same transaction.

    ``Solved`` holds the requests that move only, and ``result`` their new offers. None when the
    path cannot answer: not exactly one request waiting, an offer without a price (the year was
    never re-solved since it opened), prices that do not prove the proposals optimal, or moves
    that would give a school two places of one offer (which the prices do not model). The
    caller then re-solves the whole year, which prices its optimum anew."""
    rows = await store.waiting_to_be_answered(connection, school_year)
    if len(rows) != 1:
        return None
    requests, _ = _requests_of(rows, own)
    if len(requests) != 1:
        return None
    arrival = requests[0]
    started = time.perf_counter()
    kept = prices if prices is not None else await store.offer_prices(connection, school_year)
    if any(offer.offer_id not in kept for offer in table.offers):
        return None
    search = domain.augmenting_path(
        arrival, table, [kept[offer.offer_id] for offer in table.offers]
    )
    try:
        wanted = next(search)
        while True:
            ids = [table.offers[j].offer_id for j in wanted]
            if not await _read_holders(connection, school_year, ids, own, holders):
                return None
            wanted = search.send(
                {j: [h.request for h in holders[table.offers[j].offer_id]] for j in wanted}
            )
    except StopIteration as done:
        path = done.value
    if path is None or not await _one_place_per_school(
        connection, school_year, path, arrival, own, holders
    ):
        return None
    await store.set_offer_prices(connection, school_year, path.prices)
    # each request the path moves but the arrival held an offer the path moves another into
    found = {arrival.request_id: _holder(arrival, rows[0])}
    for offer_id in {o for o in path.moves.values() if o is not None}:
        for holder in holders[offer_id]:
            if holder.request.request_id in path.moves:
                found[holder.request.request_id] = holder
    if not path.moves.keys() <= found.keys():
        return None  # never expected: a request moved that held none of these offers
    first = arrival.request_id
    moved = [found[first], *(found[r] for r in path.moves if r != first)]
    assignments = {r: o for r, o in path.moves.items() if o is not None}
    result = domain.CampaignResult(
        assignments=assignments, distances_m={}, coverage={}, request_count=len(moved), objective=0
    )
    return Solved(
        [holder.request for holder in moved],
        {holder.request.request_id: holder.row for holder in moved},
        offers,
        result,
        solve_ms=(time.perf_counter() - started) * 1000,
        prices=kept | path.prices,
    )


async def _read_holders(
    connection: asyncpg.Connection,
    school_year: str,
    offer_ids: list[uuid.UUID],
    own: NotProposable,
    holders: dict[uuid.UUID, list[Holder]],
) -> bool:
    """Read the holders of those of ``offer_ids`` not in ``holders`` yet, in one statement, and
    keep them there. False when one of them is a request whose school may no longer be
    matched."""
    missing = [offer_id for offer_id in offer_ids if offer_id not in holders]
    if not missing:
        return True
    read = await store.proposed_to(connection, school_year, missing)
    found: dict[uuid.UUID, list[Holder]] = {offer_id: [] for offer_id in missing}
    for row in read:  # oldest first
        school = school_of(_school_columns(row))
        if school is None:
            return False
        request = request_of(row, school, paired=own.get(school.partner_id))
        found[row["offer_id"]].append(_holder(request, row))
    holders |= found
    return True


async def _one_place_per_school(
    connection: asyncpg.Connection,
    school_year: str,
    path: domain.Augmentation,
    arrival: domain.Request,
    own: NotProposable,
    holders: dict[uuid.UUID, list[Holder]],
) -> bool:
    """Whether the path's moves leave every school with one place of an offer at most
    (``holders``: those of the offers the search read, which the path goes through)."""
    arriving = [(r, o) for r, o in path.moves.items() if o is not None]
    targets = sorted({o for _, o in arriving})
    if not await _read_holders(connection, school_year, targets, own, holders):
        return False
    school_of_request = {arrival.request_id: arrival.school.partner_id}
    taken: Counter[tuple[uuid.UUID, uuid.UUID]] = Counter()
    for offer_id in targets:
        for holder in holders[offer_id]:
            school_of_request[holder.request.request_id] = holder.request.school.partner_id
            if holder.request.request_id not in path.moves:
                taken[(holder.request.school.partner_id, offer_id)] += 1
    for request_id, offer_id in arriving:
        taken[(school_of_request[request_id], offer_id)] += 1
    return all(count <= 1 for count in taken.values())


async def _previous_tete(
    connection: asyncpg.Connection,
    offer_id: uuid.UUID | None,
    offers_by_id: dict[uuid.UUID, domain.Offer],
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(offer, its tête) of the proposal a request loses, if any (read when the offer is not
    among ``offers_by_id``, those with places left: closed or full since)."""
    if offer_id is None:
        return None
    if offer_id in offers_by_id:
        return offer_id, offers_by_id[offer_id].tete_partner_id
    offer = await store.get_offer(connection, offer_id)
    assert offer is not None
    return offer_id, offer["tete_partner_id"]


def _proposal(
    row: dict[str, Any],
    request: domain.Request,
    offer: domain.Offer,
    table: domain.OfferTable,
    *,
    reason: str,
    now: datetime,
    previous: tuple[uuid.UUID, uuid.UUID] | None,
    campaign_id: uuid.UUID | None,
) -> tuple[store.RequestState, MatchProposed]:
    """The request's proposal of ``offer`` (with its alternatives, ranked over the table's
    offers), as written and as published."""
    explanation = domain.score(request, offer)
    alternatives = [
        explained(c.explanation, c.offer, request)
        for c in table.rank(request, limit=1 + ALTERNATIVES)
        if c.offer.offer_id != offer.offer_id
    ][:ALTERNATIVES]
    proposal = {
        "rank": row["proposals"] + 1,
        "explanation": explained(explanation, offer, request),
        "alternatives": alternatives,
        "campaign_id": str(campaign_id) if campaign_id else None,
        "reason": reason,
        "reason_text": MATCH_REASONS[reason],
        "objective": OBJECTIVE_TEXT,
        "expires_at": (now + PROPOSAL_DELAY).isoformat(),
    }
    state = store.RequestState(
        row["id"],
        "proposed",
        offer_id=offer.offer_id,
        proposal=proposal,
        proposed_at=now,
        tete_partner_id=offer.tete_partner_id,
    )
    event = MatchProposed(
        **_facts(row, "proposed"),
        offer_id=offer.offer_id,
        tete_partner_id=offer.tete_partner_id,
        score=float(explanation.score),
        distance_km=round(explanation.distance_km, 3),
        rank=proposal["rank"],
        reason=reason,
        previous_offer_id=previous[0] if previous else None,
        previous_tete_partner_id=previous[1] if previous else None,
    )
    return state, event


def _unmatched(
    row: dict[str, Any], *, reason: str, previous: tuple[uuid.UUID, uuid.UUID] | None
) -> MatchUnmatched:
    return MatchUnmatched(
        **_facts(row, "unmatched"),
        reason=reason,
        previous_offer_id=previous[0] if previous else None,
        previous_tete_partner_id=previous[1] if previous else None,
    )


async def unmatched(
    connection: asyncpg.Connection,
    row: dict[str, Any],
    *,
    reason: str,
    previous: tuple[uuid.UUID, uuid.UUID] | None,
) -> dict[str, Any]:
    updated = await store.set_request_state(connection, row["id"], status="unmatched")
    await publish(connection, _unmatched(updated, reason=reason, previous=previous))
    return updated


async def decline(
    connection: asyncpg.Connection, request: dict[str, Any], *, reason: str
) -> dict[str, Any]:
    """The (locked) request's proposal is declined by its offer's tête, or expired
    (``reason``): that offer is never proposed to it again. The caller re-solves the year,
    which answers the request again (it is back to ``requested`` until then, in this
    transaction only): proposed elsewhere, or unmatched."""
    offer_id = request["offer_id"]
    tete = request["proposal"]["explanation"]["tete_partner_id"]
    request = await store.set_request_state(
        connection, request["id"], status="requested", declined_offer_id=offer_id
    )
    await publish(
        connection,
        MatchDeclined(
            **_facts(request, "declined"), offer_id=offer_id, tete_partner_id=tete, reason=reason
        ),
    )
    return request


def _school_columns(row: dict[str, Any]) -> dict[str, Any]:
    """The school's facts of a ``store.live_requests`` row, as a read-model partner."""
    return {
        "partner_id": row["school_partner_id"],
        "status": row["school_status"],
        "uai": row["school_uai"],
        "kind": row["school_kind"],
        "departement": row["school_departement"],
        "academie": row["school_academie"],
        "latitude": row["school_latitude"],
        "longitude": row["school_longitude"],
        "education_prioritaire": row["school_education_prioritaire"],
        "qpv_proximity": row["school_qpv_proximity"],
    }


async def expire_proposals(connection: asyncpg.Connection, now: datetime) -> int:
    """Expire every proposal made more than ``PROPOSAL_DAYS`` days before ``now`` and still
    unanswered: each counts as declined by its offer (reason ``expired``), then each year
    concerned is re-solved. Takes the years' matching locks. How many expired."""
    before = now - PROPOSAL_DELAY
    years = await store.years_with_expired_proposals(connection, before)
    await store.lock_matching(connection, years)
    expired = 0
    for school_year in years:
        requests = await store.expired_proposals(connection, school_year, before)
        for request in requests:
            await decline(connection, request, reason="expired")
        expired += len(requests)
        if requests:
            await rematch(connection, school_year, reason="expired", now=now)
    return expired


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

    Cordées run for a school year: the worker (:func:`school_year_end`) calls this at start-up
    and then hourly, operators may too (``POST /pairings/end-of-school-year``). Safe to repeat.
    """
    over = await store.active_pairings_before(connection, current_year)
    # before any pairing's row, as a holder of the matching lock raises them after that lock
    await store.raise_matching_versions(connection, [p["school_year"] for p in over])
    for pairing in over:
        reason = "school_year_end"
        ended = await store.end_pairing(connection, pairing["id"], reason)
        await publish(connection, PairingEnded(**pairing_facts(ended), reason=reason))
    return len(over)


class Periodic:
    """A background worker of the app: one pass (``step``, in its own transaction, given the
    current time) at start-up, then every ``interval`` seconds. A failed pass is logged and
    retried next time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        step: Callable[[asyncpg.Connection, datetime], Awaitable[int]],
        *,
        interval: float,
        done: str,
    ) -> None:
        self.pool = pool
        self.step = step
        self.interval = interval
        self.done = done  # the log line of a pass that did something
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                async with transaction(self.pool) as connection:
                    count = await self.step(connection, datetime.now(UTC))
                if count:
                    log.info(self.done, count=count)
            except CONNECTION_ERRORS as error:
                log.warning("a periodic pass failed", worker=self.done, error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    def stop(self) -> None:
        self._stopping.set()


async def _end_school_years(connection: asyncpg.Connection, now: datetime) -> int:
    return await end_finished_school_years(connection, school_year_of(now.date()))


def school_year_end(pool: asyncpg.Pool, *, interval: float = 3600.0) -> Periodic:
    """Ends the pairings of finished school years: at start-up, then every ``interval``."""
    return Periodic(
        pool, _end_school_years, interval=interval, done="pairings of finished school years ended"
    )


def proposal_expiry(pool: asyncpg.Pool, *, interval: float = 3600.0) -> Periodic:
    """Expires the proposals unanswered for ``PROPOSAL_DAYS`` days: at start-up, then every
    ``interval``."""
    return Periodic(pool, expire_proposals, interval=interval, done="unanswered proposals expired")
