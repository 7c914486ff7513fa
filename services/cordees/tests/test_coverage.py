"""Coverage of the national objective on a small known set of reference collèges, some never
registered; pairings that end."""

from __future__ import annotations

import asyncio
import uuid

from cordees_world import Cordees, school_year

from maillage.common.catalog import SchoolReferenced
from maillage.cordees import matcher


async def pair(cordees: Cordees, http: object, tete: uuid.UUID, school: uuid.UUID) -> str:
    match = await cordees.request(school, http)  # type: ignore[arg-type]
    accepted = await http.post(  # type: ignore[attr-defined]
        f"/match-requests/{match['id']}/accept", headers=cordees.token(tete, "partner")
    )
    assert accepted.status_code == 200, accepted.text
    pairing_id: str = accepted.json()["id"]
    return pairing_id


async def test_coverage_counts_every_rep_plus_and_rep_college_of_the_reference_by_scope(
    cordees: Cordees,
) -> None:
    tete = await cordees.partner("etablissement_superieur")
    # The reference in the Val-de-Marne: 4 REP+ collèges (two never registered), 2 REP ones.
    rep_plus = [
        await cordees.reference_college("REP+", name=f"REP+ {i}", commune_name=f"Commune {i}")
        for i in range(4)
    ]
    rep = [await cordees.reference_college("REP", name=f"REP {i}") for i in range(2)]
    await cordees.reference_college(None, name="Hors EP")  # not counted
    await cordees.reference_college("REP", name="Lycée", school_type="Lycée")  # not counted
    paris = await cordees.reference_college("REP+", name="Paris", departement="75")
    # Who registered in Maillage, under the reference's UAI; a registration without reference
    # row is not counted (the reference says which collèges are REP+, not the registration).
    registered = {
        code: await cordees.partner(
            "college", name=f"Partenaire {code}", school_uai=code, education_prioritaire="REP+"
        )
        for code in (rep_plus[0], rep_plus[1], rep_plus[2], rep[0])
    }
    registered[paris] = await cordees.partner(
        "college", departement="75", school_uai=paris, latitude=48.85, longitude=2.35
    )
    await cordees.partner("college", name="Hors référence", education_prioritaire="REP+")
    rejected = await cordees.partner("college", school_uai=rep_plus[3], status="rejected")
    async with cordees.client() as http:
        await cordees.offer(tete, http, capacity=10, max_distance_km=50)
        await pair(cordees, http, tete, registered[rep_plus[0]])
        await pair(cordees, http, tete, registered[rep_plus[1]])
        ended = await pair(cordees, http, tete, registered[rep[0]])
        await http.post(
            f"/pairings/{ended}/end",
            headers=cordees.token(registered[rep[0]], "partner", "school"),
        )
        await pair(cordees, http, tete, registered[paris])
        reader = cordees.token(tete, "partner")
        val_de_marne = (await http.get("/coverage?departement=94", headers=reader)).json()
        creteil = (await http.get("/coverage?academie=24", headers=reader)).json()
        national = (await http.get("/coverage", headers=reader)).json()
        next_year = (
            await http.get(f"/coverage?school_year={school_year(1)}", headers=reader)
        ).json()
        anonymous = await http.get("/coverage")
        bad = await http.get("/coverage?departement=99", headers=reader)
    assert val_de_marne["rep_plus"] == {"colleges": 4, "encordes": 2, "share": 0.5}
    assert val_de_marne["rep"] == {"colleges": 2, "encordes": 0, "share": 0.0}
    assert val_de_marne["uncovered_rep_plus"] == [
        {
            "uai": rep_plus[2],
            "name": "REP+ 2",
            "commune_code": "94054",
            "commune_name": "Commune 2",
            "registered": True,
            "partner_id": str(registered[rep_plus[2]]),
        },
        {  # its registration was rejected: not registered
            "uai": rep_plus[3],
            "name": "REP+ 3",
            "commune_code": "94054",
            "commune_name": "Commune 3",
            "registered": False,
            "partner_id": None,
        },
    ]
    assert rejected not in registered.values()
    assert val_de_marne["objective_code"] == "rep_plus"
    assert val_de_marne["objective"] == "chaque collège REP+ : encore 2 à encorder"
    assert creteil["rep_plus"] == val_de_marne["rep_plus"]  # 94 is in the académie de Créteil
    assert creteil["scope"] == {"departement": None, "academie": "24"}
    assert national["rep_plus"] == {"colleges": 5, "encordes": 3, "share": 0.6}
    assert national["rep"] == val_de_marne["rep"]
    assert next_year["rep_plus"]["encordes"] == 0
    assert anonymous.status_code == 401
    assert bad.status_code == 422


async def test_the_objective_moves_to_rep_once_every_rep_plus_is_encorde(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    rep_plus = await cordees.reference_college("REP+")
    rep = await cordees.reference_college("REP")
    school = await cordees.partner("college", school_uai=rep_plus, education_prioritaire="REP+")
    await cordees.partner("college", school_uai=rep, education_prioritaire="REP")
    async with cordees.client() as http:
        empty = (await http.get("/coverage?departement=93", headers=cordees.operator())).json()
        await cordees.offer(tete, http)
        await pair(cordees, http, tete, school)
        report = (await http.get("/coverage?departement=94", headers=cordees.operator())).json()
    assert empty["rep_plus"] == {"colleges": 0, "encordes": 0, "share": None}
    assert empty["objective_code"] == "no_reference"
    assert "aucun collège REP+ ou REP" in empty["objective"]
    assert report["uncovered_rep_plus"] == []
    assert report["objective_code"] == "rep"
    assert report["objective"] == "chaque collège REP+ est encordé ; ensuite, chaque collège REP"


async def test_only_a_newer_version_of_a_reference_school_applies(cordees: Cordees) -> None:
    code = await cordees.reference_college("REP", name="Collège Jean Moulin")
    facts = {"uai": code, "type": "Collège", "departement": "94", "academie": "24"}
    moved = SchoolReferenced(
        **facts, name="Collège Jean Moulin", education_prioritaire="REP+", version=2
    )
    stale = SchoolReferenced(**facts, name="stale", education_prioritaire="REP", version=1)
    await cordees.apply(moved)
    await cordees.apply(stale)
    async with cordees.client() as http:
        report = (await http.get("/coverage?departement=94", headers=cordees.operator())).json()
    assert report["rep_plus"]["colleges"] == 1
    assert report["rep"]["colleges"] == 0
    [school] = report["uncovered_rep_plus"]
    assert (school["uai"], school["name"], school["registered"]) == (
        code,
        "Collège Jean Moulin",
        False,
    )


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


async def test_the_service_ends_the_pairings_of_a_finished_school_year_by_itself(
    cordees: Cordees,
) -> None:
    steps = [getattr(w, "step", None) for w in cordees.app.state.runtime.workers]
    assert matcher._end_school_years in steps
    assert matcher.expire_proposals in steps
    tete = await cordees.partner("etablissement_superieur")
    school = await cordees.partner("college")
    async with cordees.client() as http:
        await cordees.offer(tete, http, capacity=1)
        pairing_id = await pair(cordees, http, tete, school)
    async with cordees.pool.acquire() as connection:
        await connection.execute(
            "UPDATE pairings SET school_year = '2001-2002' WHERE id = $1", uuid.UUID(pairing_id)
        )
    worker = matcher.school_year_end(cordees.pool, interval=0.05)
    running = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            status = await cordees.pool.fetchval(
                "SELECT status FROM pairings WHERE id = $1", uuid.UUID(pairing_id)
            )
            if status == "ended":
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 5)
    assert status == "ended"
    [(_, payload)] = await cordees.events("pairing.ended.v1")
    assert (payload["pairing_id"], payload["reason"]) == (pairing_id, "school_year_end")
