"""Pure rules of the Cordées de la réussite: no I/O, no framework.

A tête de cordée (university, grande école, lycée with CPGE/STS) mentors encordés (collèges and
lycées). The national objective serves every REP+ collège first, then every REP collège.

The interface the service uses
------------------------------
- :class:`PriorityClass` and :func:`priority_class` (REP status from the reference data, never
  from what a school says), :func:`academie_of` (département → code académie), :func:`haversine_km`.
- :class:`School`, :class:`Offer`, :class:`Request`: frozen values the service builds from its
  read model; :func:`eligible` says whether an offer may be proposed to a request.
- Single request: :func:`score` explains one (request, offer) pair with named parts that sum
  exactly to the score; :func:`rank_candidates` returns the best eligible offers, best first.
- Campaign: :func:`solve_campaign` assigns every pending request optimally (OR-Tools min-cost
  flow) and returns a :class:`CampaignResult` (request → offer, distances, per-class
  :class:`Coverage`, the objective, the unserved requests); :func:`greedy_campaign` is the naive
  baseline; :func:`campaign_objective` compares two results. :func:`campaign_graph` (the eligible
  pairs as numpy arrays) and :func:`solve_min_cost_flow` are the two steps, exposed for the
  benchmark (``bench/cordees_matching.py``). :func:`augmenting_path` is the live flow's request
  filed since decision 55 (it replaced re-solving the part of the graph a request reaches): one
  shortest augmenting path from the new request, guided by the prices of :func:`offer_prices`
  (over an :class:`OfferTable`, one request's eligible offers at once).

Schools and offers need coordinates: the service leaves a school without them out of matching.

Eligibility (:func:`eligible`)
------------------------------
An offer may be proposed to a request when all of these hold:

1. same school year;
2. the offer has a place left (``remaining_capacity > 0``);
3. the offer mentors a level the school teaches: a collège's 4e/3e, a lycée's 2nde/1re/terminale;
4. the offer serves the school's territory: the offer names neither a maximum distance nor
   académies (it serves the whole country), or the school is within the offer's maximum
   distance, or the school's académie is one of the offer's académies;
5. the school accepts the distance: within the request's maximum distance, when it gives one
   (the school's own limit holds even inside an académie the offer serves);
6. the request has not declined this offer before (``excluded_offer_ids``).

Single-request score (:func:`score`), in whole points
------------------------------------------------------
``score = priority + distance + thematics + capacity``, each part an integer:

- priority: REP+ 3000, REP 2000, QPV proximity or rural 1000, other 0;
- distance: ``round(400 × 25 / (25 + d))`` with ``d`` in km (400 at the door, 200 at 25 km);
- thematics: ``round(400 × wished thematics the offer covers / wished thematics)``, 400 when the
  school wishes none (any thematic suits it);
- capacity: ``10 × min(places left, 10)``, so that fuller offers are spread over.

The three non-priority parts total at most 900 < 1000, the gap between two priority classes: any
REP+ pair outscores any REP pair, and so on. Serving waiting requests by decreasing score
therefore serves a REP+ collège before a REP one when places are short. Ranking ties break on the
exact distance, then the offer id, so the ranking is deterministic.

Campaign objective (:func:`solve_campaign`)
-------------------------------------------
Let ``x(r, o) ∈ {0, 1}`` assign request ``r`` to offer ``o`` over eligible pairs only, each request
at most once, each offer at most its remaining capacity. With ``N`` the number of requests,
``d(r, o)`` the haversine distance in whole metres and ``D = 20,037,510`` m (half the Earth's
circumference, more than any distance between two points),

    K = N × D + 1,   w(REP+) = 4K,  w(REP) = 3K,  w(QPV or rural) = 2K,  w(other) = K,

    maximise  objective = Σ x(r, o) × (w(class of r) − d(r, o)).

No total distance reaches ``K``, so distance never buys coverage: the solution first maximises the
priority-weighted coverage ``Σ w``, then, among those, minimises the total distance. Which schools
can be served together forms a (transversal) matroid, so maximising ``Σ w`` for any decreasing
positive weights gives a solution where, *for every class c, the number of served requests of class
c or higher is the largest possible*: REP+ coverage is maximal, then REP+ and REP coverage
together, and so on. In particular no number of REP collèges is ever worth one REP+ collège, and
an unserved request never has a path of moves (take a place, the school there moves to another
offer…) ending at a free place or at a request of a lower class.

The campaign does not weigh thematics: they rank the candidates of one request, while the
campaign's objective is the national one (coverage by priority, then proximity).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import math
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
from ortools.graph.python import min_cost_flow  # type: ignore[import-untyped]  # no stubs

# The académie of a département, shared with stages3e (re-exported: api.py and consumers use it).
from maillage.common.geography import ACADEMIE_OF_DEPARTEMENT as ACADEMIE_OF_DEPARTEMENT
from maillage.common.geography import academie_of as academie_of


class PriorityClass(IntEnum):
    """The national priority of an encordé, lower is served first."""

    REP_PLUS = 1
    REP = 2
    QPV_OR_RURAL = 3
    OTHER = 4

    @property
    def label(self) -> str:
        return _PRIORITY_LABELS[self]


_PRIORITY_LABELS = {
    PriorityClass.REP_PLUS: "REP+",
    PriorityClass.REP: "REP",
    PriorityClass.QPV_OR_RURAL: "QPV or rural",
    PriorityClass.OTHER: "other",
}


def priority_class(
    education_prioritaire: str | None, qpv_proximity: bool | None, rural: bool | None = None
) -> PriorityClass:
    """A school's priority from the reference data (annuaire, éducation prioritaire list)."""
    status = (education_prioritaire or "").strip().upper()
    if status == "REP+":
        return PriorityClass.REP_PLUS
    if status == "REP":
        return PriorityClass.REP
    if qpv_proximity or rural:
        return PriorityClass.QPV_OR_RURAL
    return PriorityClass.OTHER


# --- territory --------------------------------------------------------------------------------

EARTH_RADIUS_KM = 6371.0088  # the IUGG mean radius


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, h)))


# --- schools, offers, requests ----------------------------------------------------------------

LEVELS_BY_KIND: dict[str, frozenset[str]] = {
    "college": frozenset({"4e", "3e"}),
    "lycee": frozenset({"2nde", "1re", "terminale"}),
}
LEVELS = ("4e", "3e", "2nde", "1re", "terminale")


@dataclass(frozen=True, slots=True)
class School:
    """A collège or lycée of the read model, as the matcher needs it."""

    partner_id: UUID
    uai: str
    kind: str  # "college" | "lycee"
    departement: str  # INSEE form: "94", "2A", "971"
    academie: str | None  # code académie, e.g. "24"; academie_of(departement) when unknown
    latitude: float
    longitude: float
    priority: PriorityClass


@dataclass(frozen=True, slots=True)
class Offer:
    """A tête de cordée's open offer, with the places it has left."""

    offer_id: UUID
    tete_partner_id: UUID
    latitude: float
    longitude: float
    levels: tuple[str, ...]  # among LEVELS
    thematics: tuple[str, ...]
    max_distance_km: float | None  # None: no distance rule
    academies: tuple[str, ...]  # codes académie served; empty: no académie rule
    remaining_capacity: int
    school_year: str  # "2026-2027"


@dataclass(frozen=True, slots=True)
class Request:
    """A school's pending request for a cordée."""

    request_id: UUID
    school: School
    thematics: tuple[str, ...]
    max_distance_km: float | None  # None: any distance
    school_year: str
    excluded_offer_ids: frozenset[UUID] = frozenset()  # offers declined for this request


def _distance_km(request: Request, offer: Offer) -> float:
    school = request.school
    return haversine_km(school.latitude, school.longitude, offer.latitude, offer.longitude)


def _territory_ok(request: Request, offer: Offer, distance_km: float) -> bool:
    if request.max_distance_km is not None and distance_km > request.max_distance_km:
        return False
    if offer.max_distance_km is None and not offer.academies:
        return True
    if offer.max_distance_km is not None and distance_km <= offer.max_distance_km:
        return True
    return request.school.academie in offer.academies


def _static_ok(request: Request, offer: Offer) -> bool:
    """Every rule but the territory's: cheap, checked before any distance."""
    return (
        offer.school_year == request.school_year
        and offer.remaining_capacity > 0
        and offer.offer_id not in request.excluded_offer_ids
        and not LEVELS_BY_KIND[request.school.kind].isdisjoint(offer.levels)
    )


def eligible(request: Request, offer: Offer) -> bool:
    """Whether the offer may be proposed to the request (the rules in the module docstring)."""
    return _static_ok(request, offer) and _territory_ok(
        request, offer, _distance_km(request, offer)
    )


# --- single request: score and ranking ----------------------------------------------------------

PRIORITY_POINTS = {
    PriorityClass.REP_PLUS: 3000,
    PriorityClass.REP: 2000,
    PriorityClass.QPV_OR_RURAL: 1000,
    PriorityClass.OTHER: 0,
}
DISTANCE_POINTS = 400
DISTANCE_HALF_KM = 25.0  # the distance at which the distance part is half its maximum
THEMATIC_POINTS = 400
CAPACITY_POINTS_PER_PLACE = 10
CAPACITY_PLACES_COUNTED = 10


@dataclass(frozen=True, slots=True)
class ScorePart:
    """One named part of a score: its whole points and why."""

    name: str  # "priority" | "distance" | "thematics" | "capacity"
    points: int
    reason: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why an offer suits a request: the parts, which sum exactly to the score."""

    request_id: UUID
    offer_id: UUID
    distance_km: float
    parts: tuple[ScorePart, ...]

    @property
    def score(self) -> int:
        return sum(part.points for part in self.parts)

    def part(self, name: str) -> ScorePart:
        return next(part for part in self.parts if part.name == name)


@dataclass(frozen=True, slots=True)
class Candidate:
    """An eligible offer for a request, its explanation and its rank (1 is the best)."""

    offer: Offer
    explanation: Explanation
    rank: int


@functools.lru_cache(maxsize=4096)
def _normalised(thematics: tuple[str, ...]) -> frozenset[str]:
    return frozenset(thematic.strip().casefold() for thematic in thematics)


def _distance_points(distance_km: float) -> int:
    return round(DISTANCE_POINTS * DISTANCE_HALF_KM / (DISTANCE_HALF_KM + distance_km))


def _thematic_points(wished: frozenset[str], offered: frozenset[str]) -> int:
    if not wished:
        return THEMATIC_POINTS
    return round(THEMATIC_POINTS * len(wished & offered) / len(wished))


def _capacity_points(places: int) -> int:
    return CAPACITY_POINTS_PER_PLACE * min(places, CAPACITY_PLACES_COUNTED)


# The French words of an explanation (decision 33: French for people; the part's ``name``, the
# explanation's ``priority_class``, ``distance_km``, ``thematics_covered`` and
# ``remaining_capacity`` are the stable machine values beside them).
_SCHOOL_WORDS = {"college": "collège", "lycee": "lycée"}
_PRIORITY_REASONS = {
    PriorityClass.REP_PLUS: "{school} REP+ (priorité nationale)",
    PriorityClass.REP: "{school} REP (priorité nationale)",
    PriorityClass.QPV_OR_RURAL: "{school} proche d'un quartier prioritaire ou rural",
    PriorityClass.OTHER: "{school} hors éducation prioritaire",
}


def french_km(distance_km: float) -> str:
    """A distance as French writes it: "5,2 km" (one decimal, a decimal comma)."""
    return f"{distance_km:.1f} km".replace(".", ",")


def covered_thematics(request: Request, offer: Offer) -> list[str]:
    """The wished thematics the offer covers, sorted (normalised: stripped, casefolded)."""
    return sorted(_normalised(request.thematics) & _normalised(offer.thematics))


def _explain(request: Request, offer: Offer, distance_km: float) -> Explanation:
    priority = request.school.priority
    wished, offered = _normalised(request.thematics), _normalised(offer.thematics)
    if wished:
        covered = sorted(wished & offered)
        if len(wished) > 1:
            thematic_reason = f"{len(covered)} des {len(wished)} thématiques souhaitées" + (
                f" ({', '.join(covered)})" if covered else ""
            )
        elif covered:
            thematic_reason = f"la thématique souhaitée ({covered[0]})"
        else:
            thematic_reason = "pas la thématique souhaitée"
    else:
        thematic_reason = "aucune thématique souhaitée : toute offre convient"
    places = offer.remaining_capacity
    school = _SCHOOL_WORDS.get(request.school.kind, "établissement")
    return Explanation(
        request_id=request.request_id,
        offer_id=offer.offer_id,
        distance_km=distance_km,
        parts=(
            ScorePart(
                "priority",
                PRIORITY_POINTS[priority],
                _PRIORITY_REASONS[priority].format(school=school),
            ),
            ScorePart("distance", _distance_points(distance_km), f"à {french_km(distance_km)}"),
            ScorePart("thematics", _thematic_points(wished, offered), thematic_reason),
            ScorePart(
                "capacity",
                _capacity_points(places),
                f"{places} place{'s' if places > 1 else ''} restante{'s' if places > 1 else ''}",
            ),
        ),
    )


def score(request: Request, offer: Offer) -> Explanation:
    """The explanation of the pair's score (whether or not the offer is eligible)."""
    return _explain(request, offer, _distance_km(request, offer))


def rank_candidates(request: Request, offers: Iterable[Offer], limit: int = 5) -> list[Candidate]:
    """The ``limit`` best eligible offers for the request, best first.

    Best is the highest score; ties go to the nearer offer, then to the smaller offer id. Only
    the points are computed for every eligible offer; the explanations, for the best ones.
    """
    wished = _normalised(request.thematics)
    scored = [item for offer in offers if (item := _scored(request, offer, wished)) is not None]
    return _candidates(request, scored, limit)


def _scored(
    request: Request, offer: Offer, wished: frozenset[str]
) -> tuple[int, float, UUID, Offer] | None:
    """(−points, distance, offer id, offer) of an eligible offer, None for another. The
    priority part is the same for every offer of a request: it cannot change the order."""
    if not _static_ok(request, offer):
        return None
    distance_km = _distance_km(request, offer)
    if not _territory_ok(request, offer, distance_km):
        return None
    points = (
        _distance_points(distance_km)
        + _thematic_points(wished, _normalised(offer.thematics))
        + _capacity_points(offer.remaining_capacity)
    )
    return -points, distance_km, offer.offer_id, offer


def _limit_th(
    scored: list[tuple[int, float, UUID, Offer]], limit: int
) -> tuple[int, float, UUID, Offer]:
    """The ``limit``-th best of ``_scored`` items."""
    return heapq.nsmallest(limit, scored, key=lambda item: item[:3])[-1]


def _candidates(
    request: Request, scored: list[tuple[int, float, UUID, Offer]], limit: int
) -> list[Candidate]:
    """The ``limit`` best of ``_scored`` items, explained, best first."""
    best = heapq.nsmallest(limit, scored, key=lambda item: item[:3])
    return [
        Candidate(offer=offer, explanation=_explain(request, offer, distance_km), rank=rank)
        for rank, (_, distance_km, _, offer) in enumerate(best, start=1)
    ]


# --- campaign -----------------------------------------------------------------------------------

MAX_DISTANCE_M = 20_037_510  # half the Earth's circumference: no two points are farther apart
_CLASS_MULTIPLIER = {
    PriorityClass.REP_PLUS: 4,
    PriorityClass.REP: 3,
    PriorityClass.QPV_OR_RURAL: 2,
    PriorityClass.OTHER: 1,
}


def coverage_unit(request_count: int) -> int:
    """``K = N × D + 1``: more than any total distance of N assignments, in metres."""
    return request_count * MAX_DISTANCE_M + 1


def coverage_weight(priority: PriorityClass, request_count: int) -> int:
    """The weight of serving one request of this class in a campaign of N requests."""
    return _CLASS_MULTIPLIER[priority] * coverage_unit(request_count)


@dataclass(frozen=True, slots=True)
class Coverage:
    """How many requests of one priority class a campaign had, and served."""

    requested: int
    served: int


@dataclass(frozen=True)
class CampaignResult:
    """A campaign's assignment of requests to offers, and what it achieves."""

    assignments: dict[UUID, UUID]  # request_id → offer_id
    distances_m: dict[UUID, int]  # request_id → distance to its offer, whole metres
    coverage: dict[PriorityClass, Coverage]
    request_count: int
    objective: int  # see the module docstring
    unserved: tuple[UUID, ...] = field(default=())

    @property
    def total_distance_m(self) -> int:
        return sum(self.distances_m.values())

    @property
    def total_distance_km(self) -> float:
        return self.total_distance_m / 1000


def campaign_objective(result: CampaignResult) -> int:
    """``Σ served (w(class) − distance in metres)``, recomputed from the result's figures.

    Two campaigns over the same requests compare by this number: the larger is better, and it
    is larger exactly when the coverage is lexicographically better (REP+ first), or equal with a
    smaller total distance.
    """
    weights = sum(
        coverage.served * coverage_weight(priority, result.request_count)
        for priority, coverage in result.coverage.items()
    )
    return weights - result.total_distance_m


@dataclass(frozen=True, slots=True)
class CampaignGraph:
    """The eligible (request, offer) pairs of a campaign, as arrays (exposed for the benchmark)."""

    requests: tuple[Request, ...]
    offers: tuple[Offer, ...]  # only those with a place left
    request_index: npt.NDArray[np.int64]  # per pair: index into requests
    offer_index: npt.NDArray[np.int64]  # per pair: index into offers
    distance_m: npt.NDArray[np.int64]  # per pair: whole metres

    def costs(self) -> npt.NDArray[np.int64]:
        """Per pair ``d(r, o) − w(class of r)``: the min-cost flow's unit cost."""
        n = len(self.requests)
        weights = np.array([coverage_weight(r.school.priority, n) for r in self.requests], np.int64)
        return self.distance_m - weights[self.request_index]


_KM_PER_DEGREE_OF_LATITUDE = EARTH_RADIUS_KM * math.pi / 180


def campaign_graph(requests: Sequence[Request], offers: Sequence[Offer]) -> CampaignGraph:
    """Every eligible (request, offer) pair with its distance.

    Offer by offer, only the requests that can be in its territory are measured: those of a
    latitude band as wide as the farthest distance allowed (a great-circle distance is never
    shorter than the difference of latitudes), plus those of the académies it serves. The rules
    are then those of :func:`eligible`, on arrays, with :func:`haversine_km`'s formula.
    """
    open_offers = tuple(offer for offer in offers if offer.remaining_capacity > 0)
    n, m = len(requests), len(open_offers)
    lat = np.fromiter((r.school.latitude for r in requests), np.float64, n)
    lon = np.fromiter((r.school.longitude for r in requests), np.float64, n)
    phi = np.radians(lat)
    cos_phi = np.cos(phi)
    limit = np.fromiter(
        (math.inf if r.max_distance_km is None else r.max_distance_km for r in requests),
        np.float64,
        n,
    )
    years = {year: code for code, year in enumerate(sorted({r.school_year for r in requests}))}
    year = np.fromiter((years[r.school_year] for r in requests), np.int64, n)
    kind_bit = np.fromiter((_KIND_BITS[r.school.kind] for r in requests), np.int64, n)
    academie_codes = {
        a: code for code, a in enumerate(sorted({r.school.academie or "" for r in requests}))
    }
    academie = np.fromiter((academie_codes[r.school.academie or ""] for r in requests), np.int64, n)
    members = {code: np.flatnonzero(academie == code) for code in academie_codes.values()}
    by_latitude = np.argsort(lat, kind="stable")
    sorted_lat = lat[by_latitude]
    farthest_wished = float(limit.max()) if n else 0.0
    static_masks: dict[tuple[int, int], npt.NDArray[np.bool_]] = {}
    candidate = np.zeros(n, bool)  # scratch: the union of a band and académies

    request_parts, offer_parts, km_parts = [], [], []
    for j, offer in enumerate(open_offers):
        if offer.school_year not in years:
            continue
        key = (years[offer.school_year], _levels_bits(offer.levels))
        if key not in static_masks:  # same year, and a level the school teaches
            static_masks[key] = (year == key[0]) & (kind_bit & key[1] != 0)
        static = static_masks[key]
        unrestricted = offer.max_distance_km is None and not offer.academies
        radius = (
            farthest_wished
            if unrestricted
            else min(
                farthest_wished,
                -1.0 if offer.max_distance_km is None else offer.max_distance_km,
            )
        )
        served = [academie_codes[a] for a in offer.academies if a and a in academie_codes]
        if radius == math.inf:
            index = np.flatnonzero(static)
        else:
            band = radius / _KM_PER_DEGREE_OF_LATITUDE + 1e-6  # a margin for rounding
            low = int(np.searchsorted(sorted_lat, offer.latitude - band, side="left"))
            high = int(np.searchsorted(sorted_lat, offer.latitude + band, side="right"))
            in_band = by_latitude[low:high] if radius >= 0 else by_latitude[:0]
            if served:
                candidate[in_band] = True
                for code in served:
                    candidate[members[code]] = True
                index = np.flatnonzero(candidate & static)
                candidate[:] = False
            else:
                index = in_band[static[in_band]]
        if not len(index):
            continue
        h = (
            np.sin((phi[index] - math.radians(offer.latitude)) / 2) ** 2
            + math.cos(math.radians(offer.latitude))
            * cos_phi[index]
            * np.sin(np.radians(offer.longitude - lon[index]) / 2) ** 2
        )
        km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
        territory = km <= limit[index]
        if not unrestricted:
            reach = km <= (-1.0 if offer.max_distance_km is None else offer.max_distance_km)
            if served:
                reach |= np.isin(academie[index], served)
            territory &= reach
        request_parts.append(index[territory])
        offer_parts.append(np.full(int(territory.sum()), j, np.int64))
        km_parts.append(km[territory])

    request_index = np.concatenate([np.zeros(0, np.int64), *request_parts])
    offer_index = np.concatenate([np.zeros(0, np.int64), *offer_parts])
    distance_km = np.concatenate([np.zeros(0, np.float64), *km_parts])
    offer_number = {offer.offer_id: j for j, offer in enumerate(open_offers)}
    declined = [
        i * m + offer_number[offer_id]
        for i, r in enumerate(requests)
        for offer_id in r.excluded_offer_ids
        if offer_id in offer_number
    ]
    if declined:
        keep = ~np.isin(request_index * m + offer_index, declined)
        request_index, offer_index, distance_km = (
            request_index[keep],
            offer_index[keep],
            distance_km[keep],
        )
    return CampaignGraph(
        requests=tuple(requests),
        offers=open_offers,
        request_index=request_index,
        offer_index=offer_index,
        distance_m=np.rint(distance_km * 1000).astype(np.int64),
    )


_KIND_BITS = {"college": 1, "lycee": 2}


@functools.cache
def _academie_set(academies: tuple[str, ...]) -> frozenset[str]:
    return frozenset(a for a in academies if a)


@functools.cache
def _levels_bits(levels: tuple[str, ...]) -> int:
    """Which kinds of school an offer's levels suit, as bits of ``_KIND_BITS``."""
    return sum(
        bit for kind, bit in _KIND_BITS.items() if not LEVELS_BY_KIND[kind].isdisjoint(levels)
    )


def _result(graph: CampaignGraph, chosen: Iterable[int]) -> CampaignResult:
    """The campaign result of a set of chosen pairs (indices into the graph's arrays)."""
    requests, offers = graph.requests, graph.offers
    assignments: dict[UUID, UUID] = {}
    distances: dict[UUID, int] = {}
    for pair in chosen:
        request = requests[int(graph.request_index[pair])]
        assignments[request.request_id] = offers[int(graph.offer_index[pair])].offer_id
        distances[request.request_id] = int(graph.distance_m[pair])
    requested = dict.fromkeys(PriorityClass, 0)
    served = dict.fromkeys(PriorityClass, 0)
    for request in requests:
        requested[request.school.priority] += 1
        served[request.school.priority] += request.request_id in assignments
    coverage = {p: Coverage(requested=requested[p], served=served[p]) for p in PriorityClass}
    n = len(requests)
    objective = sum(coverage_weight(p, n) * served[p] for p in PriorityClass) - sum(
        distances.values()
    )
    return CampaignResult(
        assignments=assignments,
        distances_m=distances,
        coverage=coverage,
        request_count=n,
        objective=objective,
        unserved=tuple(r.request_id for r in requests if r.request_id not in assignments),
    )


class CostRangeError(RuntimeError):
    """The solver's costs would overflow its 64-bit range."""


def solve_min_cost_flow(
    graph: CampaignGraph, kept: npt.NDArray[np.bool_] | None = None
) -> tuple[npt.NDArray[np.int64], int]:
    """Solve the campaign's min-cost flow: the chosen pairs' indices and the optimal cost.

    Nodes: the source, one per request, one per offer, the sink. Arcs: source → request
    (capacity 1), request → offer per eligible pair (capacity 1, cost ``d − w``), offer → sink
    (its remaining capacity), and source → sink (the requests left unserved, cost 0). When a
    school has several requests eligible to one offer, their pairs go to a (school, offer) node
    first, with one unit on to the offer: a school takes one place of an offer.

    ``kept`` (per pair): the pairs proposed now, which the live flow keeps when another optimum
    is exactly as good. Costs are then ``(N + 1)(d − w) − kept``: a kept pair wins only a tie,
    since the N bonuses together never outweigh one metre. When those costs would overflow
    OR-Tools' 64-bit range (tens of thousands of requests), the tie-break is left out: the
    optimum is the same, only which one of equals is chosen may differ. The optimal cost
    returned is the unscaled one.
    """
    if kept is not None and len(kept) and kept.any():
        scale = len(graph.requests) + 1
        costs = graph.costs()
        scaled = costs * scale - kept.astype(np.int64)
        nodes = len(graph.requests) + len(graph.offers) + 2
        if int(np.abs(scaled).max()) < (2**62) // (nodes + 1):
            with contextlib.suppress(CostRangeError):  # then without the tie-break
                chosen, _ = _solve_flow(graph, scaled)
                return chosen, int(costs[chosen].sum())
    return _solve_flow(graph, graph.costs())


def _solve_flow(
    graph: CampaignGraph, pair_costs: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], int]:
    n, m, e = len(graph.requests), len(graph.offers), len(graph.request_index)
    source, sink = 0, n + m + 1
    request_nodes = np.arange(1, n + 1, dtype=np.int32)
    offer_nodes = np.arange(n + 1, n + m + 1, dtype=np.int32)
    tails = np.concatenate(
        [
            graph.request_index.astype(np.int32) + 1,
            np.zeros(n, np.int32),
            offer_nodes,
            np.array([source], np.int32),
        ]
    )
    heads = np.concatenate(
        [
            graph.offer_index.astype(np.int32) + n + 1,
            request_nodes,
            np.full(m, sink, np.int32),
            np.array([sink], np.int32),
        ]
    )
    capacities = np.concatenate(
        [
            np.ones(e, np.int64),
            np.ones(n, np.int64),
            np.array([o.remaining_capacity for o in graph.offers], np.int64),
            np.array([n], np.int64),
        ]
    )
    costs = np.concatenate([pair_costs, np.zeros(n + m + 1, np.int64)])
    # A school takes one place of an offer, whatever number of requests it has: the pairs of one
    # school's requests to one offer go through a node of their own, with one unit to the offer.
    shared, groups = _one_place_per_school(graph)
    if len(groups):
        group_nodes = np.arange(n + m + 2, n + m + 2 + len(groups), dtype=np.int32)
        heads[: len(shared)][shared >= 0] = group_nodes[shared[shared >= 0]]
        tails = np.concatenate([tails, group_nodes])
        heads = np.concatenate([heads, groups.astype(np.int32) + n + 1])
        capacities = np.concatenate([capacities, np.ones(len(groups), np.int64)])
        costs = np.concatenate([costs, np.zeros(len(groups), np.int64)])
    solver = min_cost_flow.SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(tails, heads, capacities, costs)
    solver.set_node_supply(source, n)
    solver.set_node_supply(sink, -n)
    status = solver.solve()
    if status == solver.BAD_COST_RANGE:
        raise CostRangeError("the campaign's costs overflow the solver's range")
    if status != solver.OPTIMAL:
        raise RuntimeError(f"the campaign's min-cost flow ended with status {status}")
    flows = solver.flows(np.arange(e, dtype=np.int32))
    return np.flatnonzero(flows), int(solver.optimal_cost())


def _one_place_per_school(
    graph: CampaignGraph,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per pair, the group of the (school, offer) it shares with another request of the same
    school (−1 when it shares none), and per group its offer's index."""
    e = len(graph.request_index)
    schools: dict[UUID, int] = {}
    code = np.fromiter(
        (schools.setdefault(r.school.partner_id, len(schools)) for r in graph.requests),
        np.int64,
        len(graph.requests),
    )
    if len(schools) == len(graph.requests) or not e:  # one request per school: nothing shared
        return np.full(e, -1, np.int64), np.zeros(0, np.int64)
    keys = code[graph.request_index] * max(len(graph.offers), 1) + graph.offer_index
    unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    shared_keys = np.flatnonzero(counts > 1)
    group_of_key = np.full(len(unique), -1, np.int64)
    group_of_key[shared_keys] = np.arange(len(shared_keys))
    groups = unique[shared_keys] % max(len(graph.offers), 1)
    return group_of_key[inverse.ravel()], groups


def solve_campaign(
    requests: Sequence[Request],
    offers: Sequence[Offer],
    *,
    keep: Mapping[UUID, UUID] | None = None,
) -> CampaignResult:
    """The optimal campaign (objective in the module docstring), by OR-Tools min-cost flow.

    ``keep`` (request → offer, the proposals standing now): among optimal assignments, the one
    that moves the fewest of them (the live flow's tie-break, see ``solve_min_cost_flow``)."""
    return solve_graph(campaign_graph(requests, offers), keep=keep)


def solve_graph(graph: CampaignGraph, *, keep: Mapping[UUID, UUID] | None = None) -> CampaignResult:
    """:func:`solve_campaign` over pairs already found (the live flow keeps the graph to price
    the result, :func:`offer_prices`)."""
    kept = None
    if keep:
        request_ids = np.array([keep.get(r.request_id) for r in graph.requests], dtype=object)
        offer_ids = np.array([o.offer_id for o in graph.offers], dtype=object)
        kept = request_ids[graph.request_index] == offer_ids[graph.offer_index]
    chosen, _ = solve_min_cost_flow(graph, kept)
    return _result(graph, chosen.tolist())


# --- one arrival, one augmenting path (the live flow's request filed, decision 55) ---------------

# The prices' own K: any K above every total distance gives the same optimum (module docstring),
# and prices kept between solves must not change with the number of requests. A million
# requests at the farthest distance stay below it; 4 K stays far within 64 bits.
PRICE_UNIT = coverage_unit(1_000_000)


def pair_value(priority: PriorityClass, distance_m: int) -> int:
    """``w(class) − d`` with the prices' unit: what serving a request at that distance is
    worth."""
    return _CLASS_MULTIPLIER[priority] * PRICE_UNIT - int(distance_m)


@dataclass(frozen=True)
class OfferTable:
    """The offers with a place left, as arrays, to find one request's eligible offers at once
    (:meth:`pairs`): the same pairs and distances as :func:`campaign_graph`, whose formula it
    repeats operation by operation so that the metres are the same."""

    offers: tuple[Offer, ...]
    index: dict[UUID, int]
    latitude_radians: npt.NDArray[np.float64]
    cos_latitude: npt.NDArray[np.float64]
    longitude: npt.NDArray[np.float64]
    radius: npt.NDArray[np.float64]  # the offer's maximum distance, −1 when none
    unrestricted: npt.NDArray[np.bool_]  # no distance and no académie rule
    kinds: npt.NDArray[np.int64]  # _KIND_BITS the offer's levels suit
    years: npt.NDArray[Any]
    academies: tuple[frozenset[str], ...]
    places: npt.NDArray[np.int64]  # remaining_capacity
    thematics: tuple[frozenset[str], ...]  # normalised
    # the pairs of the requests seen, while this table lives (the live flow keeps a year's
    # table as long as its offers do not change)
    memo: dict[Request, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    serving: dict[str | None, npt.NDArray[np.bool_]] = field(
        default_factory=dict, compare=False, repr=False
    )
    seen: dict[int, tuple[Request, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    # per request seen by ``rank``: the offers it may take and their estimated scores, best
    # first
    estimates: dict[Request, tuple[list[int], list[float]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def of(cls, offers: Sequence[Offer]) -> OfferTable:
        kept = tuple(offer for offer in offers if offer.remaining_capacity > 0)
        m = len(kept)
        latitude_radians = np.fromiter((math.radians(o.latitude) for o in kept), np.float64, m)
        return cls(
            offers=kept,
            index={offer.offer_id: j for j, offer in enumerate(kept)},
            latitude_radians=latitude_radians,
            cos_latitude=np.fromiter(map(math.cos, latitude_radians.tolist()), np.float64, m),
            longitude=np.fromiter((o.longitude for o in kept), np.float64, m),
            radius=np.fromiter(
                (-1.0 if o.max_distance_km is None else o.max_distance_km for o in kept),
                np.float64,
                m,
            ),
            unrestricted=np.fromiter(
                (o.max_distance_km is None and not o.academies for o in kept), bool, m
            ),
            kinds=np.fromiter((_levels_bits(o.levels) for o in kept), np.int64, m),
            years=np.array([o.school_year for o in kept], dtype=object),
            academies=tuple(_academie_set(o.academies) for o in kept),
            places=np.fromiter((o.remaining_capacity for o in kept), np.int64, m),
            thematics=tuple(_normalised(o.thematics) for o in kept),
        )

    def pairs(
        self, request: Request, *, slack_km: float = 0.0
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The offers eligible for the request (indices into ``offers``, ascending) and their
        distances in whole metres. ``slack_km``: distance limits that much wider (a superset,
        for :func:`rank_candidates`, which checks each offer with its own formula)."""
        if not slack_km:
            # the same object first (hashing a request hashes its school and exclusions), then
            # an equal one; ``seen`` holds the object, so its id names no other while there
            seen = self.seen.get(id(request))
            if seen is not None and seen[0] is request:
                return seen[1]
            known = self.memo.get(request)
            if known is None:
                known = self.memo[request] = self._pairs(request, 0.0)
            self.seen[id(request)] = (request, known)
            return known
        return self._pairs(request, slack_km)

    def _serving(self, academie: str | None) -> npt.NDArray[np.bool_]:
        """Per offer, whether it serves the académie (kept in ``serving``)."""
        known = self.serving.get(academie)
        if known is None:
            known = self.serving[academie] = np.fromiter(
                (academie is not None and academie in a for a in self.academies),
                bool,
                len(self.academies),
            )
        return known

    def rank(self, request: Request, limit: int = 5) -> list[Candidate]:
        """:func:`rank_candidates` over the table's offers, the same list, without scoring
        every offer in Python: the offers that may be eligible (``pairs`` with 10 m of slack)
        are scored in numpy from this table's distances, then checked and scored exactly, best
        estimate first, until no offer left can enter the ``limit`` best. An estimate is
        within one point of the exact score (the distances differ by far less than a metre,
        and only the distance part depends on them), so an offer whose estimate is below the
        ``limit``-th exact score minus one can only be worse."""
        if limit <= 0:
            return []
        wished = _normalised(request.thematics)
        known = self.estimates.get(request)
        if known is None:
            index, km = self._near(request, 0.01)
            estimate = (
                np.rint(DISTANCE_POINTS * DISTANCE_HALF_KM / (DISTANCE_HALF_KM + km))
                + np.fromiter(
                    (_thematic_points(wished, self.thematics[j]) for j in index.tolist()),
                    np.float64,
                    len(index),
                )
                + CAPACITY_POINTS_PER_PLACE
                * np.minimum(self.places[index], CAPACITY_PLACES_COUNTED)
            )
            order = np.argsort(-estimate, kind="stable")
            known = self.estimates[request] = (index[order].tolist(), estimate[order].tolist())
        scored: list[tuple[int, float, UUID, Offer]] = []
        for j, guess in zip(*known, strict=True):
            if len(scored) >= limit and guess + 1 < -_limit_th(scored, limit)[0]:
                break
            item = _scored(request, self.offers[j], wished)
            if item is not None:
                scored.append(item)
        return _candidates(request, scored, limit)

    def _pairs(
        self, request: Request, slack_km: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        index, km = self._near(request, slack_km)
        return index, np.rint(km * 1000).astype(np.int64)

    def _near(
        self, request: Request, slack_km: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The offers eligible for the request with limits ``slack_km`` wider, and their
        distances in kilometres."""
        if not self.offers:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        school = request.school
        static = (self.years == request.school_year) & (self.kinds & _KIND_BITS[school.kind] != 0)
        for offer_id in request.excluded_offer_ids:
            j = self.index.get(offer_id)
            if j is not None:
                static[j] = False
        index = np.flatnonzero(static)
        phi = np.radians(np.array([school.latitude], np.float64))
        cos_phi = np.cos(phi)[0]
        h = (
            np.sin((phi[0] - self.latitude_radians[index]) / 2) ** 2
            + self.cos_latitude[index]
            * cos_phi
            * np.sin(np.radians(self.longitude[index] - school.longitude) / 2) ** 2
        )
        km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
        limit = math.inf if request.max_distance_km is None else request.max_distance_km
        territory = (km - slack_km <= limit) & (
            self.unrestricted[index]
            | (km - slack_km <= self.radius[index])
            | self._serving(school.academie)[index]
        )
        return index[territory], km[territory]


def offer_prices(graph: CampaignGraph, assignments: Mapping[UUID, UUID]) -> dict[UUID, int] | None:
    """The price of a place of each offer of the graph that proves the assignment optimal,
    or None when none does (it is not optimal, or not feasible).

    The prices ``p(o)`` and values ``u(r)`` are the dual of the assignment, with
    ``v(r, o) = pair_value``: ``p ≥ 0``, ``p(o) = 0`` when ``o`` has a place nobody holds,
    ``u(r) = v(r, o) − p(o) ≥ 0`` for ``r`` held at ``o``, ``u(r) = 0`` for ``r`` unserved, and
    ``u(r) + p(o') ≥ v(r, o')`` for every eligible pair. They are the shortest distances from
    each offer to "a place freed" in the residual graph: leave a free place (0), let go of a
    holder ``r`` (``v(r, o)``), or move a holder to another offer it may take
    (``v(r, o) − v(r, o')``) and go on from there; Bellman-Ford over the offers, whose rounds
    are numpy operations over the pairs. Every condition is then checked. A school holding
    two places is not modelled here (a relaxation): when that rule is what made the assignment
    optimal, the checks fail and None is returned."""
    n, m = len(graph.requests), len(graph.offers)
    if not m:
        return {}
    index = {r.request_id: i for i, r in enumerate(graph.requests)}
    offer_number = {o.offer_id: j for j, o in enumerate(graph.offers)}
    held = np.full(n, -1, np.int64)
    for request_id, offer_id in assignments.items():
        if request_id not in index or offer_id not in offer_number:
            return None
        held[index[request_id]] = offer_number[offer_id]
    multiplier = np.array([_CLASS_MULTIPLIER[r.school.priority] for r in graph.requests], np.int64)
    value = multiplier[graph.request_index] * PRICE_UNIT - graph.distance_m
    holder_of_pair = held[graph.request_index]
    here = holder_of_pair == graph.offer_index
    if int(here.sum()) != int((held >= 0).sum()):
        return None  # an assignment that is no eligible pair
    taken = np.bincount(held[held >= 0], minlength=m)
    places = np.array([o.remaining_capacity for o in graph.offers], np.int64)
    if (taken > places).any():
        return None
    full = taken >= places
    value_here = np.zeros(n, np.int64)
    value_here[graph.request_index[here]] = value[here]
    terminal = np.where(full, np.iinfo(np.int64).max // 4, 0).astype(np.int64)
    np.minimum.at(terminal, graph.offer_index[here], value[here])
    terminal[~full] = 0
    moving = (holder_of_pair >= 0) & ~here
    tail = holder_of_pair[moving]
    order = np.argsort(tail, kind="stable")
    tail, head = tail[order], graph.offer_index[moving][order]
    cost = (value_here[graph.request_index[moving]] - value[moving])[order]
    price = terminal.copy()
    if len(tail):
        starts = np.flatnonzero(np.r_[True, tail[1:] != tail[:-1]])
        tails = tail[starts]
        for _ in range(m + 1):
            best = np.minimum.reduceat(cost + price[head], starts)
            lower = best < price[tails]
            if not lower.any():
                break
            price[tails[lower]] = best[lower]
        else:
            return None  # a cycle that costs less than nothing: not optimal
    u = value_here - np.where(held >= 0, price[np.maximum(held, 0)], 0)
    if (
        (price < 0).any()
        or (price[~full] != 0).any()
        or (u[held >= 0] < 0).any()
        or (u[graph.request_index] + price[graph.offer_index] < value).any()
    ):
        return None
    return {offer.offer_id: int(price[j]) for j, offer in enumerate(graph.offers)}


@dataclass(frozen=True)
class Augmentation:
    """What one arrival changes: the requests that move (request → the offer now proposed,
    None when it loses its place), the new prices of the offers the search settled, and how
    many it settled."""

    moves: dict[UUID, UUID | None]
    prices: dict[UUID, int]
    settled: int


# Holders of offers, as the search asks for them: offer index → the requests proposed to it.
Holders = Mapping[int, Sequence[Request]]
_PREFETCH = 32  # offers whose holders one question asks for: the one needed, and the next


def augmenting_path(
    arrival: Request, table: OfferTable, prices: Sequence[int]
) -> Generator[list[int], Holders, Augmentation | None]:
    """The optimum once ``arrival`` joins, from the optimum before it, as one shortest path.

    ``prices`` (per offer of the table) must prove the standing proposals optimal
    (:func:`offer_prices`). Then the new
    optimum is the old one changed along the cheapest of these paths, or nothing when none
    costs less than nothing (the arrival waits): the arrival takes a place of ``o1``, a holder
    of ``o1`` moves to ``o2``, …, ending at a free place, or with the last offer's holder let go
    (the costs are ``−v``, ``v(r, oi) − v(r, oi+1)`` and ``+v`` of the one let go). Why one path
    is enough: the difference between the new optimum and the old is a sum of paths and cycles
    of the residual graph; only one can use the arrival's unit, and every other one was there
    before, where the old optimum left none that costs less than nothing.

    The search is Dijkstra's over the offers with the costs reduced by the prices, which
    makes them all non-negative: it stops as soon as the cheapest offer left costs more than
    the best path found, so it settles the offers near the arrival only. The prices of the
    settled offers are then raised (``p + β − min(L, β)``, with ``β`` the best path's cost
    capped at 0) so that they prove the new optimum too.

    A generator: it yields the indices of offers whose holders it needs and is sent them
    (``Holders``, every offer asked for), so the caller may read them from a database; whether
    an offer has a free place is known from them. None when the prices turn out
    not to prove the proposals optimal (a holder whose offer is no longer eligible for it, a
    negative reduced cost): the caller then re-solves the whole campaign. A school taking two
    places of one offer is not checked here (the caller checks the moves)."""
    places = [offer.remaining_capacity for offer in table.offers]
    price = np.asarray(prices, np.int64)
    settled = np.zeros(len(places), bool)
    tentative = np.full(len(places), np.iinfo(np.int64).max, np.int64)  # best key pushed
    heap: list[tuple[int, int, int, int, Request]] = []
    counter = itertools.count()  # ties: first pushed first
    labels: dict[int, int] = {}
    came: dict[int, tuple[int, Request]] = {}  # offer → (offer before it, request moved in)
    holders: dict[int, Sequence[Request]] = {}
    best = 0  # staying unserved costs nothing
    end: tuple[int, Request | None] | None = None

    def push(
        keys: npt.NDArray[np.int64], offers: npt.NDArray[np.int64], j: int, r: Request
    ) -> None:
        """Push the offers a path may reach at these costs, those that can still beat the best
        path found (no other is ever settled) and their best key pushed so far only."""
        keep = (keys < best) & (keys < tentative[offers]) & ~settled[offers]
        tentative[offers[keep]] = keys[keep]
        for key, k in zip(keys[keep].tolist(), offers[keep].tolist(), strict=True):
            heapq.heappush(heap, (key, next(counter), k, j, r))

    indices, metres = table.pairs(arrival)
    multiplier = _CLASS_MULTIPLIER[arrival.school.priority] * PRICE_UNIT
    push(price[indices] - (multiplier - metres), indices, -1, arrival)
    while heap:
        key, _, j, before, moved = heapq.heappop(heap)
        if j in labels:
            continue
        if key >= best:
            break
        labels[j], came[j] = key, (before, moved)
        settled[j] = True
        if j not in holders:
            wanted = [j]  # and the next offers, in the order they wait (roughly)
            for entry in heap:
                k = entry[2]
                if len(wanted) >= _PREFETCH:
                    break
                if k not in holders and k not in labels and k not in wanted:
                    wanted.append(k)
            holders.update((yield wanted))
        if len(holders[j]) < places[j]:  # a free place: this path ends here (p = 0)
            best, end = key, (j, None)
            continue
        for holder in holders[j]:
            indices, metres = table.pairs(holder)
            at = int(indices.searchsorted(j))  # the indices are in ascending order
            if at == len(indices) or indices[at] != j:
                return None  # its offer is no longer eligible for it
            values = _CLASS_MULTIPLIER[holder.school.priority] * PRICE_UNIT - metres
            spare = int(values[at]) - prices[j]  # u(r)
            if spare < 0:
                return None
            if key + spare < best:  # let this holder go
                best, end = key + spare, (j, holder)
            reduced = spare + price[indices] - values  # zero for its own offer
            if (reduced < 0).any():
                return None
            push(key + reduced, indices, j, holder)
    moves: dict[UUID, UUID | None] = {}
    if end is not None:
        j, let_go = end
        if let_go is not None:
            moves[let_go.request_id] = None
        while j >= 0:
            before, moved = came[j]
            moves[moved.request_id] = table.offers[j].offer_id
            j = before
    new_prices = {
        table.offers[j].offer_id: prices[j] + best - min(label, best)
        for j, label in labels.items()
        if label < best
    }
    return Augmentation(moves=moves, prices=new_prices, settled=len(labels))


def _ranks(keys: Sequence[Any]) -> npt.NDArray[np.int64]:
    """Each key's rank in the sorted keys."""
    ranks = np.empty(len(keys), np.int64)
    ranks[sorted(range(len(keys)), key=keys.__getitem__)] = np.arange(len(keys))
    return ranks


def greedy_campaign(requests: Sequence[Request], offers: Sequence[Offer]) -> CampaignResult:
    """The baseline: requests by priority class (then request id), each to its nearest eligible
    offer that still has a place (ties to the smaller offer id)."""
    graph = campaign_graph(requests, offers)
    request_rank = _ranks([(r.school.priority, r.request_id) for r in graph.requests])
    offer_rank = _ranks([offer.offer_id for offer in graph.offers])
    # every pair, in the order greedy looks at them: request by request, nearest offer first
    order = np.lexsort(
        (offer_rank[graph.offer_index], graph.distance_m, request_rank[graph.request_index])
    )
    ranks = request_rank[graph.request_index[order]]
    starts = np.searchsorted(ranks, np.arange(len(graph.requests) + 1)).tolist()
    offer_of_pair = graph.offer_index[order].tolist()
    places = [offer.remaining_capacity for offer in graph.offers]
    chosen: list[int] = []
    for start, end in itertools.pairwise(starts):
        for k in range(start, end):
            if places[offer_of_pair[k]] > 0:
                places[offer_of_pair[k]] -= 1
                chosen.append(int(order[k]))
                break
    return _result(graph, chosen)
