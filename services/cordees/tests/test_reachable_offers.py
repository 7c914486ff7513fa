"""The SQL prefilter of a single request (``matcher.reachable_offers``) leaves out no offer the
engine would keep: on random offers and schools, the ranking over the reachable offers is the
ranking over every open offer of the year (the school's own left out)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from maillage.common.db import create_pool, migrate_service
from maillage.cordees import domain, matcher, store
from maillage.cordees.app import MIGRATIONS

YEAR = "2026-2027"
ACADEMIES = sorted(set(domain.ACADEMIE_OF_DEPARTEMENT.values()))


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate_service(database_url, MIGRATIONS)
    pool = await create_pool(database_url)
    yield pool
    await pool.close()


async def _partner(
    pool: asyncpg.Pool, kind: str, rng: random.Random, **facts: Any
) -> dict[str, Any]:
    partner = {
        "partner_id": uuid.uuid4(),
        "kind": kind,
        "legal_name": kind,
        "status": "verified",
        "uai": None,
        "departement": "94",
        "academie": rng.choice(ACADEMIES),
        # around Paris, and a few far away (the band must not wrap anything)
        "latitude": rng.choice((48.8, 48.8, 43.3, -20.9)) + rng.uniform(-1.2, 1.2),
        "longitude": rng.uniform(-1.0, 5.0),
        "education_prioritaire": None,
        "qpv_proximity": None,
        "version": 1,
        **facts,
    }
    await store.apply_partner(pool, partner)
    return partner


async def test_the_ranking_over_reachable_offers_is_the_ranking_over_every_offer(
    pool: asyncpg.Pool,
) -> None:
    rng = random.Random(147)
    tetes = [await _partner(pool, "etablissement_superieur", rng) for _ in range(60)]
    lycees = [await _partner(pool, "lycee", rng, uai="0940001A") for _ in range(20)]
    colleges = [await _partner(pool, "college", rng, uai="0940002B") for _ in range(20)]
    suspended = await _partner(pool, "etablissement_superieur", rng, status="suspended")
    for leader in [*tetes, *lycees, suspended]:
        for _ in range(rng.randint(1, 3)):
            territory = rng.choice(("radius", "academies", "both", "none"))
            await store.insert_offer(
                pool,
                {
                    "id": uuid.uuid4(),
                    "tete_partner_id": leader["partner_id"],
                    "school_year": rng.choice((YEAR, YEAR, YEAR, "2027-2028")),
                    "capacity": rng.randint(1, 5),
                    "levels": rng.sample(domain.LEVELS, rng.randint(1, 3)),
                    "thematics": ["sciences"],
                    # some radii exactly at a school's distance are likely with a coarse grid
                    "max_distance_km": (
                        rng.choice((5.0, 20.0, 50.0, 111.2, 300.0))
                        if territory in ("radius", "both")
                        else None
                    ),
                    "academies": (
                        rng.sample(ACADEMIES, rng.randint(1, 2))
                        if territory in ("academies", "both")
                        else []
                    ),
                },
            )
    every = await matcher.candidate_offers(pool, YEAR)  # type: ignore[arg-type]  # a pool runs it
    compared = kept = eligible = 0
    async with pool.acquire() as connection:
        for partner in [*lycees, *colleges]:
            school = matcher.school_of(partner)
            assert school is not None
            for wish in (None, 10.0, 60.0, 200.0):
                request = domain.Request(uuid.uuid4(), school, (), wish, YEAR)
                reachable = await matcher.reachable_offers(connection, request)
                mine = [o for o in every if o.tete_partner_id != school.partner_id]
                ranked = domain.rank_candidates(request, mine, len(every))
                assert domain.rank_candidates(request, reachable, len(every)) == ranked
                assert all(o.tete_partner_id != school.partner_id for o in reachable)
                compared += 1
                kept += len(reachable)
                eligible += len(ranked)
    # not vacuous: many offers are eligible, and the prefilter reads fewer than every one
    assert eligible > compared
    assert kept < compared * len(every)
