"""Coverage of the national objective on a small known set; pairings that end."""

from __future__ import annotations

import uuid

from cordees_world import Cordees, school_year


async def pair(cordees: Cordees, http: object, tete: uuid.UUID, school: uuid.UUID) -> str:
    match = await cordees.request(school, http)  # type: ignore[arg-type]
    accepted = await http.post(  # type: ignore[attr-defined]
        f"/match-requests/{match['id']}/accept", headers=cordees.token(tete, "partner")
    )
    assert accepted.status_code == 200, accepted.text
    pairing_id: str = accepted.json()["id"]
    return pairing_id


async def test_coverage_counts_encordes_rep_plus_and_rep_colleges_by_scope(
    cordees: Cordees,
) -> None:
    tete = await cordees.partner("etablissement_superieur")
    rep_plus = [
        await cordees.partner("college", name=f"REP+ {i}", education_prioritaire="REP+")
        for i in range(3)
    ]
    rep = [
        await cordees.partner("college", name=f"REP {i}", education_prioritaire="REP")
        for i in range(2)
    ]
    await cordees.partner("college", name="Hors EP")  # not counted
    await cordees.partner("lycee", education_prioritaire="REP")  # lycées are not counted
    paris = await cordees.partner(
        "college", departement="75", education_prioritaire="REP+", latitude=48.85, longitude=2.35
    )
    async with cordees.client() as http:
        await cordees.offer(tete, http, capacity=10, max_distance_km=50)
        await pair(cordees, http, tete, rep_plus[0])
        await pair(cordees, http, tete, rep_plus[1])
        ended = await pair(cordees, http, tete, rep[0])
        await http.post(
            f"/pairings/{ended}/end", headers=cordees.token(rep[0], "partner", "school")
        )
        await pair(cordees, http, tete, paris)
        reader = cordees.token(tete, "partner")
        val_de_marne = (await http.get("/coverage?departement=94", headers=reader)).json()
        creteil = (await http.get("/coverage?academie=24", headers=reader)).json()
        national = (await http.get("/coverage", headers=reader)).json()
        next_year = (
            await http.get(f"/coverage?school_year={school_year(1)}", headers=reader)
        ).json()
        anonymous = await http.get("/coverage")
    assert val_de_marne["rep_plus"] == {"colleges": 3, "encordes": 2, "share": 0.6667}
    assert val_de_marne["rep"] == {"colleges": 2, "encordes": 0, "share": 0.0}
    [uncovered] = val_de_marne["uncovered_rep_plus"]
    assert uncovered["partner_id"] == str(rep_plus[2])
    assert uncovered["name"] == "REP+ 2"
    assert uncovered["uai"].startswith("094")
    assert "1 still to encorder" in val_de_marne["objective"]
    assert creteil["rep_plus"] == val_de_marne["rep_plus"]  # 94 is in the académie de Créteil
    assert national["rep_plus"] == {"colleges": 4, "encordes": 3, "share": 0.75}
    assert next_year["rep_plus"]["encordes"] == 0
    assert anonymous.status_code == 401


async def test_the_objective_moves_to_rep_once_every_rep_plus_is_encorde(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    rep_plus = await cordees.partner("college", education_prioritaire="REP+")
    await cordees.partner("college", education_prioritaire="REP")
    async with cordees.client() as http:
        empty = (await http.get("/coverage?departement=93", headers=cordees.operator())).json()
        await cordees.offer(tete, http)
        await pair(cordees, http, tete, rep_plus)
        report = (await http.get("/coverage?departement=94", headers=cordees.operator())).json()
    assert empty["rep_plus"] == {"colleges": 0, "encordes": 0, "share": None}
    assert report["uncovered_rep_plus"] == []
    assert report["objective"] == "every REP+ collège is encordé; next, every REP collège"


async def test_either_side_ends_a_pairing_and_finished_school_years_end(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    schools = [await cordees.partner("college") for _ in range(3)]
    stranger = await cordees.partner("college")
    async with cordees.client() as http:
        offer = await cordees.offer(tete, http, capacity=3)
        by_school, by_tete, old = [await pair(cordees, http, tete, s) for s in schools]
        foreign = await http.post(
            f"/pairings/{by_school}/end", headers=cordees.token(stranger, "partner", "school")
        )
        school_ends = await http.post(
            f"/pairings/{by_school}/end", headers=cordees.token(schools[0], "partner", "school")
        )
        tete_ends = await http.post(
            f"/pairings/{by_tete}/end", headers=cordees.token(tete, "partner")
        )
        twice = await http.post(f"/pairings/{by_tete}/end", headers=cordees.token(tete, "partner"))
        # time passes: the last pairing's school year is over
        async with cordees.pool.acquire() as connection:
            await connection.execute(
                "UPDATE pairings SET school_year = '2001-2002' WHERE id = $1", uuid.UUID(old)
            )
        not_operator = await http.post(
            "/pairings/end-of-school-year", headers=cordees.token(tete, "partner")
        )
        year_end = await http.post("/pairings/end-of-school-year", headers=cordees.operator())
        repeated = await http.post("/pairings/end-of-school-year", headers=cordees.operator())
        freed = await http.get(f"/offers/{offer['id']}", headers=cordees.operator())
        listed = await http.get("/pairings?status=ended", headers=cordees.operator())
    assert foreign.status_code == 403
    assert (school_ends.json()["status"], school_ends.json()["end_reason"]) == (
        "ended",
        "school_request",
    )
    assert tete_ends.json()["end_reason"] == "tete_request"
    assert twice.status_code == 409
    assert not_operator.status_code == 403
    assert year_end.json()["ended"] == 1
    assert repeated.json()["ended"] == 0
    assert freed.json()["encordes"] == 0
    assert len(listed.json()["items"]) == 3
    reasons = [payload["reason"] for _, payload in await cordees.events("pairing.ended.v1")]
    assert reasons == ["school_request", "tete_request", "school_year_end"]
