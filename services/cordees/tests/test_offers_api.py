"""Cordée offers over HTTP: opened, changed and closed by their verified tête de cordée only."""

from __future__ import annotations

import uuid

from cordees_world import Cordees, school_year


async def test_a_verified_tete_opens_an_offer_and_its_event_is_published(
    cordees: Cordees,
) -> None:
    tete = await cordees.partner("etablissement_superieur", name="EFREI")
    async with cordees.client() as http:
        offer = await cordees.offer(tete, http, academies=["24"], levels=["3e", "4e", "3e"])
        read = await http.get(f"/offers/{offer['id']}", headers=cordees.token(None, "officer"))
    assert offer["status"] == "open"
    assert offer["levels"] == ["3e", "4e"]
    assert offer["academies"] == ["24"]
    assert (offer["capacity"], offer["encordes"], offer["remaining"]) == (2, 0, 2)
    assert read.json() == offer
    [(_kind, payload)] = await cordees.events("offer.opened.v1")
    assert payload["offer_id"] == offer["id"]
    assert payload["tete_partner_id"] == str(tete)
    assert payload["levels"] == ["3e", "4e"]


async def test_only_verified_tetes_open_offers(cordees: Cordees) -> None:
    pending = await cordees.partner("etablissement_superieur", status="pending")
    college = await cordees.partner("college")
    association = await cordees.partner("association")
    nowhere = await cordees.partner("etablissement_superieur", latitude=None, longitude=None)
    body = {"school_year": school_year(), "capacity": 1, "levels": ["3e"], "thematics": ["arts"]}
    async with cordees.client() as http:
        answers = {
            who: await http.post("/offers", json=body, headers=cordees.token(partner, *roles))
            for who, partner, roles in (
                ("pending", pending, ("partner",)),
                ("college", college, ("partner", "school")),
                ("association", association, ("partner",)),
                ("unknown", uuid.uuid4(), ("partner",)),
                ("operator", None, ("operator",)),
                ("nowhere", nowhere, ("partner",)),
            )
        }
        anonymous = await http.post("/offers", json=body)
    assert {who: answer.status_code for who, answer in answers.items()} == {
        "pending": 403,
        "college": 403,
        "association": 403,
        "unknown": 403,
        "operator": 403,
        "nowhere": 409,
    }
    assert "statut en attente de vérification" in answers["pending"].json()["detail"]
    assert answers["nowhere"].json()["code"] == "tete_location_unknown"
    assert anonymous.status_code == 401
    assert await cordees.events("offer.opened.v1") == []


async def test_invalid_offers_are_refused_with_a_problem_per_field(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    headers = cordees.token(tete, "partner")
    async with cordees.client() as http:
        bad = await http.post(
            "/offers",
            json={
                "school_year": "2026-2028",
                "capacity": 0,
                "levels": ["6e"],
                "thematics": ["astrologie"],
                "academies": ["99"],
            },
            headers=headers,
        )
        past = await http.post(
            "/offers",
            json={
                "school_year": "2001-2002",
                "capacity": 1,
                "levels": ["3e"],
                "thematics": ["arts"],
            },
            headers=headers,
        )
    assert bad.status_code == 422
    pointers = {error["pointer"] for error in bad.json()["errors"]}
    assert {"#/school_year", "#/capacity", "#/levels/0", "#/thematics/0", "#/academies"} <= pointers
    assert past.status_code == 422
    assert "est terminée" in past.text


async def test_idempotency_key_replays_the_opened_offer(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    headers = {**cordees.token(tete, "partner"), "Idempotency-Key": f"offer-{uuid.uuid4()}"}
    body = {"school_year": school_year(), "capacity": 3, "levels": ["3e"], "thematics": ["sante"]}
    async with cordees.client() as http:
        first = await http.post("/offers", json=body, headers=headers)
        again = await http.post("/offers", json=body, headers=headers)
        other = await http.post("/offers", json={**body, "capacity": 4}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    assert len(await cordees.events("offer.opened.v1")) == 1


async def test_the_tete_changes_and_closes_its_own_offer_only(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    other = await cordees.partner("etablissement_superieur")
    async with cordees.client() as http:
        offer = await cordees.offer(tete, http)
        url = f"/offers/{offer['id']}"
        foreign = await http.patch(
            url, json={"capacity": 5}, headers=cordees.token(other, "partner")
        )
        empty = await http.patch(url, json={}, headers=cordees.token(tete, "partner"))
        changed = await http.patch(
            url,
            json={"capacity": 5, "thematics": ["droit"], "max_distance_km": None},
            headers=cordees.token(tete, "partner"),
        )
        closed = await http.post(f"{url}/close", headers=cordees.token(tete, "partner"))
        again = await http.post(f"{url}/close", headers=cordees.token(tete, "partner"))
        after = await http.patch(url, json={"capacity": 1}, headers=cordees.token(tete, "partner"))
    assert foreign.status_code == 403
    assert empty.status_code == 422
    assert changed.status_code == 200, changed.text
    assert changed.json()["capacity"] == 5
    assert changed.json()["thematics"] == ["droit"]
    assert changed.json()["max_distance_km"] is None
    assert changed.json()["version"] == 2
    assert closed.json()["status"] == "closed"
    assert closed.json()["closed_at"] is not None
    assert again.status_code == after.status_code == 409
    types = [kind.split(".")[-2] for kind, _ in await cordees.events()]
    assert types == ["opened", "updated", "closed"]


async def test_capacity_never_goes_below_the_encordes(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    schools = [await cordees.partner("college") for _ in range(2)]
    async with cordees.client() as http:
        offer = await cordees.offer(tete, http, capacity=3)
        for school in schools:
            match = await cordees.request(school, http)
            accepted = await http.post(
                f"/match-requests/{match['id']}/accept", headers=cordees.token(tete, "partner")
            )
            assert accepted.status_code == 200, accepted.text
        below = await http.patch(
            f"/offers/{offer['id']}", json={"capacity": 1}, headers=cordees.token(tete, "partner")
        )
        exact = await http.patch(
            f"/offers/{offer['id']}", json={"capacity": 2}, headers=cordees.token(tete, "partner")
        )
    assert below.status_code == 409
    assert below.json()["code"] == "capacity_below_encordes"
    assert below.json()["encordes"] == 2
    assert exact.status_code == 200
    assert exact.json()["remaining"] == 0


async def test_offers_are_listed_with_filters_and_a_cursor(cordees: Cordees) -> None:
    efrei = await cordees.partner("etablissement_superieur")
    upec = await cordees.partner("etablissement_superieur")
    reader = cordees.token(None, "officer")
    async with cordees.client() as http:
        made = [await cordees.offer(efrei, http, thematics=["sciences"]) for _ in range(3)]
        made.append(await cordees.offer(upec, http, thematics=["droit"], levels=["2nde"]))
        pages, cursor = [], None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/offers", params=params, headers=reader)).json()
            pages.append([offer["id"] for offer in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        by_tete = await http.get("/offers", params={"tete_partner_id": str(upec)}, headers=reader)
        by_thematic = await http.get("/offers", params={"thematic": "sciences"}, headers=reader)
        by_level = await http.get("/offers", params={"level": "2nde"}, headers=reader)
        bad_cursor = await http.get("/offers", params={"cursor": "nope"}, headers=reader)
    assert pages == [[made[0]["id"], made[1]["id"]], [made[2]["id"], made[3]["id"]]]
    assert [o["id"] for o in by_tete.json()["items"]] == [made[3]["id"]]
    assert len(by_thematic.json()["items"]) == 3
    assert [o["id"] for o in by_level.json()["items"]] == [made[3]["id"]]
    assert bad_cursor.status_code == 400
