"""Properties of the campaign on random small instances (hypothesis).

The campaign's objective (``maillage.cordees.domain``'s docstring) maximises priority-weighted
coverage, then minimises total distance. What is checked here, on every instance drawn:

- feasible: every assignment is an eligible pair, no offer takes more than its places, a request
  is served at most once, the distances are the pairs' haversine distances;
- priorities respected, exactly: for every class c, the number of served requests of class c or
  higher is the largest number of such requests that can be served together (computed by an
  independent augmenting-path matching). Hence no unserved request is eligible for an offer with
  a place left, or for the offer of a served request of a lower class, and the total coverage is
  maximal too;
- never worse than greedy (objective and coverage compared lexicographically);
- on tiny instances, the same objective as brute force over every assignment;
- the vectorised pair search and the single-request ranking agree with ``eligible``/``score``;
"""

import itertools
from collections import Counter
from dataclasses import replace
from uuid import UUID

from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from maillage.cordees.domain import (
    LEVELS,
    Augmentation,
    CampaignResult,
    Offer,
    OfferTable,
    PriorityClass,
    Request,
    School,
    augmenting_path,
    campaign_graph,
    campaign_objective,
    coverage_weight,
    eligible,
    greedy_campaign,
    haversine_km,
    offer_prices,
    rank_candidates,
    score,
    solve_campaign,
)

YEARS = ("2026-2027", "2027-2028")
ACADEMIES = ("01", "24", "25")
LIMITS_KM = (None, 4.0, 8.0)

declines = st.sampled_from((0, 0, 0, 1))
# A grid of 1 km steps around Paris, 11 km a side, so that limits of a few km pass and fail.
latitudes = st.integers(0, 10).map(lambda k: 48.80 + k * 0.009)
longitudes = st.integers(0, 10).map(lambda k: 2.28 + k * 0.0137)


@st.composite
def offers(draw: st.DrawFn, n: int) -> Offer:
    return Offer(
        offer_id=UUID(int=1_000 + n),
        tete_partner_id=UUID(int=2_000 + n),
        latitude=draw(latitudes),
        longitude=draw(longitudes),
        levels=draw(st.sampled_from((LEVELS, LEVELS[:2], LEVELS[2:], ("3e", "2nde"), ("1re",)))),
        thematics=tuple(draw(st.sets(st.sampled_from(("sciences", "arts", "droit")), max_size=2))),
        max_distance_km=draw(st.sampled_from(LIMITS_KM)),
        academies=tuple(sorted(draw(st.sets(st.sampled_from(ACADEMIES), max_size=2)))),
        remaining_capacity=draw(st.integers(0, 3)),
        school_year=draw(st.sampled_from(YEARS[:1] * 9 + YEARS[1:])),
    )


@st.composite
def requests(draw: st.DrawFn, n: int, offer_ids: list[UUID]) -> Request:
    return Request(
        request_id=UUID(int=3_000 + n),
        school=School(
            partner_id=UUID(int=4_000 + n),
            uai="0940123Y",
            kind=draw(st.sampled_from(("college", "lycee"))),
            departement="94",
            academie=draw(st.sampled_from((*ACADEMIES, None))),
            latitude=draw(latitudes),
            longitude=draw(longitudes),
            priority=draw(st.sampled_from(PriorityClass)),
        ),
        thematics=tuple(draw(st.sets(st.sampled_from(("sciences", "arts", "santé")), max_size=2))),
        max_distance_km=draw(st.sampled_from(LIMITS_KM)),
        school_year=draw(st.sampled_from(YEARS[:1] * 9 + YEARS[1:])),
        # now and then, an offer this request declined before
        excluded_offer_ids=frozenset(
            draw(st.sampled_from(offer_ids)) for _ in range(draw(declines) if offer_ids else 0)
        ),
    )


@st.composite
def instances(
    draw: st.DrawFn, max_requests: int = 12, max_offers: int = 5
) -> tuple[list[Request], list[Offer]]:
    offer_list = [draw(offers(n)) for n in range(draw(st.integers(0, max_offers)))]
    ids = [o.offer_id for o in offer_list]
    request_list = [draw(requests(n, ids)) for n in range(draw(st.integers(0, max_requests)))]
    return request_list, offer_list


def distance_m(request: Request, offer: Offer) -> int:
    school = request.school
    return round(
        haversine_km(school.latitude, school.longitude, offer.latitude, offer.longitude) * 1000
    )


def max_servable(requests: list[Request], offers: list[Offer]) -> int:
    """The most requests that can be served together: augmenting paths over offer places."""
    places = [o for o in offers for _ in range(max(o.remaining_capacity, 0))]
    holder: list[int | None] = [None] * len(places)

    def augment(i: int, seen: set[int]) -> bool:
        for slot, place in enumerate(places):
            if slot in seen or not eligible(requests[i], place):
                continue
            seen.add(slot)
            held = holder[slot]
            if held is None or augment(held, seen):
                holder[slot] = i
                return True
        return False

    return sum(augment(i, set()) for i in range(len(requests)))


def lexicographic(result: CampaignResult) -> tuple[int, ...]:
    served = [result.coverage[p].served for p in sorted(PriorityClass)]
    return (*served, -result.total_distance_m)


def assert_feasible(result: CampaignResult, requests: list[Request], offers: list[Offer]) -> None:
    by_request = {r.request_id: r for r in requests}
    by_offer = {o.offer_id: o for o in offers}
    for request_id, offer_id in result.assignments.items():
        assert eligible(by_request[request_id], by_offer[offer_id])
        assert result.distances_m[request_id] == distance_m(
            by_request[request_id], by_offer[offer_id]
        )
    for offer_id, taken in Counter(result.assignments.values()).items():
        assert taken <= by_offer[offer_id].remaining_capacity
    assert set(result.assignments) | set(result.unserved) == set(by_request)
    assert not set(result.assignments) & set(result.unserved)
    assert result.objective == campaign_objective(result)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(instances())
def test_campaign_is_feasible_and_respects_priorities(
    instance: tuple[list[Request], list[Offer]],
) -> None:
    requests, offers = instance
    result = solve_campaign(requests, offers)
    assert_feasible(result, requests, offers)

    for c in PriorityClass:
        higher = [r for r in requests if r.school.priority <= c]
        served = sum(result.coverage[p].served for p in PriorityClass if p <= c)
        assert served == max_servable(higher, offers), f"classes up to {c.name}"

    by_offer = {o.offer_id: o for o in offers}
    taken = Counter(result.assignments.values())
    served_by_offer: dict[UUID, list[Request]] = {}
    for r in requests:
        if r.request_id in result.assignments:
            served_by_offer.setdefault(result.assignments[r.request_id], []).append(r)
    for r in requests:
        if r.request_id in result.assignments:
            continue
        for o in offers:
            if not eligible(r, o):
                continue
            assert taken[o.offer_id] == by_offer[o.offer_id].remaining_capacity
            assert all(s.school.priority <= r.school.priority for s in served_by_offer[o.offer_id])


@FAST
@given(instances())
def test_campaign_is_never_worse_than_greedy(instance: tuple[list[Request], list[Offer]]) -> None:
    requests, offers = instance
    optimal, greedy = solve_campaign(requests, offers), greedy_campaign(requests, offers)
    assert_feasible(greedy, requests, offers)
    target(float(len(optimal.assignments) - len(greedy.assignments)), label="greedy's shortfall")
    assert campaign_objective(optimal) >= campaign_objective(greedy)
    assert lexicographic(optimal) >= lexicographic(greedy)


def brute_force_objective(requests: list[Request], offers: list[Offer]) -> int:
    n = len(requests)
    choices = [[None, *(o for o in offers if eligible(r, o))] for r in requests]
    best = 0
    for assignment in itertools.product(*choices):
        taken = Counter(o.offer_id for o in assignment if o is not None)
        if any(taken[o.offer_id] > o.remaining_capacity for o in offers):
            continue
        value = sum(
            coverage_weight(r.school.priority, n) - distance_m(r, o)
            for r, o in zip(requests, assignment, strict=True)
            if o is not None
        )
        best = max(best, value)
    return best


@FAST
@given(instances(max_requests=6, max_offers=3))
def test_campaign_equals_brute_force_on_tiny_instances(
    instance: tuple[list[Request], list[Offer]],
) -> None:
    requests, offers = instance
    assert solve_campaign(requests, offers).objective == brute_force_objective(requests, offers)


@FAST
@given(instances(max_requests=10, max_offers=8))
def test_the_pair_search_finds_exactly_the_eligible_pairs(
    instance: tuple[list[Request], list[Offer]],
) -> None:
    requests, offers = instance
    graph = campaign_graph(requests, offers)
    found = {
        (graph.requests[i].request_id, graph.offers[j].offer_id, d)
        for i, j, d in zip(graph.request_index, graph.offer_index, graph.distance_m, strict=True)
    }
    expected = {
        (r.request_id, o.offer_id, distance_m(r, o))
        for r in requests
        for o in offers
        if eligible(r, o)
    }
    assert found == expected
    assert len(found) == len(graph.request_index)


@FAST
@given(instances(max_requests=3, max_offers=8), st.integers(0, 8))
def test_ranking_is_the_sorted_eligible_offers(
    instance: tuple[list[Request], list[Offer]], limit: int
) -> None:
    requests, offers = instance
    for request in requests:
        expected = sorted(
            (o for o in offers if eligible(request, o)),
            key=lambda o: (-score(request, o).score, score(request, o).distance_km, o.offer_id),
        )[:limit]
        ranked = rank_candidates(request, list(reversed(offers)), limit=limit)
        assert [c.offer for c in ranked] == expected
        assert [c.rank for c in ranked] == list(range(1, len(expected) + 1))
        for c in ranked:
            assert c.explanation == score(request, c.offer)
            assert c.explanation.score == sum(p.points for p in c.explanation.parts)


@FAST
@given(instances(max_requests=3, max_offers=30), st.integers(0, 6))
def test_ranking_over_the_offer_table_is_the_same_list(
    instance: tuple[list[Request], list[Offer]], limit: int
) -> None:
    """``OfferTable.rank`` (estimates in numpy, then exact scores while an offer may still
    enter) gives what ``rank_candidates`` gives over every offer."""
    requests, offers = instance
    table = OfferTable.of(offers)
    for request in requests:
        expected = rank_candidates(request, offers, limit=limit)
        assert table.rank(request, limit) == expected
        assert table.rank(request, limit) == expected  # from the estimates kept


def augment_in_memory(
    arrival: Request,
    requests: list[Request],
    offers: list[Offer],
    standing: dict[UUID, UUID],
    prices: dict[UUID, int],
) -> Augmentation | None:
    """``augmenting_path`` driven as the live flow drives it, its holders from memory."""
    table = OfferTable.of(offers)
    held: dict[int, list[Request]] = {j: [] for j in range(len(table.offers))}
    for request in requests:
        if request.request_id in standing:
            held[table.index[standing[request.request_id]]].append(request)
    search = augmenting_path(arrival, table, [prices[o.offer_id] for o in table.offers])
    try:
        wanted = next(search)
        while True:
            wanted = search.send({j: held[j] for j in wanted})
    except StopIteration as done:
        return done.value


def result_of(requests: list[Request], offers: list[Offer], standing: dict[UUID, UUID]) -> tuple:
    """(served per class, total distance) of an assignment."""
    by_offer = {o.offer_id: o for o in offers}
    served = Counter(r.school.priority for r in requests if r.request_id in standing)
    total = sum(
        distance_m(r, by_offer[standing[r.request_id]])
        for r in requests
        if r.request_id in standing
    )
    return (*(served[p] for p in sorted(PriorityClass)), -total)


@FAST
@given(instances(max_requests=14, max_offers=6), st.data())
def test_one_augmenting_path_per_arrival_equals_the_whole_re_solve(
    instance: tuple[list[Request], list[Offer]], data: st.DataObject
) -> None:
    """Requests arrive one by one; each is answered by one shortest augmenting path from the
    prices kept (``augmenting_path``), as the live flow does: after every arrival, the same
    served count per class and total distance as the whole re-solve, the proposals never beyond
    an offer's places, and prices that still prove the result optimal. With a school filing
    several requests the path may be refused (a school takes one place of an offer, which the
    prices do not model): the whole re-solve then answers, and its prices are taken anew."""
    requests, offers = instance
    siblings = data.draw(st.booleans())
    if siblings:
        requests = [
            replace(r, school=requests[0].school) if k % 3 == 1 else r
            for k, r in enumerate(requests)
        ]
    standing: dict[UUID, UUID] = {}
    prices = offer_prices(campaign_graph([], offers), {})
    assert prices is not None
    for count, arrival in enumerate(requests, start=1):
        arrived = requests[:count]
        whole = solve_campaign(arrived, offers, keep=standing)
        path = augment_in_memory(arrival, arrived, offers, standing, prices)
        moved = dict(standing)
        if path is not None:
            for request_id, offer_id in path.moves.items():
                if offer_id is None:
                    moved.pop(request_id, None)
                else:
                    moved[request_id] = offer_id
        school_of = {r.request_id: r.school.partner_id for r in arrived}
        taken = [(school_of[r], o) for r, o in moved.items()]
        if path is None or len(taken) != len(set(taken)):
            assert siblings, "the path is refused only when a school has several requests"
            standing = dict(whole.assignments)
            prices = offer_prices(campaign_graph(arrived, offers), standing) or {}
            if len(prices) < len(OfferTable.of(offers).offers):
                assert siblings
                return  # no prices prove it: the live flow re-solves the whole year from here
            continue
        standing = moved
        prices |= path.prices
        assert result_of(arrived, offers, standing) == lexicographic(whole)
        assert_feasible_assignment(arrived, offers, standing)
        graph = campaign_graph(arrived, offers)
        if not siblings:
            assert offer_prices(graph, standing) is not None


def assert_feasible_assignment(
    requests: list[Request], offers: list[Offer], standing: dict[UUID, UUID]
) -> None:
    by_request = {r.request_id: r for r in requests}
    by_offer = {o.offer_id: o for o in offers}
    for request_id, offer_id in standing.items():
        assert eligible(by_request[request_id], by_offer[offer_id])
    for offer_id, taken in Counter(standing.values()).items():
        assert taken <= by_offer[offer_id].remaining_capacity
