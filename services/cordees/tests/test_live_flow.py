"""The live flow keeps the national priority (issue 17, decision 48): after every request,
decline, withdrawal, acceptance, expiry, offer change or closing and pairing ended, the proposals
standing with the established pairings are an optimal assignment of the waiting requests to the
places left.

- property tests (hypothesis) drive the use cases on the real PostgreSQL, one transaction per
  example rolled back, with random instances and random orders of operations, and check the
  invariant after every step against a brute force (not the min-cost flow the service uses);
- a REP+ collège filed after a REP collège takes the last place, the REP one moves on and both
  têtes are told;
- fifty acceptances and declines in parallel on overlapping offers: no 5xx, capacities exact;
- an unanswered proposal expires after ``PROPOSAL_DAYS`` days;
- what a request filed keeps in memory for the next (decisions 56 and 69: offers, prices,
  pairs, the holders of the offers it read) equals a fresh read whenever the next would use it,
  and is never used after another writer changed the year.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from cordees_world import Cordees, school_year, uai
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maillage.common.auth import Caller
from maillage.common.db import transaction
from maillage.common.problems import Problem
from maillage.cordees import domain, matcher, store, usecases
from maillage.cordees.domain import PriorityClass

YEAR = school_year()
CLASSES = {PriorityClass.REP_PLUS: "REP+", PriorityClass.REP: "REP"}


# --- the invariant, checked independently of the min-cost flow ----------------------------------


class Rollback(Exception):
    """Ends an example's transaction: nothing it wrote stays."""


def ended_on_request(now: dict[str, Any]) -> set[uuid.UUID]:
    return {
        p["id"] for p in now["pairings"] if p["end_reason"] in ("school_request", "tete_request")
    }


async def state(connection: asyncpg.Connection) -> dict[str, Any]:
    requests = [dict(r) for r in await connection.fetch("SELECT * FROM match_requests")]
    offers = {r["id"]: dict(r) for r in await connection.fetch("SELECT * FROM cordee_offers")}
    pairings = [dict(r) for r in await connection.fetch("SELECT * FROM pairings")]
    return {"requests": requests, "offers": offers, "pairings": pairings}


def brute_force(requests: list[domain.Request], offers: list[domain.Offer]) -> tuple[int, Counter]:
    """The best objective over every assignment, and the coverage per class it serves."""
    n = len(requests)
    choices = [[None, *(o for o in offers if domain.eligible(r, o))] for r in requests]
    best: tuple[int, Counter[PriorityClass]] = (0, Counter())
    for assignment in itertools.product(*choices):
        taken = Counter(o.offer_id for o in assignment if o is not None)
        if any(taken[o.offer_id] > o.remaining_capacity for o in offers):
            continue
        per_school = Counter(
            (r.school.partner_id, o.offer_id)
            for r, o in zip(requests, assignment, strict=True)
            if o is not None
        )
        if any(count > 1 for count in per_school.values()):
            continue  # a school takes one place of an offer
        value = sum(
            domain.coverage_weight(r.school.priority, n)
            - round(domain.score(r, o).distance_km * 1000)
            for r, o in zip(requests, assignment, strict=True)
            if o is not None
        )
        if value > best[0]:
            served = Counter(
                r.school.priority for r, o in zip(requests, assignment, strict=True) if o
            )
            best = (value, served)
    return best


async def waiting_instance(
    connection: asyncpg.Connection,
) -> tuple[list[domain.Request], list[domain.Offer], dict[uuid.UUID, uuid.UUID]]:
    """The waiting requests and the places left, as the engine sees them, and the proposals."""
    rows = await store.live_requests(connection, YEAR)
    offers = await matcher.candidate_offers(connection, YEAR)
    pairs = await store.active_pairs(connection, YEAR)
    requests = []
    for row in rows:
        school = matcher.school_of(matcher._school_columns(row))
        assert school is not None
        paired = frozenset(o for s, o in pairs if s == school.partner_id)
        requests.append(matcher.request_of(row, school, paired=paired))
    proposals = {row["id"]: row["offer_id"] for row in rows if row["status"] == "proposed"}
    return requests, offers, proposals


async def check_invariant(
    connection: asyncpg.Connection, established_before: set[uuid.UUID]
) -> set[uuid.UUID]:
    """The issue's invariant; the active pairings now (a superset of ``established_before``)."""
    now = await state(connection)
    active = {p["id"] for p in now["pairings"] if p["status"] == "active"}
    # never undone by the flow (only its tête or school ends one: the "end" operation)
    assert established_before <= active | ended_on_request(now), "a pairing was undone"
    assert not any(r["status"] == "requested" for r in now["requests"])
    proposed = Counter(r["offer_id"] for r in now["requests"] if r["status"] == "proposed")
    paired = Counter(p["offer_id"] for p in now["pairings"] if p["status"] == "active")
    for offer_id, offer in now["offers"].items():
        assert paired[offer_id] <= offer["capacity"]
        # a proposal holds a place: never more proposals than places left
        assert proposed[offer_id] <= offer["capacity"] - paired[offer_id], offer
        if offer["status"] != "open":
            assert proposed[offer_id] == 0
    requests, offers, proposals = await waiting_instance(connection)
    by_id = {o.offer_id: o for o in offers}
    n = len(requests)
    live = 0
    for request in requests:
        offer_id = proposals.get(request.request_id)
        if offer_id is not None:
            assert domain.eligible(request, by_id[offer_id])
            live += domain.coverage_weight(request.school.priority, n) - round(
                domain.score(request, by_id[offer_id]).distance_km * 1000
            )
    if len(requests) <= 8:
        best, _ = brute_force(requests, offers)
    else:  # too many for a brute force: the solver (itself checked against one)
        best = domain.solve_campaign(requests, offers).objective
    assert live == best, "the proposals are not an optimal assignment"
    await check_kept(connection)
    return active


async def check_kept(connection: asyncpg.Connection) -> None:
    """What this process kept of the year (decisions 56 and 69), when the next transaction to
    take the year's matching lock would use it (its stamp is the year's now), equals a fresh
    read: the offers, the prices, the pairs, and the holders of every offer kept, in order."""
    kept = matcher._kept.get(YEAR)
    stamp = await connection.fetchval(
        "SELECT stamp FROM matching_versions WHERE school_year = $1", YEAR
    )
    if kept is None or kept.stamp != stamp:
        return
    assert kept.offers.rows == tuple(await store.open_offers(connection, YEAR))
    assert kept.prices == await store.offer_prices(connection, YEAR)
    own = await matcher._not_proposable(connection, YEAR, kept.offers)
    assert kept.own == own
    for offer_id, holders in kept.holders.items():
        fresh = []
        for row in await store.proposed_to(connection, YEAR, [offer_id]):
            school = matcher.school_of(matcher._school_columns(row))
            assert school is not None
            request = matcher.request_of(row, school, paired=own.get(school.partner_id))
            fresh.append(matcher._holder(request, row))
        assert holders == fresh, "a holder kept differs from the database"


# --- instances and operations --------------------------------------------------------------------

POINTS = st.tuples(st.floats(48.70, 48.90), st.floats(2.30, 2.50))


@st.composite
def instances(draw: st.DrawFn) -> dict[str, Any]:
    offers = draw(
        st.lists(
            st.tuples(POINTS, st.integers(1, 2), st.sampled_from([None, 6.0, 12.0])),
            min_size=1,
            max_size=3,
        )
    )
    schools = draw(
        st.lists(
            st.tuples(POINTS, st.sampled_from(["REP+", "REP", None]), st.sampled_from([None, 8.0])),
            min_size=1,
            max_size=6,
        )
    )
    return {"offers": offers, "schools": schools}


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            ["request"] * 3
            + ["accept", "decline", "withdraw", "capacity", "close", "end", "expire"]
        ),
        st.integers(0, 5),
    ),
    max_size=14,
)


def caller(partner_id: uuid.UUID, *roles: str) -> Caller:
    return Caller(subject=f"test-{partner_id}", partner_id=str(partner_id), roles=frozenset(roles))


async def world(
    connection: asyncpg.Connection, instance: dict[str, Any], now: datetime
) -> tuple[list[uuid.UUID], list[uuid.UUID], list[uuid.UUID]]:
    """Têtes with their offers, and schools, in the read model; (têtes, offers, schools)."""
    tetes, offers, schools = [], [], []
    for (latitude, longitude), capacity, radius in instance["offers"]:
        tete = uuid.uuid4()
        await store.apply_partner(
            connection,
            {
                "partner_id": tete,
                "kind": "etablissement_superieur",
                "legal_name": "Université",
                "status": "verified",
                "version": 1,
                "departement": "94",
                "academie": "24",
                "latitude": latitude,
                "longitude": longitude,
            },
        )
        offer = await usecases.open_offer(
            connection,
            caller(tete, "partner"),
            school_year=YEAR,
            capacity=capacity,
            levels=["4e", "3e"],
            thematics=["sciences"],
            max_distance_km=radius,
            academies=[],
            now=now,
        )
        tetes.append(tete)
        offers.append(offer["id"])
    for (latitude, longitude), status, _ in instance["schools"]:
        school = uuid.uuid4()
        await store.apply_partner(
            connection,
            {
                "partner_id": school,
                "kind": "college",
                "legal_name": "Collège",
                "status": "verified",
                "version": 1,
                "uai": uai("094"),
                "departement": "94",
                "academie": "24",
                "latitude": latitude,
                "longitude": longitude,
                "education_prioritaire": status,
                "qpv_proximity": False,
            },
        )
        schools.append(school)
    return tetes, offers, schools


async def apply(
    connection: asyncpg.Connection,
    operation: tuple[str, int],
    instance: dict[str, Any],
    schools: list[uuid.UUID],
    tetes_of: dict[uuid.UUID, uuid.UUID],
    filed: list[uuid.UUID],
    now: datetime,
) -> None:
    """One operation through the use cases, in a savepoint; a refusal must be a 4xx."""
    kind, index = operation
    try:
        async with connection.transaction():
            if kind == "request":
                k = index % len(schools)
                if (
                    await connection.fetchval(
                        "SELECT count(*) FROM match_requests WHERE school_partner_id = $1",
                        schools[k],
                    )
                    >= 2
                ):
                    return  # at most two requests per school (a school takes one place of an
                    # offer across its own requests)
                match_request = await usecases.request_match(
                    connection,
                    caller(schools[k], "school"),
                    school_year=YEAR,
                    thematics=[],
                    max_distance_km=instance["schools"][k][2],
                    now=now,
                )
                assert match_request["status"] in ("proposed", "unmatched")
                filed.append(match_request["id"])
                return
            if kind in ("capacity", "close"):
                offer_id = list(tetes_of)[index % len(tetes_of)]
                tete = caller(tetes_of[offer_id], "partner")
                if kind == "close":
                    await usecases.close_offer(connection, tete, offer_id, now=now)
                else:
                    changes = {"capacity": 1 + index % 3}
                    await usecases.change_offer(connection, tete, offer_id, changes, now=now)
                return
            if kind == "expire":  # every proposal standing is 15 days old
                await matcher.expire_proposals(connection, now + timedelta(days=15))
                return
            if kind == "end":
                pairing = await connection.fetchrow(  # the oldest request's, deterministically
                    "SELECT p.id, p.school_partner_id FROM pairings p"
                    " JOIN unnest($1::uuid[]) WITH ORDINALITY AS f(id, n) ON f.id = p.request_id"
                    " WHERE p.status = 'active' ORDER BY f.n LIMIT 1",
                    filed,
                )
                if pairing is not None:
                    school = caller(pairing["school_partner_id"], "school")
                    await usecases.end_pairing(connection, school, pairing["id"], now=now)
                return
            if not filed:
                return
            request_id = filed[index % len(filed)]
            row = await store.get_request(connection, request_id)
            assert row is not None
            if kind == "withdraw":
                await usecases.withdraw_match(
                    connection, caller(row["school_partner_id"], "school"), request_id, now=now
                )
                return
            if row["offer_id"] is None:
                return
            tete = caller(tetes_of[row["offer_id"]], "partner")
            if kind == "accept":
                await usecases.accept_match(connection, tete, request_id, now=now)
            else:
                await usecases.decline_match(connection, tete, request_id, now=now)
    except Problem as problem:
        refused = problem
    else:
        return
    assert 400 <= refused.status < 500, refused


async def run_example(
    cordees: Cordees, instance: dict[str, Any], operations: list[tuple[str, int]]
) -> None:
    now = datetime.now(UTC)
    async with cordees.pool.acquire() as connection:
        try:
            async with connection.transaction():
                tetes, offers, schools = await world(connection, instance, now)
                tetes_of = dict(zip(offers, tetes, strict=True))
                established = await check_invariant(connection, set())
                filed: list[uuid.UUID] = []
                for operation in operations:
                    await apply(connection, operation, instance, schools, tetes_of, filed, now)
                    established = await check_invariant(connection, established)
                raise Rollback
        except Rollback:
            pass


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(instance=instances(), operations=OPERATIONS)
async def test_after_every_step_the_proposals_are_an_optimal_assignment_of_the_places_left(
    cordees: Cordees, instance: dict[str, Any], operations: list[tuple[str, int]]
) -> None:
    await run_example(cordees, instance, operations)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    instance=instances(),
    arrivals=st.lists(
        st.tuples(st.sampled_from(["request", "decline"]), st.integers(0, 5)), max_size=10
    ),
    acceptance_seed=st.integers(0, 2**16),
)
async def test_with_acceptances_last_the_live_flow_serves_what_the_offline_optimum_serves(
    cordees: Cordees,
    instance: dict[str, Any],
    arrivals: list[tuple[str, int]],
    acceptance_seed: int,
) -> None:
    """Requests and declines arrive in any order, then the têtes accept what they are proposed
    in any order: the schools served per priority class are those of the offline optimum of the
    final instance (every request not withdrawn, the declines as exclusions, the full
    capacities). With acceptances interleaved earlier this cannot hold in general: an
    established pairing is never undone, even when a later request would have needed its place;
    the invariant above is what holds then."""
    now = datetime.now(UTC)
    async with cordees.pool.acquire() as connection:
        try:
            async with connection.transaction():
                tetes, offers, schools = await world(connection, instance, now)
                tetes_of = dict(zip(offers, tetes, strict=True))
                filed: list[uuid.UUID] = []
                for operation in arrivals:
                    await apply(connection, operation, instance, schools, tetes_of, filed, now)
                final_requests, final_offers, _ = await waiting_instance(connection)
                _, offline = brute_force(final_requests, final_offers)
                order = random.Random(acceptance_seed)  # an order, not a secret
                rank = {school: k for k, school in enumerate(schools)}
                while proposed := sorted(
                    (
                        r
                        for r in await store.live_requests(connection, YEAR)
                        if r["status"] == "proposed"
                    ),
                    key=lambda r: (rank[r["school_partner_id"]], r["created_at"]),
                ):
                    row = order.choice(proposed)
                    tete = caller(tetes_of[row["offer_id"]], "partner")
                    await usecases.accept_match(connection, tete, row["id"], now=now)
                served = Counter(
                    PriorityClass(r["priority"])
                    for r in await connection.fetch(
                        "SELECT priority FROM match_requests WHERE status = 'established'"
                    )
                )
                assert served == offline
                raise Rollback
        except Rollback:
            pass


# --- end to end ---------------------------------------------------------------------------------


async def test_a_rep_plus_college_filed_later_takes_the_last_place_and_the_rep_one_moves_on(
    cordees: Cordees,
) -> None:
    """A REP collège files first and is proposed the last place of the near offer; a REP+
    collège files later and only that offer reaches it: the REP+ one is proposed it, the REP one
    moves to the farther offer, and each side of the move is told why. The near tête accepting
    the REP collège then hears 409 proposal_moved, not 403."""
    near = await cordees.partner("etablissement_superieur", latitude=48.79, longitude=2.40)
    far = await cordees.partner("etablissement_superieur", latitude=48.90, longitude=2.40)
    rep = await cordees.partner(
        "college", latitude=48.80, longitude=2.40, education_prioritaire="REP"
    )
    rep_plus = await cordees.partner(
        "college", latitude=48.78, longitude=2.40, education_prioritaire="REP+"
    )
    async with cordees.client() as http:
        near_offer = await cordees.offer(near, http, capacity=1, max_distance_km=5)
        far_offer = await cordees.offer(far, http, capacity=1, max_distance_km=15)
        first = await cordees.request(rep, http)
        assert first["offer_id"] == near_offer["id"]
        second = await cordees.request(rep_plus, http)
        moved = await http.get(f"/match-requests/{first['id']}", headers=cordees.operator())
        late = await http.post(
            f"/match-requests/{first['id']}/accept", headers=cordees.token(near, "partner")
        )
        accepted = await http.post(
            f"/match-requests/{second['id']}/accept", headers=cordees.token(near, "partner")
        )
    assert second["status"] == "proposed"
    assert second["offer_id"] == near_offer["id"]
    assert moved.json()["offer_id"] == far_offer["id"]
    assert moved.json()["proposal"]["reason"] == "request_filed"
    assert moved.json()["proposal"]["rank"] == 2
    assert (late.status_code, late.json()["code"]) == (409, "proposal_moved")
    assert late.json()["request_status"] == "proposed"
    assert "REP+" in late.json()["detail"]  # the objective, in French
    assert accepted.status_code == 200
    proposed = [p for _, p in await cordees.events("match-request.proposed.v1")]
    [move] = [p for p in proposed if p["previous_offer_id"]]
    assert move["request_id"] == first["id"]
    assert (move["previous_offer_id"], move["previous_tete_partner_id"]) == (
        near_offer["id"],
        str(near),
    )
    assert move["tete_partner_id"] == str(far)


async def test_a_rep_collège_that_loses_its_place_and_has_no_other_waits_and_is_told(
    cordees: Cordees,
) -> None:
    tete = await cordees.partner("etablissement_superieur")
    rep = await cordees.partner("college", education_prioritaire="REP")
    rep_plus = await cordees.partner("college", education_prioritaire="REP+")
    async with cordees.client() as http:
        offer = await cordees.offer(tete, http, capacity=1)
        first = await cordees.request(rep, http)
        second = await cordees.request(rep_plus, http)
        after = await http.get(f"/match-requests/{first['id']}", headers=cordees.operator())
    assert (first["status"], second["status"]) == ("proposed", "proposed")
    assert after.json()["status"] == "unmatched"
    [(_, told)] = await cordees.events("match-request.unmatched.v1")
    assert told["request_id"] == first["id"]
    assert (told["previous_offer_id"], told["previous_tete_partner_id"]) == (offer["id"], str(tete))
    assert told["reason"] == "request_filed"


# --- concurrency on the real PostgreSQL -----------------------------------------------------------


async def test_fifty_acceptances_and_declines_in_parallel_keep_capacities_exact(
    cordees: Cordees,
) -> None:
    """Four offers of three places over the same collèges, 24 requests (12 proposed, 12
    waiting); then fifty answers at once: each proposed request accepted or declined by its tête,
    some twice, some by the wrong tête. No 5xx, no deadlock surfacing; after all, every offer
    has at most its capacity of pairings plus proposals, and the invariant holds."""
    tetes = [
        await cordees.partner("etablissement_superieur", latitude=48.79 + k / 100, longitude=2.40)
        for k in range(4)
    ]
    schools = [
        await cordees.partner(
            "college",
            latitude=48.80 + (k % 6) / 200,
            longitude=2.40,
            education_prioritaire=["REP+", "REP", None][k % 3],
        )
        for k in range(24)
    ]
    async with cordees.client() as http:
        offers = [await cordees.offer(tete, http, capacity=3) for tete in tetes]
        tete_of = {offer["id"]: tete for offer, tete in zip(offers, tetes, strict=True)}
        filed = [await cordees.request(school, http) for school in schools]
        matches = [
            (await http.get(f"/match-requests/{m['id']}", headers=cordees.operator())).json()
            for m in filed
        ]
        proposed = [m for m in matches if m["status"] == "proposed"]
        assert len(proposed) == 12
        calls, actions = [], []
        for k in range(50):
            match = proposed[k % len(proposed)]
            action = "accept" if k % 3 else "decline"
            tete = tete_of[match["offer_id"]] if k % 7 else tetes[k % 4]
            actions.append(action)
            calls.append(
                http.post(
                    f"/match-requests/{match['id']}/{action}",
                    headers=cordees.token(tete, "partner"),
                )
            )
        answers = await asyncio.gather(*calls)
    assert all(answer.status_code < 500 for answer in answers), [a.text for a in answers]
    assert {a.status_code for a in answers} <= {200, 403, 409}
    async with cordees.pool.acquire() as connection, connection.transaction():
        await store.lock_matching(connection, [YEAR])
        await check_invariant(connection, set())
        for offer in offers:
            taken = await connection.fetchval(
                "SELECT (SELECT count(*) FROM pairings WHERE offer_id = $1 AND status = 'active')"
                " + (SELECT count(*) FROM match_requests WHERE offer_id = $1"
                "    AND status = 'proposed')",
                uuid.UUID(offer["id"]),
            )
            assert taken <= 3
    accepted = sum(
        1
        for action, answer in zip(actions, answers, strict=True)
        if action == "accept" and answer.status_code == 200
    )
    assert len(await cordees.events("pairing.established.v1")) == accepted > 0


# --- what a request filed keeps for the next (decision 69) ---------------------------------------


async def test_the_holders_kept_are_never_used_after_another_writer_changed_them(
    cordees: Cordees,
) -> None:
    """A request filed keeps in memory the holders of the offers it read, for the next request
    filed in this process. Whoever else changes them takes the year's matching lock, whose stamp
    makes this process read them again: a use case in another transaction (a withdrawal here),
    another process with its own memory (a request filed there), a request filed in a
    transaction rolled back. Kept holders that were used stale would move a withdrawn request,
    or leave two proposals on one place."""
    now = datetime.now(UTC)
    instance = {
        "offers": [((48.80, 2.40), 1, None), ((48.85, 2.40), 1, None)],
        "schools": [
            ((48.80, 2.41), "REP", None),
            ((48.80, 2.39), "REP+", None),
            ((48.81, 2.40), None, None),
            ((48.84, 2.40), "REP", None),
            ((48.79, 2.40), "REP+", None),
        ],
    }
    async with transaction(cordees.pool) as connection:
        _, offers, schools = await world(connection, instance, now)

    async def file(k: int, connection: asyncpg.Connection) -> dict[str, Any]:
        return await usecases.request_match(
            connection,
            caller(schools[k], "school"),
            school_year=YEAR,
            thematics=[],
            max_distance_km=None,
            now=now,
        )

    async def status(request: dict[str, Any]) -> tuple[str, uuid.UUID | None]:
        row = await store.get_request(cordees.pool, request["id"])
        assert row is not None
        return row["status"], row["offer_id"]

    async def check() -> None:
        async with cordees.pool.acquire() as connection:
            await check_invariant(connection, set())

    async with transaction(cordees.pool) as connection:
        first = await file(0, connection)  # REP: the near offer's place
    assert await status(first) == ("proposed", offers[0])
    assert matcher._kept[YEAR].holders[offers[0]][0].row["id"] == first["id"]
    # another transaction: the school withdraws it, the near offer's place is free again
    async with transaction(cordees.pool) as connection:
        school = caller(schools[0], "school")
        await usecases.withdraw_match(connection, school, first["id"], now=now)
    async with transaction(cordees.pool) as connection:
        second = await file(1, connection)  # REP+: the free place, nobody moves
    assert await status(second) == ("proposed", offers[0])
    assert await status(first) == ("withdrawn", None)
    await check()
    # another process, with its own memory: an OTHER collège takes the far offer's place there
    ours = dict(matcher._kept)
    matcher._kept.clear()
    async with transaction(cordees.pool) as connection:
        third = await file(2, connection)
    matcher._kept.clear()
    matcher._kept.update(ours)  # back in this process, whose far offer had no holder
    assert await status(third) == ("proposed", offers[1])
    async with transaction(cordees.pool) as connection:
        fourth = await file(3, connection)  # REP: takes the far place, the OTHER one waits
    assert await status(fourth) == ("proposed", offers[1])
    assert await status(third) == ("unmatched", None)
    await check()
    # a request filed in a transaction rolled back: what it kept is never used
    with contextlib.suppress(Rollback):
        async with transaction(cordees.pool) as connection:
            await file(4, connection)  # REP+: would take a place from a REP collège
            raise Rollback
    assert await cordees.pool.fetchval("SELECT count(*) FROM match_requests") == 4
    async with transaction(cordees.pool) as connection:
        fifth = await file(4, connection)
    assert (await status(fifth))[0] == "proposed"
    await check()


# --- expiry -------------------------------------------------------------------------------------


async def test_an_unanswered_proposal_expires_and_the_request_moves_on(cordees: Cordees) -> None:
    near = await cordees.partner("etablissement_superieur", latitude=48.79, longitude=2.40)
    far = await cordees.partner("etablissement_superieur", latitude=48.85, longitude=2.40)
    school = await cordees.partner("college", latitude=48.78, longitude=2.40)
    async with cordees.client() as http:
        near_offer = await cordees.offer(near, http)
        far_offer = await cordees.offer(far, http)
        match = await cordees.request(school, http)
    assert match["offer_id"] == near_offer["id"]
    expires = datetime.fromisoformat(match["proposal"]["expires_at"])
    async with cordees.pool.acquire() as connection, connection.transaction():
        assert await matcher.expire_proposals(connection, expires - timedelta(minutes=1)) == 0
    async with cordees.pool.acquire() as connection, connection.transaction():
        assert await matcher.expire_proposals(connection, expires + timedelta(minutes=1)) == 1
    async with cordees.client() as http:
        after = await http.get(f"/match-requests/{match['id']}", headers=cordees.operator())
        late = await http.post(
            f"/match-requests/{match['id']}/accept", headers=cordees.token(near, "partner")
        )
    assert after.json()["offer_id"] == far_offer["id"]
    assert after.json()["declined_offer_ids"] == [near_offer["id"]]
    assert after.json()["proposal"]["reason"] == "expired"
    assert (late.status_code, late.json()["code"]) == (409, "proposal_moved")
    [(_, declined)] = await cordees.events("match-request.declined.v1")
    assert (declined["reason"], declined["offer_id"]) == ("expired", near_offer["id"])
