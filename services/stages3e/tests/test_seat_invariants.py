"""Random sequences of every action on one week (seeded, repeatable): whatever the order, the
week's counters equal its applications, never exceed its seats, and keep the reserved seats for
eligible schools until they open; every refusal is a 409 problem, never a 5xx."""

from __future__ import annotations

import random
from datetime import timedelta

from stages3e_world import Stages, week_ahead

ACTIONS = ("accept", "decline", "cancel", "confirm", "withdraw")


async def check_week(stages: Stages, opened: bool) -> None:
    async with stages.pool.acquire() as connection:
        rows = await connection.fetch(
            """
            SELECT w.seats, w.reserved, w.held, w.held_by_ineligible,
                   count(a.id) FILTER (WHERE a.status IN ('accepted', 'confirmed')) AS holding,
                   count(a.id) FILTER (WHERE a.status IN ('accepted', 'confirmed')
                                         AND NOT a.school_eligible) AS holding_ineligible
            FROM offer_weeks w LEFT JOIN applications a
              ON a.offer_id = w.offer_id AND a.monday = w.monday
            GROUP BY w.offer_id, w.monday
            """
        )
    for row in rows:
        assert row["held"] == row["holding"]
        assert row["held_by_ineligible"] == row["holding_ineligible"]
        assert row["held"] <= row["seats"]
        if not opened:
            assert row["held_by_ineligible"] <= row["seats"] - row["reserved"]


async def test_random_sequences_keep_the_seat_invariants(stages: Stages) -> None:
    host = await stages.partner()
    schools = [(await stages.school("REP+"), True), (await stages.school(), False)]
    start = stages.now
    async with stages.client() as http:
        for seed in range(8):
            rng = random.Random(seed)
            week = week_ahead(6 + seed % 3, start)
            opened = rng.random() < 0.4
            stages.now = start.replace(
                year=week.monday.year, month=week.monday.month, day=week.monday.day
            ) - timedelta(days=5 if opened else 25)
            seats = rng.randint(1, 4)
            offer = await stages.offer(
                host,
                http,
                weeks=[{"week": str(week), "seats": seats, "reserved": rng.randint(0, seats)}],
            )
            applications = []
            for n in range(8):
                school, _ = rng.choice(schools)
                applied = await http.post(
                    "/applications",
                    json={"offer_id": offer["id"], "week": str(week),
                          "pupil_reference": f"S{seed}-{n}"},
                    headers=stages.school_token(school),
                )  # fmt: skip
                assert applied.status_code in (201, 409), applied.text
                if applied.status_code == 201:
                    applications.append((applied.json(), school))
            if not applications:
                continue
            for _ in range(20):
                (application, school), action = rng.choice(applications), rng.choice(ACTIONS)
                headers = (
                    stages.host_token(host)
                    if action in ("accept", "decline", "cancel")
                    else stages.school_token(school)
                )
                body = {"reason": "other"} if action == "cancel" else None
                answer = await http.post(
                    f"/applications/{application['id']}/{action}", json=body, headers=headers
                )
                assert answer.status_code in (200, 409), answer.text
                await check_week(stages, opened)
