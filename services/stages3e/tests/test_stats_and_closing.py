"""Statistics per week with the REP+/REP share; offers closing by themselves; Idempotency-Key
on creating POSTs."""

from __future__ import annotations

from datetime import timedelta

from stages3e_world import Stages, week_ahead

from maillage.stages3e.workers import StagesClock


async def test_stats_give_the_share_of_confirmed_stages_that_went_to_rep_pupils(
    stages: Stages,
) -> None:
    host = await stages.partner(departement="94")
    rep_plus, ordinary = await stages.school("REP+"), await stages.school()
    week = week_ahead()
    async with stages.client() as http:
        offer = await stages.offer(
            host, http, weeks=[{"week": str(week), "seats": 4, "reserved": 2}]
        )
        for school, pupil in ((rep_plus, "R1"), (ordinary, "O1"), (ordinary, "O2")):
            application = await stages.application(school, offer, http, pupil=pupil)
            await http.post(
                f"/applications/{application['id']}/accept", headers=stages.host_token(host)
            )
            if pupil != "O2":
                confirmed = await http.post(
                    f"/applications/{application['id']}/confirm",
                    headers=stages.school_token(school),
                )
                assert confirmed.status_code == 200, confirmed.text
        year = offer["school_year"][:4]
        for params in ({"departement": "94"}, {"academie": "24"}, {}):
            answer = await http.get(
                "/stats", params={**params, "school_year": year}, headers=stages.operator()
            )
            assert answer.status_code == 200, answer.text
            stats = answer.json()
            assert (stats["offers"], stats["seats"], stats["reserved"]) == (1, 4, 2)
            assert stats["confirmed"] == 2
            assert stats["rep_share"] == 0.5
            [per_week] = stats["weeks"]
            assert per_week["week"] == str(week)
            assert per_week["applications"]["accepted"] == 1
            assert per_week["held"] == 3
        elsewhere = await http.get(
            "/stats", params={"departement": "75", "school_year": year}, headers=stages.operator()
        )
        assert elsewhere.json()["offers"] == 0
        anonymous_partner = await http.get("/stats", headers=stages.token(None, "partner"))
        assert anonymous_partner.status_code == 403
        partner = await http.get("/stats", headers=stages.host_token(host))
        assert partner.status_code == 200


async def test_offers_close_when_full_or_past(stages: Stages) -> None:
    host, school = await stages.partner(), await stages.school()
    async with stages.client() as http:
        full = await stages.offer(host, http, weeks=[{"week": str(week_ahead(3)), "seats": 1}])
        later = await stages.offer(host, http, weeks=[{"week": str(week_ahead(5)), "seats": 1}])
        application = await stages.application(school, full, http)
        await http.post(
            f"/applications/{application['id']}/accept", headers=stages.host_token(host)
        )
    clock = StagesClock(stages.pool, clock=lambda: stages.now)
    assert (await clock.run_once())["closed"] == 1
    stages.now += timedelta(weeks=12)
    assert (await clock.run_once())["closed"] == 1
    closed = await stages.events("offer.closed.v1")
    assert [(data["offer_id"], data["reason"]) for _, data in closed] == [
        (full["id"], "full"),
        (later["id"], "past"),
    ]


async def test_a_retried_application_with_its_idempotency_key_applies_once(stages: Stages) -> None:
    host, school = await stages.partner(), await stages.school()
    async with stages.client() as http:
        offer = await stages.offer(host, http)
        body = {"offer_id": offer["id"], "week": offer["weeks"][0]["week"], "pupil_reference": "K1"}
        headers = {**stages.school_token(school), "Idempotency-Key": "apply-k1-once"}
        first = await http.post("/applications", json=body, headers=headers)
        again = await http.post("/applications", json=body, headers=headers)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
    assert len(await stages.events("application.submitted.v1")) == 1


async def test_a_suspended_host_can_no_longer_write_and_writes_are_rate_limited(
    stages: Stages,
) -> None:
    from maillage.common.catalog import PartnerSuspended
    from maillage.common.ratelimit import TokenBucket

    host, school = await stages.partner(), await stages.school()
    async with stages.client() as http:
        offer = await stages.offer(host, http)
        application = await stages.application(school, offer, http)
        await stages.apply_event(
            PartnerSuspended(
                partner_id=host, kind="entreprise", legal_name="Partenaire", status="suspended",
                version=2,
            )
        )  # fmt: skip
        refused = await http.post(
            f"/applications/{application['id']}/accept", headers=stages.host_token(host)
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "partner_not_in_good_standing"
        stages.app.state.rate_limits["writes"] = TokenBucket(rate=2, per=60)
        headers = stages.school_token(school)
        answers = [
            await http.put("/schools/me/weeks", json={"weeks": []}, headers=headers)
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert answers[-1].json()["code"] == "rate_limited"
