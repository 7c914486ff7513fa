"""The open-data export (décret 2017-779): the SCDL subventions file of a year validates with
frictionless against the official Table Schema; the officers' tranches CSV lists payments."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from frictionless import Resource, Schema
from funding_world import YEAR, Funding
from stdnum.fr import siret

from maillage.funding import exports

# The official Table Schema (schema.data.gouv.fr, scdl/subventions 2.1.1) and its valid example,
# as published, copied beside this test.
SCHEMAS = Path(__file__).parent / "schemas"
SCHEMA = SCHEMAS / "scdl-subventions-2.1.1.json"


def _validate(path: Path) -> list[str]:
    descriptor = json.loads(SCHEMA.read_text(encoding="utf-8"))
    descriptor.pop("custom_checks", None)  # Validata's checks: the SIRETs are checked below
    resource = Resource(
        path=path.name, basepath=str(path.parent), schema=Schema.from_descriptor(descriptor)
    )
    report = resource.validate()
    return [error.message for task in report.tasks for error in task.errors]


def test_the_schema_accepts_its_own_example() -> None:
    assert _validate(SCHEMAS / "scdl-subventions-2.1.1-exemple-valide.csv") == []


async def test_the_scdl_export_validates_against_the_table_schema(
    funding: Funding, tmp_path: Path
) -> None:
    association = await funding.verified_partner(
        "Association Lire à Orly", siret="35600000000048", rna="W941234567"
    )
    college = await funding.verified_partner(
        "Collège Robert Desnos", "college", siret=None, rna="W940000001"
    )
    async with funding.client() as http:
        await funding.envelope(http, ae_cents=100_000_000, cp_cents=100_000_000)
        await funding.signed(http, association, [3_000_001, 3_000_000])
        await funding.signed(http, college, [1_234_567])
        await funding.draft(http, association, [5_000_000])  # not signed: not published
        response = await http.get(
            f"/exports/scdl-subventions.csv?year={YEAR}", headers=funding.partner(college)
        )
        empty = await http.get(
            f"/exports/scdl-subventions.csv?year={YEAR + 1}", headers=funding.officer()
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["montant"] for row in rows] == ["60000.01", "12345.67"]
    assert rows[0]["conditionsVersement"] == "échelonné"
    assert rows[0]["datesPeriodeVersement"] == f"{YEAR}-01-01/{YEAR + 1}-12-31"
    assert rows[0]["referenceDecision"] == "2103456789"
    exported = tmp_path / "scdl.csv"
    exported.write_text(response.text, encoding="utf-8")
    assert _validate(exported) == []
    for row in rows:  # the schema's custom checks (Validata's), by python-stdnum
        assert siret.is_valid(row["idAttribuant"])
        assert row["idBeneficiaire"] == "" or siret.is_valid(row["idBeneficiaire"])
        assert row["idBeneficiaire"] or row["rnaBeneficiaire"]
    assert empty.text.strip() == ",".join(exports.SCDL_COLUMNS)


async def test_the_tranches_csv_lists_what_was_paid(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    async with funding.client() as http:
        await funding.envelope(http, ae_cents=100_000_000, cp_cents=100_000_000)
        convention = await funding.signed(http, beneficiary, [1_000_001])
        text = (
            await http.get(f"/exports/tranches.csv?year={YEAR}", headers=funding.comptable())
        ).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["kind"], r["amount_eur"], r["status"]) for r in rows] == [
        ("advance", "5000.00", "planned"),
        ("balance", "5000.01", "planned"),
    ]
    assert {r["convention_id"] for r in rows} == {convention["id"]}


@pytest.mark.parametrize(("cents", "text"), [(0, "0.00"), (5, "0.05"), (123456, "1234.56")])
def test_euros_are_written_exactly(cents: int, text: str) -> None:
    assert exports.euros(cents) == text
