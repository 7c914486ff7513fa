"""The matching engine's rules, one by one: eligibility, the explained score, the ranking, and the
campaign on small hand-made instances (the random ones are in test_campaign_properties.py)."""

import random
from dataclasses import replace
from uuid import UUID

import pytest

from maillage.cordees.domain import (
    ACADEMIE_OF_DEPARTEMENT,
    Offer,
    PriorityClass,
    Request,
    School,
    academie_of,
    campaign_objective,
    eligible,
    greedy_campaign,
    haversine_km,
    priority_class,
    rank_candidates,
    score,
    solve_campaign,
)

YEAR = "2026-2027"
ORLY = (48.7442, 2.3850)  # Collège Robert Desnos
VILLEJUIF = (48.7890, 2.3630)  # EFREI, 5.2 km from Orly
PARIS = (48.8530, 2.3499)  # Lycée Henri-IV, 12.4 km from Orly
LYON = (45.7640, 4.8357)


def school(
    n: int,
    priority: PriorityClass = PriorityClass.REP_PLUS,
    at: tuple[float, float] = ORLY,
    kind: str = "college",
    academie: str | None = "24",
) -> School:
    return School(
        partner_id=UUID(int=n),
        uai="0940123Y",
        kind=kind,
        departement="94",
        academie=academie,
        latitude=at[0],
        longitude=at[1],
        priority=priority,
    )


def request(
    n: int,
    priority: PriorityClass = PriorityClass.REP_PLUS,
    at: tuple[float, float] = ORLY,
    *,
    kind: str = "college",
    thematics: tuple[str, ...] = ("sciences", "numérique"),
    max_distance_km: float | None = None,
    year: str = YEAR,
    declined: frozenset[UUID] = frozenset(),
) -> Request:
    return Request(
        request_id=UUID(int=10_000 + n),
        school=school(n, priority, at, kind),
        thematics=thematics,
        max_distance_km=max_distance_km,
        school_year=year,
        excluded_offer_ids=declined,
    )


def offer(
    n: int,
    at: tuple[float, float] = VILLEJUIF,
    *,
    capacity: int = 3,
    levels: tuple[str, ...] = ("4e", "3e"),
    thematics: tuple[str, ...] = ("sciences",),
    max_distance_km: float | None = 50.0,
    academies: tuple[str, ...] = (),
    year: str = YEAR,
) -> Offer:
    return Offer(
        offer_id=UUID(int=20_000 + n),
        tete_partner_id=UUID(int=30_000 + n),
        latitude=at[0],
        longitude=at[1],
        levels=levels,
        thematics=thematics,
        max_distance_km=max_distance_km,
        academies=academies,
        remaining_capacity=capacity,
        school_year=year,
    )


# --- reference rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("education_prioritaire", "qpv", "rural", "expected"),
    [
        ("REP+", None, None, PriorityClass.REP_PLUS),
        (" rep+ ", True, True, PriorityClass.REP_PLUS),
        ("REP", True, None, PriorityClass.REP),
        (None, True, None, PriorityClass.QPV_OR_RURAL),
        ("", False, True, PriorityClass.QPV_OR_RURAL),
        (None, False, False, PriorityClass.OTHER),
        (None, None, None, PriorityClass.OTHER),
    ],
)
def test_priority_class_follows_the_reference_data(
    education_prioritaire: str | None, qpv: bool | None, rural: bool | None, expected: PriorityClass
) -> None:
    assert priority_class(education_prioritaire, qpv, rural) is expected


@pytest.mark.parametrize(
    ("departement", "academie"),
    [
        ("94", "24"),  # Val-de-Marne: Créteil
        ("094", "24"),  # as a UAI starts
        ("75", "01"),
        ("92", "25"),  # Versailles
        ("2A", "27"),
        ("620", "27"),  # Corse-du-Sud as a UAI starts
        ("720", "27"),
        ("14", "70"),  # Calvados: Normandie since 2020
        ("76", "70"),
        ("971", "32"),  # Guadeloupe
        ("974", "28"),  # La Réunion
        ("976", "43"),  # Mayotte
        ("20", None),
        ("00", None),
    ],
)
def test_academie_of_a_departement(departement: str, academie: str | None) -> None:
    assert academie_of(departement) == academie


def test_every_departement_has_exactly_one_academie() -> None:
    metropole = {f"{n:02d}" for n in range(1, 96) if n != 20} | {"2A", "2B"}
    outre_mer = {"971", "972", "973", "974", "975", "976", "986", "987", "988"}
    assert set(ACADEMIE_OF_DEPARTEMENT) == metropole | outre_mer


def test_haversine_distances() -> None:
    assert haversine_km(*ORLY, *ORLY) == 0
    assert haversine_km(*PARIS, *LYON) == pytest.approx(392, abs=2)
    assert haversine_km(*ORLY, *VILLEJUIF) == pytest.approx(5.2, abs=0.1)
    assert haversine_km(0, 0, 0, 180) == pytest.approx(20_015, abs=10)  # half the equator


# --- eligibility, one rule at a time ------------------------------------------------------------


def test_a_matching_pair_is_eligible() -> None:
    assert eligible(request(1), offer(1))


def test_school_year_must_be_the_same() -> None:
    assert not eligible(request(1, year="2027-2028"), offer(1))


def test_an_offer_without_places_left_is_not_eligible() -> None:
    assert not eligible(request(1), offer(1, capacity=0))


def test_levels_must_suit_the_school() -> None:
    lycee_offer = offer(1, levels=("2nde", "1re", "terminale"))
    assert not eligible(request(1), lycee_offer)
    assert eligible(request(1, kind="lycee"), lycee_offer)
    assert not eligible(request(1, kind="lycee"), offer(1, levels=("4e", "3e")))
    assert eligible(request(1, kind="lycee"), offer(1, levels=("3e", "2nde")))
    assert eligible(request(1), offer(1, levels=("3e",)))


def test_the_offer_maximum_distance() -> None:
    assert eligible(request(1), offer(1, max_distance_km=5.3))
    assert not eligible(request(1), offer(1, max_distance_km=5.0))


def test_the_request_maximum_distance() -> None:
    assert eligible(request(1, max_distance_km=6), offer(1))
    assert not eligible(request(1, max_distance_km=5), offer(1))
    assert not eligible(request(1, max_distance_km=5), offer(1, max_distance_km=None))


def test_the_academie_rule_serves_beyond_the_distance() -> None:
    paris_offer = offer(1, at=PARIS, max_distance_km=10, academies=("24",))
    assert eligible(request(1), paris_offer)  # 12.4 km, but Créteil is served
    assert not eligible(request(1), offer(1, at=PARIS, max_distance_km=10, academies=("25",)))
    assert eligible(request(1), offer(1, at=PARIS, max_distance_km=None, academies=("24",)))
    assert not eligible(request(1), offer(1, at=PARIS, max_distance_km=None, academies=("01",)))
    # the school's own limit holds even inside a served académie
    assert not eligible(request(1, max_distance_km=10), paris_offer)


def test_an_offer_with_no_territory_rule_serves_the_whole_country() -> None:
    assert eligible(request(1), offer(1, at=LYON, max_distance_km=None))


def test_a_declined_offer_is_not_proposed_again() -> None:
    declined = offer(1)
    assert not eligible(request(1, declined=frozenset({declined.offer_id})), declined)
    assert eligible(request(1, declined=frozenset({offer(2).offer_id})), declined)


# --- the explained score ----------------------------------------------------------------------


def test_the_parts_sum_exactly_to_the_score() -> None:
    explanation = score(request(1, thematics=("sciences", "numérique", "arts")), offer(1))
    assert [part.name for part in explanation.parts] == [
        "priority",
        "distance",
        "thematics",
        "capacity",
    ]
    points = {part.name: part.points for part in explanation.parts}
    # 5.2 km: round(400 × 25 / 30.2); 1 of 3 thematics; 3 places
    assert points == {"priority": 3000, "distance": 331, "thematics": 133, "capacity": 30}
    assert explanation.score == 3494 == sum(points.values())
    assert explanation.distance_km == pytest.approx(5.2, abs=0.1)
    # French for people (decision 33); the part's name is the stable code
    assert explanation.part("thematics").reason == "1 des 3 thématiques souhaitées (sciences)"
    assert explanation.part("priority").reason == "collège REP+ (priorité nationale)"
    assert explanation.part("distance").reason == "à 5,2 km"
    assert explanation.part("capacity").reason == "3 places restantes"


def test_no_wished_thematic_means_any_offer_suits() -> None:
    part = score(request(1, thematics=()), offer(1)).part("thematics")
    assert part.points == 400
    assert part.reason == "aucune thématique souhaitée : toute offre convient"


def test_thematics_compare_without_case_or_spaces() -> None:
    explanation = score(request(1, thematics=(" Sciences",)), offer(1, thematics=("sciences",)))
    assert explanation.part("thematics").points == 400


def test_capacity_counts_up_to_ten_places() -> None:
    assert score(request(1), offer(1, capacity=1)).part("capacity").points == 10
    assert score(request(1), offer(1, capacity=25)).part("capacity").points == 100


def test_any_rep_plus_pair_outscores_any_rep_pair() -> None:
    """So serving waiting requests by score serves REP+ first when places are short."""
    worst_rep_plus = score(
        request(1, PriorityClass.REP_PLUS, ORLY, thematics=("droit",)),
        offer(1, at=LYON, capacity=1, thematics=("arts",)),
    )
    best_rep = score(request(2, PriorityClass.REP, VILLEJUIF, thematics=()), offer(2, capacity=99))
    best_qpv = score(request(3, PriorityClass.QPV_OR_RURAL, VILLEJUIF), offer(3, capacity=99))
    assert worst_rep_plus.score > best_rep.score > best_qpv.score
    assert best_rep.score - best_rep.part("priority").points == 900  # the most the rest can give


# --- ranking ------------------------------------------------------------------------------------


def test_ranking_is_best_first_and_keeps_only_eligible_offers() -> None:
    offers = [
        offer(1, at=PARIS, thematics=("sciences", "numérique")),  # 12.4 km, both thematics
        offer(2, thematics=("sciences",)),  # 5.2 km, one thematic
        offer(3, thematics=("arts",)),  # 5.2 km, none
        offer(4, capacity=0),
        offer(5, year="2027-2028"),
        offer(6, levels=("terminale",)),
    ]
    candidates = rank_candidates(request(1), offers)
    assert [c.offer.offer_id for c in candidates] == [
        UUID(int=20_001),
        UUID(int=20_002),
        UUID(int=20_003),
    ]
    assert [c.rank for c in candidates] == [1, 2, 3]
    scores = [c.explanation.score for c in candidates]
    assert scores == sorted(scores, reverse=True)
    assert all(c.explanation.score == score(request(1), c.offer).score for c in candidates)


def test_ranking_is_limited() -> None:
    offers = [offer(n) for n in range(10)]
    assert len(rank_candidates(request(1), offers, limit=3)) == 3
    assert rank_candidates(request(1), offers, limit=0) == []


def test_ranking_ties_break_on_distance_then_offer_id_whatever_the_order() -> None:
    # same score: 20 m farther rounds to the same distance points
    near = (VILLEJUIF[0], VILLEJUIF[1])
    slightly_farther = (VILLEJUIF[0] + 0.0002, VILLEJUIF[1])
    offers = [offer(n, at=near) for n in (7, 3, 5)] + [offer(1, at=slightly_farther)]
    expected = [UUID(int=20_000 + n) for n in (3, 5, 7, 1)]
    assert len({score(request(1), o).score for o in offers}) == 1
    shuffler = random.Random(6)
    for _ in range(10):
        shuffler.shuffle(offers)
        ranked = rank_candidates(request(1), offers)
        assert [c.offer.offer_id for c in ranked] == expected


def test_a_declined_offer_leaves_the_ranking_so_the_next_candidate_comes_first() -> None:
    offers = [offer(1), offer(2, at=PARIS)]
    first = rank_candidates(request(1), offers)[0].offer
    after_decline = rank_candidates(request(1, declined=frozenset({first.offer_id})), offers)
    assert [c.offer.offer_id for c in after_decline] == [offer(2).offer_id]
    assert after_decline[0].rank == 1


# --- campaign on hand-made instances ------------------------------------------------------------


def test_campaign_serves_rep_plus_before_rep_when_places_are_short() -> None:
    rep_plus_far = request(1, PriorityClass.REP_PLUS, PARIS)
    rep_near = request(2, PriorityClass.REP, VILLEJUIF)
    other_near = request(3, PriorityClass.OTHER, VILLEJUIF)
    one_place = offer(1, capacity=1)
    result = solve_campaign([rep_near, other_near, rep_plus_far], [one_place])
    assert result.assignments == {rep_plus_far.request_id: one_place.offer_id}
    assert result.unserved == (rep_near.request_id, other_near.request_id)
    assert result.coverage[PriorityClass.REP_PLUS].served == 1
    assert result.coverage[PriorityClass.REP].served == 0


def test_campaign_moves_a_school_to_serve_one_more_rather_than_the_nearest() -> None:
    """Greedy gives the REP+ collège its nearest offer and leaves the REP collège unserved."""
    rep_plus = request(1, PriorityClass.REP_PLUS, ORLY)
    rep = request(2, PriorityClass.REP, VILLEJUIF, max_distance_km=1)
    near, farther = offer(1, at=VILLEJUIF, capacity=1), offer(2, at=PARIS, capacity=1)
    greedy = greedy_campaign([rep_plus, rep], [near, farther])
    optimal = solve_campaign([rep_plus, rep], [near, farther])
    assert greedy.assignments == {rep_plus.request_id: near.offer_id}
    assert optimal.assignments == {
        rep_plus.request_id: farther.offer_id,
        rep.request_id: near.offer_id,
    }
    assert campaign_objective(optimal) > campaign_objective(greedy)


def test_campaign_prefers_the_shorter_total_distance_at_equal_coverage() -> None:
    a = request(1, PriorityClass.REP, ORLY)
    b = request(2, PriorityClass.REP, PARIS)
    at_orly, at_paris = offer(1, at=ORLY, capacity=1), offer(2, at=PARIS, capacity=1)
    result = solve_campaign([a, b], [at_paris, at_orly])
    assert result.assignments == {a.request_id: at_orly.offer_id, b.request_id: at_paris.offer_id}
    assert result.total_distance_m == 0


def test_no_distance_buys_a_lower_priority_coverage() -> None:
    """The REP+ collège 900 km away keeps the place the REP collège next door would take."""
    rep_plus_far = request(1, PriorityClass.REP_PLUS, (43.30, 5.37))  # Marseille
    rep_next_door = request(2, PriorityClass.REP, VILLEJUIF)
    national = offer(1, capacity=1, max_distance_km=None)
    result = solve_campaign([rep_plus_far, rep_next_door], [national])
    assert result.assignments == {rep_plus_far.request_id: national.offer_id}
    assert result.total_distance_km > 600


def test_campaign_result_figures() -> None:
    requests = [request(1), request(2, PriorityClass.QPV_OR_RURAL), request(3, year="2027-2028")]
    result = solve_campaign(requests, [offer(1, capacity=5)])
    assert result.request_count == 3
    assert result.coverage[PriorityClass.REP_PLUS].requested == 2
    assert result.coverage[PriorityClass.REP_PLUS].served == 1
    assert result.coverage[PriorityClass.QPV_OR_RURAL].served == 1
    assert result.unserved == (requests[2].request_id,)
    assert result.objective == campaign_objective(result)
    assert result.distances_m[requests[0].request_id] == round(
        haversine_km(*ORLY, *VILLEJUIF) * 1000
    )


def test_an_empty_campaign() -> None:
    result = solve_campaign([], [offer(1)])
    assert result.assignments == {}
    assert result.objective == 0
    assert solve_campaign([request(1)], []).unserved == (request(1).request_id,)


def test_a_school_takes_one_place_of_an_offer_whatever_its_requests() -> None:
    """Two requests of one school and an offer of two places: one is served there, the other
    goes to the farther offer, or waits when there is none."""
    first = request(1)
    second = replace(request(2), school=first.school)
    near, far = offer(1, capacity=2), offer(2, at=PARIS)
    both = solve_campaign([first, second], [near, far])
    assert sorted(both.assignments.values()) == sorted([near.offer_id, far.offer_id])
    alone = solve_campaign([first, second], [near])
    assert len(alone.assignments) == 1
    kept = solve_campaign(
        [first, second],
        [near, far],
        keep={first.request_id: near.offer_id, second.request_id: near.offer_id},
    )
    assert sorted(kept.assignments.values()) == sorted([near.offer_id, far.offer_id])
