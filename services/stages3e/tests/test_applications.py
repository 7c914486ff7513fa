"""Applications: seats never overbooked under concurrency, reserved seats, timers, confirmation,
who sees what, no pupil reference on the bus, erasure."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from stages3e_world import Stages, week_ahead

from maillage.stages3e import domain
from maillage.stages3e.workers import StagesClock


async def test_50_parallel_acceptances_on_3_seats_hold_exactly_3(stages: Stages) -> None:
    host = await stages.partner()
    schools = [await stages.school("REP") for _ in range(5)]
    async with stages.client() as http:
        offer = await stages.offer(host, http, weeks=[{"week": str(week_ahead()), "seats": 3}])
        applications = [
            await stages.application(schools[n % 5], offer, http, pupil=f"3C-{n:02d}")
            for n in range(50)
        ]
        answers = await asyncio.gather(
            *(
                http.post(f"/applications/{a['id']}/accept", headers=stages.host_token(host))
                for a in applications
            )
        )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 3 + [409] * 47
    refusals = [answer.json() for answer in answers if answer.status_code == 409]
    assert {problem["code"] for problem in refusals} == {"week_full"}
    assert all(problem["detail"] for problem in refusals)
    async with stages.pool.acquire() as connection:
        held = await connection.fetchval("SELECT held FROM offer_weeks")
        accepted = await connection.fetchval(
            "SELECT count(*) FROM applications WHERE status = 'accepted'"
        )
    assert (held, accepted) == (3, 3)
    assert len(await stages.events("application.accepted.v1")) == 3


async def test_reserved_seats_go_to_eligible_schools_then_open_14_days_before(
    stages: Stages,
) -> None:
    host = await stages.partner()
    rep_plus, ordinary, near_qpv = (
        await stages.school("REP+"),
        await stages.school(None),
        await stages.school(None, qpv_proximity=True),
    )
    week = week_ahead(8)
    stages.now = stages.now.replace(
        year=week.monday.year, month=week.monday.month, day=week.monday.day
    ) - timedelta(days=30)
    async with stages.client() as http:
        offer = await stages.offer(
            host, http, weeks=[{"week": str(week), "seats": 2, "reserved": 1}]
        )
        # An ordinary collège sees one free seat, an eligible one two.
        seen = await http.get(f"/offers/{offer['id']}", headers=stages.school_token(ordinary))
        assert seen.json()["weeks"][0]["free"] == 1
        seen = await http.get(f"/offers/{offer['id']}", headers=stages.school_token(near_qpv))
        assert seen.json()["weeks"][0]["free"] == 2
        first = await stages.application(ordinary, offer, http, pupil="O-1")
        second = await stages.application(ordinary, offer, http, pupil="O-2")
        third = await stages.application(rep_plus, offer, http, pupil="R-1")
        ok = await http.post(f"/applications/{first['id']}/accept", headers=stages.host_token(host))
        assert ok.status_code == 200
        refused = await http.post(
            f"/applications/{second['id']}/accept", headers=stages.host_token(host)
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "reserved_seats_only"
        assert refused.json()["opens_on"] == (week.monday - timedelta(days=14)).isoformat()
        # 14 days before the week, the reserved seat still free opens to every school.
        stages.now += timedelta(days=17)
        opened = await http.post(
            f"/applications/{second['id']}/accept", headers=stages.host_token(host)
        )
        assert opened.status_code == 200, opened.text
        full = await http.post(
            f"/applications/{third['id']}/accept", headers=stages.host_token(host)
        )
        assert full.json()["code"] == "week_full"


async def test_expiry_frees_the_seat(stages: Stages) -> None:
    host, school = await stages.partner(), await stages.school()
    async with stages.client() as http:
        offer = await stages.offer(host, http, weeks=[{"week": str(week_ahead(5)), "seats": 1}])
        waiting = await stages.application(school, offer, http, pupil="W-1")
        accepted = await stages.application(school, offer, http, pupil="A-1")
        await http.post(f"/applications/{accepted['id']}/accept", headers=stages.host_token(host))
    clock = StagesClock(stages.pool, clock=lambda: stages.now)
    stages.now += timedelta(days=domain.CONFIRM_DAYS, minutes=1)  # no confirmation in 7 days
    assert (await clock.run_once())["expired"] == 1
    stages.now += timedelta(days=domain.ANSWER_DAYS)  # no answer in 15 days
    assert (await clock.run_once())["expired"] == 1
    async with stages.pool.acquire() as connection:
        held = await connection.fetchval("SELECT held FROM offer_weeks")
        statuses = await connection.fetch("SELECT id, status FROM applications ORDER BY id")
    assert held == 0
    assert {row["status"] for row in statuses} == {"expired"}
    expired = [data["application_id"] for _, data in await stages.events("expired.v1")]
    assert sorted(expired) == sorted([waiting["id"], accepted["id"]])


async def test_confirming_withdraws_the_pupils_other_applications_and_a_second_is_refused(
    stages: Stages,
) -> None:
    host, other_host, school = await stages.partner(), await stages.partner(), await stages.school()
    async with stages.client() as http:
        offer = await stages.offer(host, http)
        other = await stages.offer(
            other_host, http, weeks=[{"week": str(week_ahead(6)), "seats": 1}]
        )
        chosen = await stages.application(school, offer, http, pupil="3B-07")
        elsewhere = await stages.application(school, other, http, pupil="3B-07")
        for application, by in ((chosen, host), (elsewhere, other_host)):
            answer = await http.post(
                f"/applications/{application['id']}/accept", headers=stages.host_token(by)
            )
            assert answer.status_code == 200, answer.text
        confirmed = await http.post(
            f"/applications/{chosen['id']}/confirm", headers=stages.school_token(school)
        )
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["status"] == "confirmed"
        withdrawn = await http.get(
            f"/applications/{elsewhere['id']}", headers=stages.school_token(school)
        )
        assert withdrawn.json()["status"] == "withdrawn"
        assert withdrawn.json()["reason"] == "other_stage_confirmed"
        seats = await http.get(f"/offers/{other['id']}", headers=stages.school_token(school))
        assert seats.json()["weeks"][0]["free"] == 1  # its seat is free again
        # The same pupil cannot apply again this school year, nor be confirmed twice.
        again = await http.post(
            "/applications",
            json={
                "offer_id": other["id"],
                "week": other["weeks"][0]["week"],
                "pupil_reference": "3B-07",
            },
            headers=stages.school_token(school),
        )
        assert again.status_code == 409
        assert again.json()["code"] == "stage_already_confirmed"
        twice = await http.post(
            f"/applications/{chosen['id']}/confirm", headers=stages.school_token(school)
        )
        assert twice.status_code == 409
        assert twice.json()["code"] == "application_status_conflict"
    withdrawals = await stages.events("application.withdrawn.v1")
    assert [data["reason"] for _, data in withdrawals] == ["other_stage_confirmed"]


async def test_a_school_sees_only_its_pupils_and_a_host_only_applications_to_its_offers(
    stages: Stages,
) -> None:
    host, stranger_host = await stages.partner(), await stages.partner()
    school, other_school = await stages.school(), await stages.school()
    async with stages.client() as http:
        offer = await stages.offer(host, http)
        mine = await stages.application(school, offer, http, pupil="3B-07")
        theirs = await stages.application(other_school, offer, http, pupil="3D-11")
        listed = await http.get("/applications", headers=stages.school_token(school))
        assert [a["id"] for a in listed.json()["items"]] == [mine["id"]]
        assert listed.json()["items"][0]["pupil_reference"] == "3B-07"
        hidden = await http.get(
            f"/applications/{theirs['id']}", headers=stages.school_token(school)
        )
        assert hidden.status_code == 404
        for_host = await http.get("/applications", headers=stages.host_token(host))
        assert {a["id"] for a in for_host.json()["items"]} == {mine["id"], theirs["id"]}
        assert {a["pupil_reference"] for a in for_host.json()["items"]} == {None}
        nothing = await http.get("/applications", headers=stages.host_token(stranger_host))
        assert nothing.json()["items"] == []
        refused = await http.post(
            f"/applications/{mine['id']}/accept", headers=stages.host_token(stranger_host)
        )
        assert refused.status_code == 404
        not_by_school = await http.post(
            f"/applications/{mine['id']}/accept", headers=stages.school_token(school)
        )
        assert not_by_school.status_code == 403
        not_by_other = await http.post(
            f"/applications/{mine['id']}/withdraw", headers=stages.school_token(other_school)
        )
        assert not_by_other.status_code == 404
        everything = await http.get("/applications", headers=stages.operator())
        assert len(everything.json()["items"]) == 2


async def test_no_event_carries_a_pupil_reference_and_erasure_keeps_the_facts(
    stages: Stages,
) -> None:
    host, school = await stages.partner(), await stages.school("REP+")
    references = ["PUPIL-REF-A1", "PUPIL-REF-B2", "PUPIL-REF-C3"]
    async with stages.client() as http:
        offer = await stages.offer(host, http, weeks=[{"week": str(week_ahead()), "seats": 5}])
        applications = [await stages.application(school, offer, http, pupil=r) for r in references]
        for application in applications[:2]:
            await http.post(
                f"/applications/{application['id']}/accept", headers=stages.host_token(host)
            )
        await http.post(
            f"/applications/{applications[0]['id']}/confirm", headers=stages.school_token(school)
        )
        await http.post(
            f"/applications/{applications[1]['id']}/cancel",
            json={"reason": "host_unavailable"},
            headers=stages.host_token(host),
        )
        await http.post(
            f"/applications/{applications[2]['id']}/withdraw", headers=stages.school_token(school)
        )
        erased = await http.post(
            "/schools/me/erasure",
            json={"pupil_reference": "PUPIL-REF-A1"},
            headers=stages.school_token(school),
        )
        assert erased.json() == {"erased": 1}
        after = await http.get(
            f"/applications/{applications[0]['id']}", headers=stages.school_token(school)
        )
        assert after.json()["pupil_reference"] is None
        assert after.json()["status"] == "confirmed"  # the facts stay
        assert after.json()["erased_at"] is not None
    async with stages.pool.acquire() as connection:
        rows = await connection.fetch("SELECT payload, headers FROM outbox")
    assert len(rows) >= 8
    for row in rows:
        text = row["payload"] + json.dumps(row["headers"])
        assert "PUPIL-REF" not in text


async def test_the_year_end_worker_erases_references_of_finished_school_years(
    stages: Stages,
) -> None:
    host, school = await stages.partner(), await stages.school()
    async with stages.client() as http:
        offer = await stages.offer(host, http)
        await stages.application(school, offer, http, pupil="3E-01")
    year = domain.school_year_of_week(domain.IsoWeek.parse(offer["weeks"][0]["week"]))
    assert year is not None
    clock = StagesClock(stages.pool, clock=lambda: stages.now)
    stages.now = stages.now.replace(year=year + 1, month=7, day=30)
    assert (await clock.run_once())["erased"] == 0
    stages.now = stages.now.replace(day=31)
    done = await clock.run_once()
    assert done["erased"] == 1
    async with stages.pool.acquire() as connection:
        left = await connection.fetchval("SELECT count(pupil_reference) FROM applications")
    assert left == 0


async def test_no_record_on_the_stage_topics_carries_a_pupil_reference(
    stages: Stages, kafka_bootstrap_servers: str
) -> None:
    """The outbox relay sends this test's events to the real broker; every record of both
    stages3e topics (this test's and earlier tests') is read back and scanned."""
    import asyncio as aio

    from aiokafka import AIOKafkaConsumer

    host, school = await stages.partner(), await stages.school("REP+")
    reference = "SCAN-TOPICS-REF-77"
    async with stages.client() as http:
        offer = await stages.offer(host, http)
        application = await stages.application(school, offer, http, pupil=reference)
        await http.post(
            f"/applications/{application['id']}/accept", headers=stages.host_token(host)
        )
        await http.post(
            f"/applications/{application['id']}/confirm", headers=stages.school_token(school)
        )
    for _ in range(600):  # the relay publishes within moments
        async with stages.pool.acquire() as connection:
            left = await connection.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )
        if left == 0:
            break
        await aio.sleep(0.1)
    assert left == 0
    consumer = AIOKafkaConsumer(
        "stages3e.offers",
        "stages3e.applications",
        bootstrap_servers=kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        seen: list[bytes] = []
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    seen.append(
                        (record.value or b"")
                        + b"".join(value or b"" for _, value in record.headers)
                    )
            if any(application["id"].encode() in item and b"confirmed" in item for item in seen):
                break
    finally:
        await consumer.stop()
    assert any(application["id"].encode() in item for item in seen)
    assert not any(reference.encode() in item for item in seen)
