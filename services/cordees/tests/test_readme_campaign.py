"""The README's campaign answer is what the demo's cordées really give: the demo's offers and
requests (``maillage.cli.demo``, the schools' places from the shipped Val-de-Marne annuaire
sample) go through the use cases, then a dry-run campaign over the département; its summary must
be the one the README shows (the solve time aside). Rolled back: nothing stays."""

from __future__ import annotations

import csv
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cordees_world import Cordees, school_year

from maillage.cli import demo
from maillage.common.auth import Caller
from maillage.cordees import store, usecases

ROOT = Path(__file__).resolve().parents[3]
ANNUAIRE = ROOT / "services/registry/src/maillage/registry/data/annuaire-education-demo-94.csv"


class Rollback(Exception):
    pass


def readme_campaign() -> dict[str, object]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index("The campaign answers") :]
    block = re.search(r"```json\n(.*?)```", after, re.S)
    assert block is not None
    answer: dict[str, object] = json.loads(block.group(1))
    return answer


def annuaire() -> dict[str, dict[str, str]]:
    with ANNUAIRE.open(encoding="utf-8") as lines:
        next(lines)  # the sample's notice
        return {
            row["identifiant_de_l_etablissement"]: row
            for row in csv.DictReader(lines, delimiter=";")
        }


async def test_the_readme_shows_what_the_demo_campaign_answers(cordees: Cordees) -> None:
    now = datetime.now(UTC)
    year = school_year()
    schools = annuaire()
    by_siret = {p["siret"]: p for p in demo.DEMO_PARTNERS if p.get("siret")}
    async with cordees.pool.acquire() as connection:
        try:
            async with connection.transaction():
                for siret, offer in demo.CORDEE_OFFERS.items():
                    tete = uuid.uuid4()
                    facts = by_siret[siret]
                    await store.apply_partner(
                        connection,
                        {
                            "partner_id": tete,
                            "kind": facts["kind"],
                            "legal_name": facts["legal_name"],
                            "status": "verified",
                            "version": 1,
                            "departement": facts["departement"],
                            "academie": "24",
                            "latitude": facts["latitude"],
                            "longitude": facts["longitude"],
                        },
                    )
                    caller = Caller(f"t-{tete}", str(tete), frozenset({"partner"}))
                    await usecases.open_offer(
                        connection,
                        caller,
                        school_year=year,
                        capacity=offer["capacity"],
                        levels=offer["levels"],
                        thematics=offer["thematics"],
                        max_distance_km=offer.get("max_distance_km"),
                        academies=offer.get("academies", []),
                        now=now,
                    )
                for uai, wish in demo.MATCH_REQUESTS.items():
                    school = uuid.uuid4()
                    row = schools[uai]
                    await store.apply_partner(
                        connection,
                        {
                            "partner_id": school,
                            "kind": "college",
                            "legal_name": row["nom_etablissement"],
                            "status": "verified",
                            "version": 1,
                            "uai": uai,
                            "departement": "94",
                            "academie": "24",
                            "latitude": float(row["latitude"]),
                            "longitude": float(row["longitude"]),
                            "education_prioritaire": row["appartenance_education_prioritaire"],
                            "qpv_proximity": None,
                        },
                    )
                    caller = Caller(f"s-{school}", str(school), frozenset({"school"}))
                    await usecases.request_match(
                        connection,
                        caller,
                        school_year=year,
                        thematics=wish["thematics"],
                        max_distance_km=wish.get("max_distance_km"),
                        now=now,
                    )
                operator = Caller("operator", None, frozenset({"operator"}))
                campaign = await usecases.run_campaign(
                    connection, operator, departement="94", academie=None, dry_run=True, now=now
                )
                raise Rollback(campaign)
        except Rollback as rolled_back:
            [campaign] = rolled_back.args
    shown = readme_campaign()
    assert campaign["scope"] == shown["scope"]
    summary = {k: v for k, v in campaign["summary"].items() if k != "solve_ms"}
    expected = {k: v for k, v in shown["summary"].items() if k != "solve_ms"}  # type: ignore[attr-defined]
    assert summary == expected
