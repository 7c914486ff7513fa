"""Cordées matching benchmark: a national campaign and single-request ranking.

Run from the repository root::

    .venv/bin/python bench/cordees_matching.py [--seed 2026] [--rounds 3] [--requests 2000]

It builds a synthetic national instance, the same for a given seed: about 7,000 collèges (365 REP+,
735 REP), 3,700 lycées and 1,500 têtes de cordée with 2 to 15 places each, placed around 90 real
French cities (overseas included) with a spread that grows with the city's size, in the
départements of those cities. Every school has one pending request. Têtes serve a radius, their
académie, both, or the whole country (the cordées du service public); schools give a maximum
distance or none.

Then, each figure being the best of ``--rounds`` runs (the machine may be shared):

(a) ``solve_campaign``: the whole campaign through the domain's code (pair search, graph, OR-Tools
    min-cost flow, result);
(b) the solver called directly on the same graph: OR-Tools on arrays given to it ready-made, so
    (a) − (b) is the cost of the domain's own code;
(c) a dense reference: every (request, offer) pair checked with plain numpy, no pruning, solved
    by OR-Tools: its optimum must equal (a)'s objective (gap 0), which checks that the pruned pair
    search misses no pair;
(d) ``greedy_campaign``: the baseline (priority, then nearest offer with a place);
(e) single request: ``rank_candidates`` for ``--requests`` requests of random schools of a
    10,000-school read model, against all the offers; p50 / p99 / max latency.

It is not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

import numpy as np
import numpy.typing as npt
from ortools.graph.python import min_cost_flow

from maillage.cordees.domain import (
    LEVELS_BY_KIND,
    CampaignGraph,
    Offer,
    PriorityClass,
    Request,
    School,
    academie_of,
    campaign_graph,
    campaign_objective,
    coverage_weight,
    greedy_campaign,
    rank_candidates,
    solve_campaign,
)

T = TypeVar("T")
YEAR = "2026-2027"
THEMATICS = ("sciences", "numérique", "santé", "droit", "service public", "arts", "ingénierie")

# (city, département, latitude, longitude, weight ~ population of the area, in thousands / 10)
CITIES: tuple[tuple[str, str, float, float, int], ...] = (
    ("Paris", "75", 48.8566, 2.3522, 210),
    ("Saint-Denis", "93", 48.9362, 2.3574, 160),
    ("Créteil", "94", 48.7904, 2.4556, 140),
    ("Nanterre", "92", 48.8924, 2.2071, 160),
    ("Cergy", "95", 49.0364, 2.0761, 120),
    ("Versailles", "78", 48.8049, 2.1204, 140),
    ("Évry", "91", 48.6290, 2.4410, 130),
    ("Melun", "77", 48.5421, 2.6554, 140),
    ("Marseille", "13", 43.2965, 5.3698, 200),
    ("Aix-en-Provence", "13", 43.5297, 5.4474, 60),
    ("Lyon", "69", 45.7640, 4.8357, 180),
    ("Saint-Étienne", "42", 45.4397, 4.3872, 75),
    ("Lille", "59", 50.6292, 3.0573, 160),
    ("Valenciennes", "59", 50.3570, 3.5235, 70),
    ("Lens", "62", 50.4320, 2.8333, 80),
    ("Calais", "62", 50.9513, 1.8587, 50),
    ("Toulouse", "31", 43.6047, 1.4442, 130),
    ("Nice", "06", 43.7102, 7.2620, 100),
    ("Toulon", "83", 43.1242, 5.9280, 100),
    ("Nantes", "44", 47.2184, -1.5536, 130),
    ("Strasbourg", "67", 48.5734, 7.7521, 110),
    ("Mulhouse", "68", 47.7508, 7.3359, 75),
    ("Montpellier", "34", 43.6108, 3.8767, 110),
    ("Nîmes", "30", 43.8367, 4.3601, 75),
    ("Perpignan", "66", 42.6887, 2.8948, 45),
    ("Bordeaux", "33", 44.8378, -0.5792, 150),
    ("Rennes", "35", 48.1173, -1.6778, 100),
    ("Brest", "29", 48.3904, -4.4861, 90),
    ("Reims", "51", 49.2583, 4.0317, 55),
    ("Le Havre", "76", 49.4944, 0.1079, 60),
    ("Rouen", "76", 49.4432, 1.0999, 65),
    ("Caen", "14", 49.1829, -0.3707, 70),
    ("Grenoble", "38", 45.1885, 5.7245, 120),
    ("Dijon", "21", 47.3220, 5.0415, 55),
    ("Angers", "49", 47.4784, -0.5632, 80),
    ("Le Mans", "72", 48.0061, 0.1996, 55),
    ("Clermont-Ferrand", "63", 45.7772, 3.0870, 65),
    ("Tours", "37", 47.3941, 0.6848, 60),
    ("Orléans", "45", 47.9030, 1.9093, 65),
    ("Limoges", "87", 45.8336, 1.2611, 37),
    ("Amiens", "80", 49.8941, 2.2958, 57),
    ("Metz", "57", 49.1193, 6.1757, 100),
    ("Nancy", "54", 48.6921, 6.1844, 73),
    ("Besançon", "25", 47.2378, 6.0241, 54),
    ("Poitiers", "86", 46.5802, 0.3404, 44),
    ("Pau", "64", 43.2951, -0.3708, 68),
    ("Bayonne", "64", 43.4929, -1.4748, 30),
    ("Avignon", "84", 43.9493, 4.8055, 56),
    ("La Rochelle", "17", 46.1603, -1.1511, 64),
    ("Troyes", "10", 48.2973, 4.0744, 31),
    ("Chambéry", "73", 45.5646, 5.9178, 43),
    ("Annecy", "74", 45.8992, 6.1294, 83),
    ("Valence", "26", 44.9334, 4.8924, 51),
    ("Ajaccio", "2A", 41.9192, 8.7386, 16),
    ("Bastia", "2B", 42.6977, 9.4508, 18),
    ("Beauvais", "60", 49.4295, 2.0807, 82),
    ("Saint-Quentin", "02", 49.8465, 3.2876, 53),
    ("Charleville-Mézières", "08", 49.7621, 4.7263, 27),
    ("Quimper", "29", 47.9960, -4.0970, 30),
    ("Vannes", "56", 47.6582, -2.7608, 76),
    ("Saint-Brieuc", "22", 48.5136, -2.7653, 60),
    ("Laval", "53", 48.0707, -0.7734, 31),
    ("La Roche-sur-Yon", "85", 46.6705, -1.4260, 69),
    ("Niort", "79", 46.3237, -0.4588, 37),
    ("Angoulême", "16", 45.6484, 0.1562, 35),
    ("Périgueux", "24", 45.1846, 0.7214, 41),
    ("Agen", "47", 44.2033, 0.6163, 33),
    ("Mont-de-Marsan", "40", 43.8902, -0.4998, 41),
    ("Tarbes", "65", 43.2328, 0.0781, 23),
    ("Auch", "32", 43.6460, 0.5857, 19),
    ("Montauban", "82", 44.0176, 1.3550, 26),
    ("Albi", "81", 43.9291, 2.1483, 39),
    ("Rodez", "12", 44.3506, 2.5750, 28),
    ("Cahors", "46", 44.4475, 1.4419, 17),
    ("Foix", "09", 42.9653, 1.6069, 15),
    ("Carcassonne", "11", 43.2130, 2.3491, 37),
    ("Mende", "48", 44.5181, 3.5007, 8),
    ("Aurillac", "15", 44.9264, 2.4400, 14),
    ("Le Puy-en-Velay", "43", 45.0434, 3.8858, 23),
    ("Moulins", "03", 46.5660, 3.3327, 33),
    ("Nevers", "58", 46.9908, 3.1590, 20),
    ("Bourges", "18", 47.0810, 2.3988, 30),
    ("Châteauroux", "36", 46.8103, 1.6913, 22),
    ("Guéret", "23", 46.1715, 1.8715, 12),
    ("Tulle", "19", 45.2658, 1.7722, 24),
    ("Saint-Denis (La Réunion)", "974", -20.8823, 55.4504, 87),
    ("Pointe-à-Pitre", "971", 16.2411, -61.5331, 38),
    ("Fort-de-France", "972", 14.6161, -61.0588, 36),
    ("Cayenne", "973", 4.9224, -52.3135, 29),
    ("Mamoudzou", "976", -12.7806, 45.2279, 31),
)
BIG_CITY = 100  # weight from which a city has many REP/REP+ collèges


@dataclass(frozen=True)
class Instance:
    schools: list[School]
    requests: list[Request]
    offers: list[Offer]


def _place(rng: random.Random, spread_km: float) -> tuple[str, float, float, int]:
    name, departement, lat, lon, weight = rng.choices(CITIES, weights=[c[4] for c in CITIES])[0]
    del name
    # a Gaussian spread around the city: wider for bigger areas (rural schools further out)
    sigma = spread_km * (0.5 + weight / 200)
    dlat = rng.gauss(0, sigma) / 111.2
    dlon = rng.gauss(0, sigma) / (111.2 * np.cos(np.radians(lat)))
    return departement, lat + dlat, lon + dlon, weight


def _uai(rng: random.Random, departement: str) -> str:
    prefix = {"2A": "620", "2B": "720"}.get(departement, departement.zfill(3))
    digits = f"{prefix}{rng.randrange(10_000):04d}"
    return digits + "ABCDEFGHJKLMNPRSTUVWXYZ"[int(digits) % 23]


def build_instance(
    seed: int, colleges: int = 7_000, lycees: int = 3_700, tetes: int = 1_500
) -> Instance:
    rng = random.Random(seed)  # noqa: S311  (synthetic data, repeatable by seed)
    schools: list[School] = []
    priorities = (
        [PriorityClass.REP_PLUS] * 365
        + [PriorityClass.REP] * 735
        + [PriorityClass.QPV_OR_RURAL] * 1_900
        + [PriorityClass.OTHER] * (colleges - 3_000)
    )
    for n in range(colleges + lycees):
        kind = "college" if n < colleges else "lycee"
        priority = (
            priorities[n]
            if kind == "college"
            else rng.choices(
                (PriorityClass.QPV_OR_RURAL, PriorityClass.OTHER), weights=(0.35, 0.65)
            )[0]
        )
        # éducation prioritaire is urban: REP/REP+ collèges are drawn near the big cities
        while True:
            departement, lat, lon, weight = _place(rng, 12.0)
            if priority > PriorityClass.REP or weight >= BIG_CITY or rng.random() < 0.25:
                break
        schools.append(
            School(
                partner_id=UUID(int=rng.getrandbits(128)),
                uai=_uai(rng, departement),
                kind=kind,
                departement=departement,
                academie=academie_of(departement),
                latitude=lat,
                longitude=lon,
                priority=priority,
            )
        )
    requests = [
        Request(
            request_id=UUID(int=rng.getrandbits(128)),
            school=school,
            thematics=tuple(rng.sample(THEMATICS, rng.randint(0, 3))),
            max_distance_km=rng.choice((None, None, 15.0, 30.0, 50.0)),
            school_year=YEAR,
        )
        for school in schools
    ]
    offers: list[Offer] = []
    for _ in range(tetes):
        departement, lat, lon, _weight = _place(rng, 4.0)
        territory = rng.choices(("radius", "academie", "both", "national"), (50, 30, 15, 5))[0]
        levels = rng.choices(
            (("4e", "3e", "2nde", "1re", "terminale"), ("2nde", "1re", "terminale"), ("4e", "3e")),
            weights=(60, 25, 15),
        )[0]
        academie = academie_of(departement)
        offers.append(
            Offer(
                offer_id=UUID(int=rng.getrandbits(128)),
                tete_partner_id=UUID(int=rng.getrandbits(128)),
                latitude=lat,
                longitude=lon,
                levels=levels,
                thematics=tuple(rng.sample(THEMATICS, rng.randint(1, 3))),
                max_distance_km=(
                    rng.choice((20.0, 30.0, 50.0, 80.0))
                    if territory in ("radius", "both")
                    else None
                ),
                academies=(academie,) if territory in ("academie", "both") and academie else (),
                remaining_capacity=rng.randint(2, 15),
                school_year=YEAR,
            )
        )
    return Instance(schools=schools, requests=requests, offers=offers)


# --- (c) the dense reference, with numpy only ---------------------------------------------------


def dense_pairs(
    requests: list[Request], offers: list[Offer]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every eligible pair by brute force over the full request × offer matrix, no pruning."""
    offers = [o for o in offers if o.remaining_capacity > 0]
    r_lat = np.radians([r.school.latitude for r in requests])[:, None]
    r_lon = np.radians([r.school.longitude for r in requests])[:, None]
    o_lat = np.radians([o.latitude for o in offers])[None, :]
    o_lon = np.radians([o.longitude for o in offers])[None, :]
    h = (
        np.sin((o_lat - r_lat) / 2) ** 2
        + np.cos(r_lat) * np.cos(o_lat) * np.sin((o_lon - r_lon) / 2) ** 2
    )
    km = 2 * 6371.0088 * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
    inf = np.inf
    r_max = np.array([inf if r.max_distance_km is None else r.max_distance_km for r in requests])
    # an offer without a maximum distance has no distance rule: nothing is within it
    o_max = np.array([-inf if o.max_distance_km is None else o.max_distance_km for o in offers])
    unrestricted = np.array([o.max_distance_km is None and not o.academies for o in offers])
    r_academie = np.array([r.school.academie or "" for r in requests])
    in_academie = np.zeros(km.shape, bool)
    for j, o in enumerate(offers):
        if o.academies:
            in_academie[:, j] = np.isin(r_academie, o.academies)
    bits = {kind: 1 << n for n, kind in enumerate(LEVELS_BY_KIND)}
    r_kind = np.array([bits[r.school.kind] for r in requests])
    o_kinds = np.array(
        [sum(b for k, b in bits.items() if LEVELS_BY_KIND[k] & set(o.levels)) for o in offers]
    )
    levels = (r_kind[:, None] & o_kinds[None, :]) != 0
    years = sorted({r.school_year for r in requests} | {o.school_year for o in offers})
    same_year = np.array([years.index(r.school_year) for r in requests])[:, None] == np.array(
        [years.index(o.school_year) for o in offers]
    )
    declined = np.zeros(km.shape, bool)
    column = {o.offer_id: j for j, o in enumerate(offers)}
    for i, r in enumerate(requests):
        for offer_id in r.excluded_offer_ids & column.keys():
            declined[i, column[offer_id]] = True
    ok = (
        same_year
        & levels
        & ~declined
        & (km <= r_max[:, None])
        & (unrestricted[None, :] | (km <= o_max[None, :]) | in_academie)
    )
    i, j = np.nonzero(ok)
    return i, j, np.rint(km[i, j] * 1000).astype(np.int64)


# --- (b) OR-Tools alone -------------------------------------------------------------------------

Arrays = npt.NDArray[np.int64]


def flow_arrays(graph: CampaignGraph) -> tuple[Arrays, Arrays, Arrays, Arrays]:
    """The min-cost flow network of the domain's docstring, as OR-Tools takes it: source 0,
    requests 1..n, offers n+1..n+m, sink n+m+1, and the source → sink arc of the unserved."""
    n, m = len(graph.requests), len(graph.offers)
    sink = n + m + 1
    tails = np.concatenate([graph.request_index + 1, np.zeros(n), np.arange(n + 1, sink), [0]])
    heads = np.concatenate(
        [graph.offer_index + n + 1, np.arange(1, n + 1), np.full(m, sink), [sink]]
    )
    capacities = np.concatenate(
        [np.ones(len(graph.request_index) + n), [o.remaining_capacity for o in graph.offers], [n]]
    )
    costs = np.concatenate([graph.costs(), np.zeros(n + m + 1)])
    return (
        tails.astype(np.int32),
        heads.astype(np.int32),
        capacities.astype(np.int64),
        costs.astype(np.int64),
    )


def direct_solve(tails: Arrays, heads: Arrays, capacities: Arrays, costs: Arrays, n: int) -> int:
    """OR-Tools alone: the optimal cost of the network."""
    solver = min_cost_flow.SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(tails, heads, capacities, costs)
    solver.set_node_supply(0, n)
    solver.set_node_supply(int(heads.max()), -n)  # the sink, the last node
    assert solver.solve() == solver.OPTIMAL
    return int(solver.optimal_cost())


# --- measurement ---------------------------------------------------------------------------------


def best_of(rounds: int, run: Callable[[], T]) -> tuple[float, T]:
    best, value = float("inf"), None
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        value = run()
        best = min(best, time.perf_counter() - start)
    assert value is not None
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure; the best counts")
    parser.add_argument("--requests", type=int, default=2_000, help="single-request samples")
    parser.add_argument("--skip-dense", action="store_true", help="skip (c), the slow reference")
    args = parser.parse_args()

    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    instance = build_instance(args.seed)
    requests, offers = instance.requests, instance.offers
    counts = {p: sum(r.school.priority is p for r in requests) for p in PriorityClass}
    print(
        f"instance (seed {args.seed}) built in {time.perf_counter() - start:.1f} s: "
        f"{len(requests):,} requests ("
        + ", ".join(f"{p.label} {n:,}" for p, n in counts.items())
        + f"), {len(offers):,} offers, {sum(o.remaining_capacity for o in offers):,} places"
    )

    # (a) the domain's campaign
    t_solve, optimal = best_of(args.rounds, lambda: solve_campaign(requests, offers))
    # (b) the solver alone, on the graph the domain builds
    graph = campaign_graph(requests, offers)
    t_graph, _ = best_of(args.rounds, lambda: campaign_graph(requests, offers))
    arcs = flow_arrays(graph)
    t_direct, cost = best_of(args.rounds, lambda: direct_solve(*arcs, len(graph.requests)))
    # (d) greedy
    t_greedy, greedy = best_of(args.rounds, lambda: greedy_campaign(requests, offers))

    print(f"\ncampaign graph: {len(graph.request_index):,} eligible pairs")
    print(f"(a) solve_campaign          {t_solve * 1000:8.0f} ms   objective {optimal.objective:,}")
    print(f"      of which pair search  {t_graph * 1000:8.0f} ms")
    print(f"(b) OR-Tools alone          {t_direct * 1000:8.0f} ms   objective {-cost:,}")
    print(f"    overhead (a) − (b)      {(t_solve - t_direct) * 1000:8.0f} ms")
    print(f"    gap (b) − (a)           {-cost - optimal.objective}")
    if not args.skip_dense:
        start = time.perf_counter()
        i, j, d = dense_pairs(requests, offers)
        t_dense = time.perf_counter() - start
        n = len(requests)
        weights = np.array([coverage_weight(r.school.priority, n) for r in requests], np.int64)
        dense = type(graph)(graph.requests, graph.offers, i, j, d)
        assert (dense.costs() == d - weights[i]).all()
        start = time.perf_counter()
        dense_cost = direct_solve(*flow_arrays(dense), n)
        t_dense_solve = time.perf_counter() - start
        print(
            f"(c) dense reference         {(t_dense + t_dense_solve) * 1000:8.0f} ms   "
            f"objective {-dense_cost:,}  ({len(i):,} pairs; numpy {t_dense * 1000:.0f} ms, "
            f"OR-Tools {t_dense_solve * 1000:.0f} ms)"
        )
        print(f"    gap (c) − (a)           {-dense_cost - optimal.objective}")
    print(f"(d) greedy_campaign         {t_greedy * 1000:8.0f} ms   objective {greedy.objective:,}")
    print(f"    objective checks        {campaign_objective(optimal) == optimal.objective}")

    print("\ncoverage (served / requested)      optimal          greedy")
    for p in PriorityClass:
        o, g = optimal.coverage[p], greedy.coverage[p]
        print(f"  {p.label:<12}                {o.served:6,} / {o.requested:<6,} {g.served:6,}")
    print(
        f"  total                       {len(optimal.assignments):6,} / {len(requests):<6,} "
        f"{len(greedy.assignments):6,}"
    )
    print(
        f"  total distance              {optimal.total_distance_km:10,.0f} km   "
        f"{greedy.total_distance_km:10,.0f} km"
    )
    served = len(optimal.assignments)
    print(
        f"  mean distance               {optimal.total_distance_km / max(served, 1):10.1f} km   "
        f"{greedy.total_distance_km / max(len(greedy.assignments), 1):10.1f} km"
    )

    # (e) single request over a 10,000-school read model
    rng = random.Random(args.seed + 1)  # noqa: S311
    read_model = instance.schools[:10_000]
    samples: list[float] = []
    cpu_samples: list[float] = []
    for n in range(args.requests):
        school = rng.choice(read_model)
        request = Request(
            request_id=UUID(int=n),
            school=school,
            thematics=tuple(rng.sample(THEMATICS, rng.randint(0, 3))),
            max_distance_km=rng.choice((None, None, 15.0, 30.0, 50.0)),
            school_year=YEAR,
        )
        start, cpu = time.perf_counter(), time.thread_time()
        rank_candidates(request, offers, limit=5)
        samples.append(time.perf_counter() - start)
        cpu_samples.append(time.thread_time() - cpu)
    print(
        f"\n(e) rank_candidates over {len(offers):,} offers, {len(samples):,} requests of a "
        f"{len(read_model):,}-school read model"
    )
    for name, values in (("wall clock", samples), ("thread CPU", cpu_samples)):
        values.sort()
        p50, p99 = statistics.median(values), values[int(len(values) * 0.99) - 1]
        print(
            f"    {name}: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
            f"max {values[-1] * 1000:.2f} ms"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
