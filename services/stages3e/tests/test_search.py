"""Search: exactly the offers within the radius (against a haversine computed here), nearest
first, page after page; weeks, the school's declared weeks, reserved seats, sector and French
text without accents."""

from __future__ import annotations

import asyncio
import math
import random
import uuid

import httpx
from stages3e_world import Stages, week_ahead

from maillage.common.catalog import PartnerUpdated, PartnerVerified
from maillage.stages3e.api import OfferPage, RecentPartners

# earthdistance's sphere: earth() is 6,378,168 m.
EARTH_RADIUS_M = 6_378_168.0


def assert_written_as_the_model(answer: httpx.Response) -> None:
    """The page is written from dicts (``api._OFFER_PAGE_JSON``), not from an ``OfferPage``:
    the same bytes as the model writes, its fields in its order, nothing else."""
    assert answer.headers["content-type"] == "application/json"
    page = OfferPage.model_validate_json(answer.content)
    assert answer.content == page.model_dump_json().encode()


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


async def test_search_by_distance_returns_exactly_the_offers_within_the_radius_nearest_first(
    stages: Stages,
) -> None:
    rng = random.Random(94)
    host = await stages.partner()
    school = await stages.school(latitude=48.7465, longitude=2.3920)  # Orly
    week = str(week_ahead())
    places = [
        (48.7465 + rng.uniform(-0.15, 0.15), 2.3920 + rng.uniform(-0.22, 0.22)) for _ in range(40)
    ]
    async with stages.client() as http:
        ids = {}
        for latitude, longitude in places:
            offer = await stages.offer(
                host,
                http,
                latitude=latitude,
                longitude=longitude,
                weeks=[{"week": week, "seats": 1}],
            )
            ids[offer["id"]] = haversine_m(48.7465, 2.3920, latitude, longitude)
        found: list[dict] = []
        cursor = None
        while True:
            params: dict[str, object] = {"radius_km": 12, "limit": 7}
            if cursor:
                params["cursor"] = cursor
            page = await http.get("/offers", params=params, headers=stages.school_token(school))
            assert page.status_code == 200, page.text
            assert_written_as_the_model(page)
            found += page.json()["items"]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
    expected = {i for i, d in ids.items() if d <= 12_000}
    assert 5 < len(expected) < 40
    borderline = {i for i, d in ids.items() if abs(d - 12_000) < 1}
    assert {o["id"] for o in found} - borderline == expected - borderline
    distances = [o["distance_km"] for o in found]
    assert distances == sorted(distances)
    for offer in found:
        assert abs(offer["distance_km"] * 1000 - ids[offer["id"]]) < 1  # metres


async def test_search_by_week_text_sector_and_reserved_seats(stages: Stages) -> None:
    host = await stages.partner()
    ordinary = await stages.school()
    rep = await stages.school("REP")
    first, second = week_ahead(8), week_ahead(10)
    near = {"latitude": 48.75, "longitude": 2.39}
    async with stages.client() as http:
        electricity = await stages.offer(
            host, http, title="Électricité générale", sector="H", **near,
            weeks=[{"week": str(first), "seats": 2}],
        )  # fmt: skip
        reserved = await stages.offer(
            host, http, title="Boulangerie", sector="K", **near,
            weeks=[{"week": str(second), "seats": 1, "reserved": 1}],
        )  # fmt: skip

        async def ids(headers: dict[str, str], **params: object) -> list[str]:
            answer = await http.get("/offers", params=params, headers=headers)
            assert answer.status_code == 200, answer.text
            assert_written_as_the_model(answer)
            return [o["id"] for o in answer.json()["items"]]

        school, eligible = stages.school_token(ordinary), stages.school_token(rep)
        assert await ids(school, q="electricite") == [electricity["id"]]
        assert await ids(school, q="ÉLECTRI") == [electricity["id"]]
        assert await ids(school, sector="K") == []  # reserved: not for an ordinary collège
        assert await ids(eligible, sector="K") == [reserved["id"]]
        assert await ids(eligible, week=str(first)) == [electricity["id"]]
        assert sorted(await ids(eligible)) == sorted([electricity["id"], reserved["id"]])
        # Declared weeks become the default.
        declared = await http.put(
            "/schools/me/weeks", json={"weeks": [str(second)]}, headers=eligible
        )
        assert declared.json() == {"weeks": [str(second)]}
        assert await ids(eligible) == [reserved["id"]]
        refused = await http.get("/offers", params={"cursor": "nonsense"}, headers=school)
        assert refused.status_code == 400
        assert refused.json()["code"] == "invalid_cursor"
        nul = await http.get("/offers", params={"q": "ab\x00c"}, headers=school)
        assert nul.status_code == 422  # PostgreSQL stores no NUL: refused, never a 500
        far = await http.get("/offers", params={"radius_km": 101}, headers=school)
        assert far.status_code == 422
        nowhere = await http.get("/offers", headers=stages.host_token(host))
        assert nowhere.status_code == 200  # the host's own place


async def test_a_search_reads_the_callers_record_again_once_it_is_search_partner_seconds_old(
    stages: Stages,
) -> None:
    """The caller's record is reused for ``search_partner_seconds`` (here 0.5 s): a collège that
    leaves REP stops seeing reserved seats after that; a partner not known yet is never
    remembered as unknown, so it is seen as soon as its event arrives."""
    stages.app.state.recent_partners = RecentPartners(0.5)
    orly = {"latitude": 48.7465, "longitude": 2.3920}
    host = await stages.partner()
    college = await stages.school("REP")
    newcomer = uuid.uuid4()
    async with stages.client() as http:
        reserved = await stages.offer(
            host, http, **orly, weeks=[{"week": str(week_ahead()), "seats": 1, "reserved": 1}]
        )

        async def ids(school: uuid.UUID) -> list[str]:
            answer = await http.get("/offers", params=orly, headers=stages.school_token(school))
            assert answer.status_code == 200, answer.text
            assert_written_as_the_model(answer)
            return [o["id"] for o in answer.json()["items"]]

        assert await ids(college) == [reserved["id"]]
        facts = {"kind": "college", "legal_name": "Collège", "status": "verified", **orly}
        await stages.apply_event(
            PartnerUpdated(partner_id=college, version=2, education_prioritaire=None, **facts)
        )
        await asyncio.sleep(0.6)
        assert await ids(college) == []  # no longer eligible: the reserved seat is not its
        assert await ids(newcomer) == []  # unknown: no eligibility
        await stages.apply_event(
            PartnerVerified(partner_id=newcomer, version=1, education_prioritaire="REP+", **facts)
        )
        assert await ids(newcomer) == [reserved["id"]]
