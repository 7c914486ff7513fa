"""`max_candidates` under concurrency: applications to one offer run one after the other (the
offer's row lock, decision 60), so parallel applications never leave more live applications than
the cap, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stages3e_world import Stages, week_ahead


async def live_applications(stages: Stages, offer: dict[str, Any]) -> int:
    async with stages.pool.acquire() as connection:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM applications WHERE offer_id = $1"
            " AND status IN ('submitted', 'accepted', 'confirmed')",
            uuid.UUID(offer["id"]),
        )
    return count


async def apply_in_parallel(
    stages: Stages,
    http: httpx.AsyncClient,
    schools: list[uuid.UUID],
    offer: dict[str, Any],
    count: int,
    prefix: str,
) -> list[httpx.Response]:
    week = offer["weeks"][0]["week"]
    return await asyncio.gather(
        *(
            http.post(
                "/applications",
                json={"offer_id": offer["id"], "week": week, "pupil_reference": f"{prefix}-{n}"},
                headers=stages.school_token(schools[n % len(schools)]),
            )
            for n in range(count)
        )
    )


async def test_parallel_applications_never_exceed_max_candidates(stages: Stages) -> None:
    host = await stages.partner()
    schools = [await stages.school() for _ in range(4)]
    async with stages.client() as http:
        offer = await stages.offer(
            host, http, max_candidates=3, weeks=[{"week": str(week_ahead()), "seats": 20}]
        )
        answers = await apply_in_parallel(stages, http, schools, offer, 24, "4A")
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [201] * 3 + [409] * 21
        refusals = [answer.json() for answer in answers if answer.status_code == 409]
        assert {problem["code"] for problem in refusals} == {"max_candidates_reached"}
        assert {problem["max_candidates"] for problem in refusals} == {3}
        assert await live_applications(stages, offer) == 3
        # A withdrawal frees one place under the cap, and only one: 10 more try at once.
        first = next(answer.json() for answer in answers if answer.status_code == 201)
        school = uuid.UUID(first["school_partner_id"])
        withdrawn = await http.post(
            f"/applications/{first['id']}/withdraw", headers=stages.school_token(school)
        )
        assert withdrawn.status_code == 200, withdrawn.text
        again = await apply_in_parallel(stages, http, schools, offer, 10, "4B")
    assert sorted(answer.status_code for answer in again) == [201] + [409] * 9
    assert await live_applications(stages, offer) == 3


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cap=st.integers(1, 5), applicants=st.integers(1, 12), seats=st.integers(1, 6))
async def test_any_cap_and_any_crowd_leave_at_most_the_cap_live(
    stages: Stages, cap: int, applicants: int, seats: int
) -> None:
    """Whatever the cap, the crowd and the week's seats (which applications do not take), as
    many applications are created as the cap allows, and every other one is a 409 problem."""
    host = await stages.partner()
    schools = [await stages.school(), await stages.school("REP")]
    async with stages.client() as http:
        offer = await stages.offer(
            host, http, max_candidates=cap, weeks=[{"week": str(week_ahead()), "seats": seats}]
        )
        answers = await apply_in_parallel(stages, http, schools, offer, applicants, "P")
    created = sum(answer.status_code == 201 for answer in answers)
    assert created == min(cap, applicants)
    assert all(answer.status_code in (201, 409) for answer in answers)
    assert await live_applications(stages, offer) == created
