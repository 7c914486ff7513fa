"""The match flow over HTTP: request, explained proposal, decline, withdraw, acceptance within
capacity (even under concurrent acceptances), pairings, campaigns."""

from __future__ import annotations

import asyncio
import uuid

from cordees_world import Cordees, school_year


async def test_a_school_is_proposed_the_best_offer_with_its_explanation(cordees: Cordees) -> None:
    near = await cordees.partner("etablissement_superieur", latitude=48.79, longitude=2.40)
    far = await cordees.partner("etablissement_superieur", latitude=48.95, longitude=2.40)
    school = await cordees.partner(
        "college", latitude=48.745, longitude=2.395, education_prioritaire="REP+"
    )
    async with cordees.client() as http:
        best = await cordees.offer(near, http, thematics=["sciences", "arts"])
        second = await cordees.offer(far, http, thematics=["sciences"])
        body = {"school_year": school_year(), "thematics": ["sciences", "arts"]}
        headers = cordees.token(school, "partner", "school")
        answer = await http.post("/match-requests", json=body, headers=headers)
        status = await http.get(answer.headers["Location"], headers=headers)
    assert answer.status_code == 202
    match = status.json()
    assert match == answer.json()
    assert match["status"] == "proposed"
    assert match["priority_class"] == "REP+"
    assert match["offer_id"] == best["id"]
    proposal = match["proposal"]
    explanation = proposal["explanation"]
    assert proposal["rank"] == 1
    assert explanation["offer_id"] == best["id"]
    assert explanation["tete_partner_id"] == str(near)
    assert 4 < explanation["distance_km"] < 6
    assert explanation["remaining_capacity"] == 2
    assert explanation["priority_class"] == "REP+"
    assert explanation["thematics_covered"] == ["arts", "sciences"]
    assert explanation["reasons"][0] == "collège REP+ (priorité nationale)"
    assert explanation["reasons"][1].startswith("à 5,")
    assert "2 des 2 thématiques souhaitées" in explanation["reasons"][2]
    assert explanation["reasons"][3] == "2 places restantes"
    assert proposal["reason"] == "request_filed"
    assert proposal["expires_at"] is not None
    assert sum(part["points"] for part in explanation["parts"]) == explanation["score"]
    assert {part["name"] for part in explanation["parts"]} == {
        "priority",
        "distance",
        "thematics",
        "capacity",
    }
    [alternative] = proposal["alternatives"]
    assert alternative["offer_id"] == second["id"]
    assert alternative["score"] < explanation["score"]
    types = [kind.split(".")[-2] for kind, _ in await cordees.events() if "match" in kind]
    assert types[-2:] == ["requested", "proposed"]
    _, proposed = (await cordees.events("match-request.proposed.v1"))[-1]
    assert proposed["offer_id"] == best["id"]
    assert proposed["rank"] == 1
    assert proposed["score"] == explanation["score"]


async def test_decline_proposes_the_next_candidate_and_never_the_declined_offer_again(
    cordees: Cordees,
) -> None:
    first = await cordees.partner("etablissement_superieur", latitude=48.79, longitude=2.40)
    second = await cordees.partner("etablissement_superieur", latitude=48.85, longitude=2.40)
    school = await cordees.partner("college", latitude=48.78, longitude=2.40)
    async with cordees.client() as http:
        offer_1 = await cordees.offer(first, http)
        offer_2 = await cordees.offer(second, http)
        match = await cordees.request(school, http)
        assert match["offer_id"] == offer_1["id"]
        url = f"/match-requests/{match['id']}"
        wrong = await http.post(f"{url}/decline", headers=cordees.token(second, "partner"))
        declined = await http.post(f"{url}/decline", headers=cordees.token(first, "partner"))
        twice = await http.post(f"{url}/decline", headers=cordees.token(first, "partner"))
        last = await http.post(f"{url}/decline", headers=cordees.token(second, "partner"))
        # a new offer of the first tête: its place goes at once to the waiting request
        await cordees.offer(first, http, capacity=1)
        after = await http.get(url, headers=cordees.token(school, "partner", "school"))
        campaign = await http.post("/campaigns", json={}, headers=cordees.operator())
    assert wrong.status_code == 403
    assert declined.status_code == 200, declined.text
    assert declined.json()["offer_id"] == offer_2["id"]
    assert declined.json()["proposal"]["rank"] == 2
    assert declined.json()["proposal"]["reason"] == "declined"
    assert declined.json()["declined_offer_ids"] == [offer_1["id"]]
    # proposed to the first tête once, then moved on: 409, not 403
    assert (twice.status_code, twice.json()["code"]) == (409, "proposal_moved")
    assert twice.json()["request_status"] == "proposed"
    assert last.json()["status"] == "unmatched"
    assert set(last.json()["declined_offer_ids"]) == {offer_1["id"], offer_2["id"]}
    assert after.json()["status"] == "proposed"
    assert after.json()["offer_id"] not in (offer_1["id"], offer_2["id"])
    assert after.json()["proposal"]["reason"] == "offer_opened"
    # the live flow is up to date: the campaign shows the optimum and changes nothing
    summary = campaign.json()["summary"]
    assert (summary["requests"], summary["proposed"], summary["changes"]) == (1, 1, 0)
    events = [kind.split(".")[-2] for kind, _ in await cordees.events() if "match" in kind]
    assert events == [
        "requested",
        "proposed",
        "declined",
        "proposed",
        "declined",
        "unmatched",
        "proposed",
    ]


async def test_accept_establishes_a_pairing_both_sides_see(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    school = await cordees.partner("college")
    stranger = await cordees.partner("college")
    async with cordees.client() as http:
        offer = await cordees.offer(tete, http, capacity=1)
        match = await cordees.request(school, http)
        by_school = await http.post(
            f"/match-requests/{match['id']}/accept",
            headers=cordees.token(school, "partner", "school"),
        )
        accepted = await http.post(
            f"/match-requests/{match['id']}/accept", headers=cordees.token(tete, "partner")
        )
        pairing = accepted.json()
        seen = {
            who: await http.get(f"/pairings/{pairing['id']}", headers=headers)
            for who, headers in (
                ("tete", cordees.token(tete, "partner")),
                ("school", cordees.token(school, "partner", "school")),
                ("stranger", cordees.token(stranger, "partner", "school")),
                ("operator", cordees.operator()),
            )
        }
        listed = await http.get("/pairings", headers=cordees.token(school, "partner", "school"))
        not_listed = await http.get(
            "/pairings", headers=cordees.token(stranger, "partner", "school")
        )
        full = await http.get(f"/offers/{offer['id']}", headers=cordees.operator())
        request = await http.get(
            f"/match-requests/{match['id']}", headers=cordees.token(tete, "partner")
        )
    assert by_school.status_code == 403
    assert accepted.status_code == 200, accepted.text
    assert pairing["status"] == "active"
    assert (pairing["offer_id"], pairing["school_partner_id"]) == (offer["id"], str(school))
    assert {who: answer.status_code for who, answer in seen.items()} == {
        "tete": 200,
        "school": 200,
        "stranger": 403,
        "operator": 200,
    }
    assert [p["id"] for p in listed.json()["items"]] == [pairing["id"]]
    assert not_listed.json()["items"] == []
    assert full.json()["remaining"] == 0
    assert request.json()["status"] == "established"
    [(_, event)] = await cordees.events("pairing.established.v1")
    assert event["pairing_id"] == pairing["id"]
    assert event["tete_partner_id"] == str(tete)


async def test_capacity_is_never_exceeded_by_concurrent_acceptances(cordees: Cordees) -> None:
    """Ten schools ask for the same offer of three places: three are proposed it (a proposal
    holds a place), seven wait. The tête accepts all ten at once: exactly three pairings, and
    the seven it was never proposed are refused (403)."""
    tete = await cordees.partner("etablissement_superieur")
    schools = [await cordees.partner("college") for _ in range(10)]
    headers = cordees.token(tete, "partner")
    async with cordees.client() as http:
        offer = await cordees.offer(tete, http, capacity=3)
        matches = [await cordees.request(school, http) for school in schools]
        assert sorted(m["status"] for m in matches) == ["proposed"] * 3 + ["unmatched"] * 7
        answers = await asyncio.gather(
            *(http.post(f"/match-requests/{m['id']}/accept", headers=headers) for m in matches)
        )
        statuses = sorted(answer.status_code for answer in answers)
        after = [
            (await http.get(f"/match-requests/{m['id']}", headers=cordees.operator())).json()
            for m in matches
        ]
    assert statuses == [200] * 3 + [403] * 7, [a.text for a in answers if a.status_code != 200]
    async with cordees.pool.acquire() as connection:
        active = await connection.fetchval(
            "SELECT count(*) FROM pairings WHERE offer_id = $1 AND status = 'active'",
            uuid.UUID(offer["id"]),
        )
    assert active == 3
    assert sorted(m["status"] for m in after) == ["established"] * 3 + ["unmatched"] * 7
    assert len(await cordees.events("pairing.established.v1")) == 3


async def test_the_school_withdraws_its_request(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    school = await cordees.partner("college")
    other = await cordees.partner("college")
    async with cordees.client() as http:
        await cordees.offer(tete, http)
        match = await cordees.request(school, http)
        url = f"/match-requests/{match['id']}"
        foreign = await http.post(
            f"{url}/withdraw", headers=cordees.token(other, "partner", "school")
        )
        withdrawn = await http.post(
            f"{url}/withdraw", headers=cordees.token(school, "partner", "school")
        )
        again = await http.post(
            f"{url}/withdraw", headers=cordees.token(school, "partner", "school")
        )
        late = await http.post(f"{url}/accept", headers=cordees.token(tete, "partner"))
    assert foreign.status_code == 403
    assert withdrawn.status_code == 200
    assert withdrawn.json()["status"] == "withdrawn"
    assert withdrawn.json()["proposal"] is None
    assert again.status_code == 409
    assert (late.status_code, late.json()["code"]) == (409, "not_proposed")  # was proposed
    [(_, event)] = await cordees.events("match-request.withdrawn.v1")
    assert event["tete_partner_id"] == str(tete)


async def test_only_verified_schools_request_and_each_sees_only_its_own(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    school = await cordees.partner("college")
    other = await cordees.partner("lycee")
    pending = await cordees.partner("college", status="pending")
    body = {"school_year": school_year()}
    async with cordees.client() as http:
        await cordees.offer(tete, http, levels=["3e", "2nde"])
        mine = await cordees.request(school, http)
        theirs = await cordees.request(other, http)
        as_tete = await http.post(
            "/match-requests", json=body, headers=cordees.token(tete, "partner")
        )
        as_pending = await http.post(
            "/match-requests", json=body, headers=cordees.token(pending, "partner", "school")
        )
        as_operator = await http.post("/match-requests", json=body, headers=cordees.operator())
        peek = await http.get(
            f"/match-requests/{theirs['id']}", headers=cordees.token(school, "partner", "school")
        )
        listed = await http.get(
            "/match-requests", headers=cordees.token(school, "partner", "school")
        )
        tete_list = await http.get("/match-requests", headers=cordees.token(tete, "partner"))
    assert as_tete.status_code == as_pending.status_code == as_operator.status_code == 403
    assert peek.status_code == 403
    assert [m["id"] for m in listed.json()["items"]] == [mine["id"]]
    assert {m["id"] for m in tete_list.json()["items"]} == {mine["id"], theirs["id"]}


async def test_an_offer_opening_serves_rep_plus_before_rep_and_campaigns_show_the_optimum(
    cordees: Cordees,
) -> None:
    """Requests no offer could take wait; an offer opens with two places: the live flow proposes
    them at once to the REP+ collège and one REP collège. A campaign over the Val-de-Marne then
    shows that optimum and changes nothing; when a proposal went missing (written around the
    flow), its dry run shows the move and the real run applies it."""
    rep = [await cordees.partner("college", education_prioritaire="REP") for _ in range(2)]
    rep_plus = await cordees.partner("college", education_prioritaire="REP+")
    paris = await cordees.partner(
        "college", departement="75", education_prioritaire="REP+", latitude=48.85, longitude=2.35
    )
    tete = await cordees.partner("etablissement_superieur")

    async def status_of(http: object, match: dict[str, object]) -> dict[str, object]:
        answer = await http.get(f"/match-requests/{match['id']}", headers=cordees.operator())  # type: ignore[attr-defined]
        return answer.json()  # type: ignore[no-any-return]

    async with cordees.client() as http:
        waiting = {
            school: await cordees.request(school, http) for school in [*rep, rep_plus, paris]
        }
        assert {m["status"] for m in waiting.values()} == {"unmatched"}
        offer = await cordees.offer(tete, http, capacity=2, max_distance_km=5)
        after = {school: await status_of(http, m) for school, m in waiting.items()}
        forbidden = await http.post(
            "/campaigns", json={"departement": "94"}, headers=cordees.token(tete, "partner")
        )
        both = await http.post(
            "/campaigns", json={"departement": "94", "academie": "24"}, headers=cordees.operator()
        )
        campaign = await http.post(
            "/campaigns", json={"departement": "94"}, headers=cordees.operator()
        )
        stored = await http.get(f"/campaigns/{campaign.json()['id']}", headers=cordees.operator())
        await cordees.pool.execute(
            "UPDATE match_requests SET status = 'unmatched', offer_id = NULL, proposal = NULL"
            " WHERE id = $1",
            uuid.UUID(str(waiting[rep_plus]["id"])),
        )
        dry = await http.post(
            "/campaigns", json={"departement": "94", "dry_run": True}, headers=cordees.operator()
        )
        unchanged = await status_of(http, waiting[rep_plus])
        applied = await http.post(
            "/campaigns", json={"departement": "94"}, headers=cordees.operator()
        )
        repaired = await status_of(http, waiting[rep_plus])
    assert after[rep_plus]["status"] == "proposed"
    assert after[rep_plus]["offer_id"] == offer["id"]
    assert after[rep_plus]["proposal"]["reason"] == "offer_opened"
    assert sorted(after[school]["status"] for school in rep) == ["proposed", "unmatched"]
    assert after[paris]["status"] == "unmatched"  # out of the offer's 5 km (7.6 km away)
    assert forbidden.status_code == 403
    assert both.status_code == 422
    assert campaign.status_code == 201, campaign.text
    assert stored.json() == campaign.json()
    summary = campaign.json()["summary"]
    assert summary["requests"] == 3
    assert summary["proposed"] == 2
    assert summary["coverage"]["REP+"] == {"requested": 1, "served": 1}
    assert summary["coverage"]["REP"] == {"requested": 2, "served": 1}
    assert summary["total_distance_km"] == 0  # every school stands at the tête's door here
    assert (summary["changes"], summary["moves"], summary["dry_run"]) == (0, [], False)
    assert dry.json()["summary"]["dry_run"] is True
    assert dry.json()["summary"]["moves"] == [
        {
            "request_id": waiting[rep_plus]["id"],
            "priority_class": "REP+",
            "from_offer_id": None,
            "to_offer_id": offer["id"],
        }
    ]
    assert unchanged["status"] == "unmatched"
    assert applied.json()["summary"]["changes"] == 1
    assert repaired["status"] == "proposed"
    assert repaired["proposal"]["campaign_id"] == applied.json()["id"]
    assert repaired["proposal"]["reason"] == "campaign"


async def test_a_school_takes_one_place_of_an_offer_whatever_its_requests(
    cordees: Cordees,
) -> None:
    tete = await cordees.partner("etablissement_superieur")
    school = await cordees.partner("college")
    async with cordees.client() as http:
        offer = await cordees.offer(tete, http, capacity=3)
        first = await cordees.request(school, http)
        accepted = await http.post(
            f"/match-requests/{first['id']}/accept", headers=cordees.token(tete, "partner")
        )
        second = await cordees.request(school, http)  # the only offer is its own already
        # Proposed the same offer anyway (as a campaign could): the acceptance refuses.
        async with cordees.pool.acquire() as connection:
            await connection.execute(
                """
                UPDATE match_requests SET status = 'proposed', offer_id = $2,
                       proposal = (SELECT proposal FROM match_requests WHERE id = $3)
                 WHERE id = $1
                """,
                uuid.UUID(second["id"]),
                uuid.UUID(offer["id"]),
                uuid.UUID(first["id"]),
            )
        again = await http.post(
            f"/match-requests/{second['id']}/accept", headers=cordees.token(tete, "partner")
        )
    assert accepted.status_code == 200
    assert second["status"] == "unmatched"  # never proposed an offer it is encordé with
    assert (again.status_code, again.json()["code"]) == (409, "already_encorde")
