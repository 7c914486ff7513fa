"""Offers over HTTP: who may publish, the weeks' window, the scoped remote_id upsert, updates
that never go below the seats held, unpublish and withdraw, their events."""

from __future__ import annotations

import asyncio

from stages3e_world import Stages, week_ahead


async def test_a_verified_company_publishes_an_offer_at_its_own_place(stages: Stages) -> None:
    host = await stages.partner("entreprise", latitude=48.79, longitude=2.40)
    week = week_ahead()
    async with stages.client() as http:
        offer = await stages.offer(
            host, http, weeks=[{"week": str(week), "seats": 4, "reserved": 2}]
        )
    assert offer["status"] == "published"
    assert (offer["latitude"], offer["longitude"]) == (48.79, 2.40)  # the partner's, by default
    assert offer["weeks"] == [
        {
            "week": str(week),
            "monday": week.monday.isoformat(),
            "seats": 4,
            "reserved": 2,
            "held": 0,
            "free": 4,
        }
    ]
    [(_, published)] = await stages.events("offer.published.v1")
    assert published["weeks"] == [str(week)]
    assert published["places"] == 4
    assert published["reserved_places"] == 2
    assert published["week_start"] == week.monday.isoformat()


async def test_schools_pending_partners_and_anonymous_callers_cannot_publish(
    stages: Stages,
) -> None:
    school = await stages.school()
    pending = await stages.partner("association", status="pending")
    body = {
        "title": "Stage",
        "description": "Une semaine.",
        "sector": "Q",
        "weeks": [{"week": str(week_ahead()), "seats": 1}],
    }
    async with stages.client() as http:
        for headers in (stages.school_token(school), stages.host_token(pending)):
            refused = await http.post("/offers", json=body, headers=headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "forbidden"
        assert (await http.post("/offers", json=body)).status_code == 401
    assert await stages.events() == []


async def test_weeks_outside_the_window_or_of_two_school_years_are_refused(
    stages: Stages,
) -> None:
    host = await stages.partner()
    this_year = week_ahead()
    next_year = week_ahead(52)
    async with stages.client() as http:
        for weeks, code in (
            ([{"week": "2027-W24", "seats": 1}], "invalid_weeks"),  # June
            ([{"week": "2027-W53", "seats": 1}], "invalid_weeks"),  # no such week
            ([{"week": str(this_year), "seats": 1}, {"week": str(next_year), "seats": 1}],
             "invalid_weeks"),
            ([{"week": str(this_year), "seats": 1, "reserved": 2}], "invalid_weeks"),
            ([{"week": "2020-W05", "seats": 1}], "invalid_weeks"),  # begun long ago
        ):  # fmt: skip
            body = {"title": "T", "description": "D", "sector": "A", "weeks": weeks}
            refused = await http.post("/offers", json=body, headers=stages.host_token(host))
            assert refused.status_code == 422, refused.text
            assert refused.json()["code"] == code
        body = {
            "title": "T",
            "description": "D",
            "sector": "A",
            "latitude": 0,
            "longitude": 0,
            "weeks": [{"week": str(this_year), "seats": 1}],
        }
        zero = await http.post("/offers", json=body, headers=stages.host_token(host))
        assert zero.status_code == 422
        body["sector"] = "D"  # not a GFE code
        assert (
            await http.post("/offers", json=body, headers=stages.host_token(host))
        ).status_code == 422


async def test_the_same_remote_id_by_two_partners_makes_two_offers_and_no_cross_access(
    stages: Stages,
) -> None:
    first, second = await stages.partner(name="A"), await stages.partner(name="B")
    body = {
        "title": "Atelier",
        "description": "Une semaine.",
        "sector": "F",
        "weeks": [{"week": str(week_ahead()), "seats": 2}],
    }
    async with stages.client() as http:
        a = await http.put(
            "/offers/by-remote-id/job-42", json=body, headers=stages.host_token(first)
        )
        b = await http.put(
            "/offers/by-remote-id/job-42", json=body, headers=stages.host_token(second)
        )
        assert (a.status_code, b.status_code) == (201, 201), (a.text, b.text)
        assert a.json()["id"] != b.json()["id"]
        # The first partner's upsert again: its own offer replaced, not the other's.
        again = await http.put(
            "/offers/by-remote-id/job-42",
            json={**body, "title": "Atelier (modifié)"},
            headers=stages.host_token(first),
        )
        assert again.status_code == 200, again.text
        assert again.json()["id"] == a.json()["id"]
        assert again.json()["version"] == 2
        mine = await http.get("/offers/by-remote-id/job-42", headers=stages.host_token(second))
        assert mine.json()["id"] == b.json()["id"]
        assert mine.json()["title"] == "Atelier"
        # Neither changes the other's offer by its id.
        refused = await http.put(
            f"/offers/{a.json()['id']}", json=body, headers=stages.host_token(second)
        )
        assert refused.status_code == 403
        # Concurrent upserts of one new remote id: one creates, the others replace.
        answers = await asyncio.gather(
            *(
                http.put("/offers/by-remote-id/job-43", json=body, headers=stages.host_token(first))
                for _ in range(5)
            )
        )
        assert sorted(r.status_code for r in answers) == [200, 200, 200, 200, 201]
        assert len({r.json()["id"] for r in answers}) == 1


async def test_an_update_never_goes_below_the_seats_held(stages: Stages) -> None:
    host, school = await stages.partner(), await stages.school("REP+")
    week = week_ahead()
    async with stages.client() as http:
        offer = await stages.offer(host, http, weeks=[{"week": str(week), "seats": 3}])
        for pupil in ("3A-01", "3A-02"):
            application = await stages.application(school, offer, http, pupil=pupil)
            accepted = await http.post(
                f"/applications/{application['id']}/accept", headers=stages.host_token(host)
            )
            assert accepted.status_code == 200, accepted.text
        body = {
            "title": offer["title"],
            "description": offer["description"],
            "sector": "F",
            "weeks": [{"week": str(week), "seats": 1}],
        }
        refused = await http.put(
            f"/offers/{offer['id']}", json=body, headers=stages.host_token(host)
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "seats_below_held"
        other = week_ahead(6)
        body["weeks"] = [{"week": str(other), "seats": 2}]  # dropping a week with applications
        refused = await http.put(
            f"/offers/{offer['id']}", json=body, headers=stages.host_token(host)
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "week_has_applications"
        body["weeks"] = [{"week": str(week), "seats": 2}, {"week": str(other), "seats": 2}]
        updated = await http.put(
            f"/offers/{offer['id']}", json=body, headers=stages.host_token(host)
        )
        assert updated.status_code == 200, updated.text
        assert [w["free"] for w in updated.json()["weeks"]] == [0, 2]
    assert [t for t, _ in await stages.events("offer.updated.v1")] == [
        "fr.maillage.stages3e.offer.updated.v1"
    ]


async def test_unpublish_publish_and_withdraw_cancels_live_applications(stages: Stages) -> None:
    host, school = await stages.partner(), await stages.school()
    async with stages.client() as http:
        offer = await stages.offer(host, http)
        application = await stages.application(school, offer, http)
        hidden = await http.post(
            f"/offers/{offer['id']}/unpublish", headers=stages.host_token(host)
        )
        assert hidden.json()["status"] == "unpublished"
        refused = await http.post(
            "/applications",
            json={
                "offer_id": offer["id"],
                "week": offer["weeks"][0]["week"],
                "pupil_reference": "X1",
            },
            headers=stages.school_token(school),
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "offer_status_conflict"
        shown = await http.post(f"/offers/{offer['id']}/publish", headers=stages.host_token(host))
        assert shown.json()["status"] == "published"
        gone = await http.post(f"/offers/{offer['id']}/withdraw", headers=stages.host_token(host))
        assert gone.json()["status"] == "withdrawn"
        again = await http.post(f"/offers/{offer['id']}/withdraw", headers=stages.host_token(host))
        assert again.status_code == 409
        cancelled = await http.get(
            f"/applications/{application['id']}", headers=stages.school_token(school)
        )
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["reason"] == "offer_withdrawn"
    types = [t.rsplit(".", 2)[-2] for t, _ in await stages.events()]
    assert types == ["published", "submitted", "unpublished", "published", "cancelled", "withdrawn"]


async def test_a_suspended_host_changes_nothing_with_its_unexpired_token(stages: Stages) -> None:
    """Decision 40: the read model, updated by partner.suspended, decides on every write."""
    from maillage.common.catalog import PartnerSuspended

    host = await stages.partner("entreprise")
    async with stages.client() as http:
        offer = await stages.offer(host, http)
        await stages.apply_event(
            PartnerSuspended(
                partner_id=host,
                kind="entreprise",
                legal_name="Partenaire",
                status="suspended",
                version=2,
            )
        )
        opened = await http.post(
            "/offers",
            json={
                "title": "Autre",
                "description": "Une autre semaine.",
                "sector": "F",
                "weeks": [{"week": str(week_ahead()), "seats": 1}],
            },
            headers=stages.host_token(host),
        )
        unpublished = await http.post(
            f"/offers/{offer['id']}/unpublish", headers=stages.host_token(host)
        )
        read = await http.get(f"/offers/{offer['id']}", headers=stages.host_token(host))
    for refused in (opened, unpublished):
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "partner_not_in_good_standing"
    assert read.status_code == 200
    assert read.json()["status"] == "published"


async def test_weeks_at_the_ends_of_the_calendar_are_refused_not_crashed(stages: Stages) -> None:
    host, school = await stages.partner(), await stages.school()
    body = {"title": "T", "description": "D", "sector": "A"}
    async with stages.client() as http:
        for week in ("9999-W52", "0001-W01", "0000-W10"):
            refused = await http.post(
                "/offers", json={**body, "weeks": [{"week": week, "seats": 1}]},
                headers=stages.host_token(host),
            )  # fmt: skip
            assert refused.status_code == 422, refused.text
            declared = await http.put(
                "/schools/me/weeks", json={"weeks": [week]}, headers=stages.school_token(school)
            )
            assert declared.status_code == 422, declared.text
            found = await http.get(
                "/offers", params={"week": week}, headers=stages.school_token(school)
            )
            assert found.status_code in (200, 422), found.text
