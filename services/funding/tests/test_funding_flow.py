"""A convention from draft to paid tranches, through the HTTP API on a real PostgreSQL: the
23,000 EUR rule, the plan de financement, separated duties (403 with stable codes), conflicts of
interest, overpayment, the compte-rendu and its reversement, and what goes on the bus."""

from __future__ import annotations

import time
import uuid

import pytest
from funding_world import YEAR, Funding
from jwt_fixtures import claims

from maillage.common.catalog import PartnerSuspended


@pytest.mark.parametrize(
    ("yearly_cents", "legal_act"),
    [
        (2_299_999, "arrete_attributif"),
        (2_300_000, "arrete_attributif"),
        (2_300_001, "convention"),
    ],
)
async def test_the_legal_act_follows_the_23000_eur_rule(
    funding: Funding, yearly_cents: int, legal_act: str
) -> None:
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    async with funding.client() as http:
        convention = await funding.draft(http, beneficiary, [yearly_cents])
    assert convention["legal_act"] == legal_act
    assert convention["status"] == "draft"


async def test_a_plan_that_does_not_balance_is_refused_with_the_difference(
    funding: Funding,
) -> None:
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    orly = await funding.verified_partner("Ville d'Orly", "collectivite")
    async with funding.client() as http:
        response = await http.post(
            "/conventions",
            json={
                "beneficiary_partner_id": str(beneficiary),
                "departement": "94",
                "object": "Ateliers",
                "first_year": YEAR,
                "yearly_amounts_cents": [3_000_000],
                "budget_cents": 6_000_000,
                "cofinancements": [
                    {"name": "Ville d'Orly", "partner_id": str(orly), "amount_cents": 2_000_000}
                ],
            },
            headers=funding.officer(),
        )
        count = await funding.pool.fetchval("SELECT count(*) FROM conventions")
    assert response.status_code == 422
    assert response.json()["code"] == "plan_unbalanced"
    assert response.json()["difference_cents"] == 1_000_000
    assert "1000000 centimes" in response.json()["detail"]
    assert count == 0


async def test_control_characters_are_refused_not_a_server_error(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Association")
    async with funding.client() as http:
        response = await http.post(
            "/conventions",
            json={
                "beneficiary_partner_id": str(beneficiary),
                "departement": "94",
                "object": "Ateliers\u0000",
                "first_year": YEAR,
                "yearly_amounts_cents": [100],
                "budget_cents": 100,
            },
            headers=funding.officer(),
        )
        odd_token = funding.key.sign(
            claims(
                sub="client-y",
                partner_id="not-a-uuid",
                roles=["partner"],
                exp=int(time.time()) + 60,
            )
        )
        odd = await http.get("/conventions", headers={"Authorization": f"Bearer {odd_token}"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/object"
    assert odd.status_code == 403


async def test_an_unverified_beneficiary_gets_no_convention(funding: Funding) -> None:
    pending = await funding.verified_partner("En attente", status="pending")
    async with funding.client() as http:
        response = await http.post(
            "/conventions",
            json={
                "beneficiary_partner_id": str(pending),
                "departement": "94",
                "object": "x",
                "first_year": YEAR,
                "yearly_amounts_cents": [100],
                "budget_cents": 100,
            },
            headers=funding.officer(),
        )
    assert response.status_code == 422
    assert response.json()["code"] == "beneficiary_not_verified"


async def test_a_beneficiary_without_siret_nor_rna_gets_no_convention(funding: Funding) -> None:
    anonymous = await funding.verified_partner("Sans identifiant", siret=None, rna=None)
    async with funding.client() as http:
        response = await http.post(
            "/conventions",
            json={
                "beneficiary_partner_id": str(anonymous),
                "departement": "94",
                "object": "x",
                "first_year": YEAR,
                "yearly_amounts_cents": [100],
                "budget_cents": 100,
            },
            headers=funding.officer(),
        )
    assert response.status_code == 422
    assert response.json()["code"] == "beneficiary_unidentified"


async def test_the_whole_flow_with_separated_duties(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Collège Robert Desnos", "college")
    orly = await funding.verified_partner("Ville d'Orly", "collectivite")
    cofinancing = [{"name": "Ville d'Orly", "partner_id": str(orly), "amount_cents": 2_000_000}]
    async with funding.client() as http:
        envelope = await funding.envelope(http, ae_cents=10_000_000, cp_cents=10_000_000)
        convention = await funding.draft(http, beneficiary, [3_000_000], cofinancements=cofinancing)
        path = f"/conventions/{convention['id']}"
        # The officer who instructs may not programme or sign, even holding the role.
        both = funding.staff("officer", "officer", "ordonnateur")
        assert (await http.post(f"{path}/instruct", headers=both)).status_code == 200
        refused = await http.post(
            f"{path}/programme", json={"committee_date": f"{YEAR}-01-15"}, headers=both
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "separation_of_duties"
        assert refused.json()["earlier_action"] == "instruct"
        # A comptable cannot programme (role), the ordonnateur can.
        wrong_role = await http.post(
            f"{path}/programme",
            json={"committee_date": f"{YEAR}-01-15"},
            headers=funding.comptable(),
        )
        assert wrong_role.status_code == 403
        programmed = await http.post(
            f"{path}/programme",
            json={"committee_date": f"{YEAR}-01-15"},
            headers=funding.ordonnateur(),
        )
        assert programmed.json()["status"] == "programmed"
        unsigned = await http.post(
            f"{path}/sign",
            json={
                "ej_number": "2103456789",
                "signed_on": f"{YEAR}-02-01",
                "declares_no_interest": False,
            },
            headers=funding.ordonnateur(),
        )
        assert unsigned.status_code == 422
        assert unsigned.json()["code"] == "no_interest_declaration"
        signed = (await funding.sign(http, convention["id"])).json()
        assert signed["status"] == "signed"
        assert [(t["kind"], t["amount_cents"]) for t in signed["tranches"]] == [
            ("advance", 1_500_000),
            ("balance", 1_500_000),
        ]
        envelope_now = (
            await http.get(f"/envelopes/{envelope['id']}", headers=funding.comptable())
        ).json()
        assert envelope_now["ae_engaged_cents"] == 3_000_000
        advance, balance = signed["tranches"]

        # The beneficiary asks for its advance; the co-financer sees but may not ask.
        assert (
            await http.post(f"/tranches/{advance['id']}/request", headers=funding.partner(orly))
        ).json()["code"] == "not_the_beneficiary"
        stranger = await funding.verified_partner("Another")
        hidden = await http.post(
            f"/tranches/{advance['id']}/request", headers=funding.partner(stranger)
        )
        assert hidden.status_code == 404
        requested = await http.post(
            f"/tranches/{advance['id']}/request", headers=funding.partner(beneficiary)
        )
        assert requested.json()["status"] == "requested", requested.text
        early = await http.post(
            f"/tranches/{balance['id']}/request", headers=funding.partner(beneficiary)
        )
        assert early.json()["code"] == "report_not_accepted"

        # Instructed by one person, approved by another, paid by a third.
        dual = funding.staff("dual", "officer", "ordonnateur", "comptable")
        tranche = f"/tranches/{advance['id']}"
        assert (await http.post(f"{tranche}/instruct", headers=dual)).status_code == 200
        same = await http.post(
            f"{tranche}/approve", json={"declares_no_interest": True}, headers=dual
        )
        assert same.status_code == 403
        assert same.json()["code"] == "separation_of_duties"
        approver = funding.staff("approver", "ordonnateur", "comptable")
        approved = await http.post(
            f"{tranche}/approve", json={"declares_no_interest": True}, headers=approver
        )
        assert approved.json()["status"] == "approved", approved.text
        payment = {
            "paid_on": f"{YEAR}-03-01",
            "amount_cents": 1_500_000,
            "payment_reference": "DRFIP-94-000123",
        }
        for who in (dual, approver):
            refused_pay = await http.post(f"{tranche}/pay", json=payment, headers=who)
            assert refused_pay.status_code == 403
            assert refused_pay.json()["code"] == "separation_of_duties"
        over = await http.post(
            f"{tranche}/pay",
            json={**payment, "amount_cents": 1_500_001},
            headers=funding.comptable(),
        )
        assert over.status_code == 409
        assert over.json()["code"] == "overpayment"
        paid = await http.post(f"{tranche}/pay", json=payment, headers=funding.comptable())
        assert paid.json()["status"] == "paid", paid.text
        again = await http.post(f"{tranche}/pay", json=payment, headers=funding.comptable())
        assert again.json()["code"] == "tranche_status"

        # The compte-rendu: 20,000 EUR spent of a 50,000 EUR budget the State funds at 60 %:
        # the State's part is 12,000 EUR; 15,000 EUR were paid, so 3,000 EUR come back.
        report = await http.post(
            f"{path}/reports",
            json={
                "year": YEAR,
                "achievements": "12 ateliers, 140 élèves",
                "lines": [
                    {"budget_line": "Intervenants", "spent_cents": 1_500_000},
                    {"budget_line": "Livres", "spent_cents": 500_000},
                ],
            },
            headers=funding.partner(beneficiary),
        )
        assert report.status_code == 201, report.text
        decided = await http.post(
            f"{path}/reports/{YEAR}/decision", json={"accept": True}, headers=funding.officer()
        )
        assert decided.json()["due_back_cents"] == 300_000, decided.text
        final = (await http.get(path, headers=funding.partner(beneficiary))).json()
        assert [(r["amount_cents"], r["status"]) for r in final["reversements"]] == [
            (300_000, "ordered")
        ]
        assert final["paid_cents"] == 1_500_000
        receipt = f"/reversements/{final['reversements'][0]['id']}/receive"
        assert (await http.post(receipt, headers=funding.officer())).status_code == 403
        received = await http.post(receipt, headers=funding.comptable())
        assert received.json()["status"] == "received", received.text
        twice = await http.post(receipt, headers=funding.comptable())
        assert twice.json()["code"] == "reversement_received"
        # The stranger does not see the convention at all.
        assert (await http.get(path, headers=funding.partner(stranger))).status_code == 404

    async with funding.pool.acquire() as connection:
        outbox = await connection.fetch("SELECT type, payload FROM outbox ORDER BY id")
    types = [row["type"] for row in outbox]
    assert types == [
        "fr.maillage.funding.convention.programmed.v1",
        "fr.maillage.funding.convention.signed.v1",
        "fr.maillage.funding.tranche.requested.v1",
        "fr.maillage.funding.tranche.approved.v1",
        "fr.maillage.funding.tranche.paid.v1",
        "fr.maillage.funding.report.filed.v1",
        "fr.maillage.funding.report.accepted.v1",
        "fr.maillage.funding.reversement.ordered.v1",
    ]
    published = " ".join(row["payload"] for row in outbox)
    for subject in funding.subjects.values():
        assert subject not in published  # no staff member on the bus
    assert str(orly) in published  # the co-financer is told


async def test_an_approver_linked_to_the_beneficiary_is_refused(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Association proche")
    async with funding.client() as http:
        await funding.envelope(http, ae_cents=10_000_000, cp_cents=10_000_000)
        convention = await funding.programmed(http, beneficiary, [1_000_000])
        declared = await http.post(
            "/interests",
            json={"partner_id": str(beneficiary)},
            headers=funding.ordonnateur("principal"),
        )
        assert declared.status_code == 201
        refused = await funding.sign(http, convention["id"], who="principal")
        assert refused.status_code == 403
        assert refused.json()["code"] == "conflict_of_interest"
        assert (await funding.sign(http, convention["id"])).status_code == 200


async def test_who_may_do_what(funding: Funding) -> None:
    """The authorisation matrix: each route refuses every role it is not for."""
    beneficiary = await funding.verified_partner("Bénéficiaire")
    cofinancer = await funding.verified_partner("Cofinanceur", "collectivite")
    other = await funding.verified_partner("Autre")
    async with funding.client() as http:
        await funding.envelope(http, ae_cents=10_000_000, cp_cents=10_000_000)
        convention = await funding.signed(
            http,
            beneficiary,
            [1_000_000],
            cofinancements=[{"name": "C", "partner_id": str(cofinancer), "amount_cents": 100}],
        )
        callers = {
            "beneficiary": funding.partner(beneficiary),
            "cofinancer": funding.partner(cofinancer),
            "other": funding.partner(other),
            "officer": funding.officer("matrix-officer"),
            "ordonnateur": funding.ordonnateur("matrix-ordonnateur"),
            "comptable": funding.comptable("matrix-comptable"),
            "operator": funding.staff("operator", "operator"),
        }
        path = f"/conventions/{convention['id']}"
        reads = {
            "/envelopes": {"officer", "ordonnateur", "comptable", "operator"},
            path: {"beneficiary", "cofinancer", "officer", "ordonnateur", "comptable", "operator"},
            "/audit": {"ordonnateur", "operator"},
            f"/exports/tranches.csv?year={YEAR}": {
                "officer",
                "ordonnateur",
                "comptable",
                "operator",
            },
            f"/exports/scdl-subventions.csv?year={YEAR}": set(callers),
        }
        for route, allowed in reads.items():
            for name, headers in callers.items():
                status = (await http.get(route, headers=headers)).status_code
                assert (status == 200) == (name in allowed), (route, name, status)
        writes = {
            "/envelopes": (
                {"departement": "94", "year": YEAR + 1, "ae_cents": 1, "cp_cents": 1},
                {"ordonnateur"},
            ),
            "/conventions": ({}, {"officer"}),  # 422 for the officer: past the role check
            f"{path}/cancel": ({"reason": "x"}, {"ordonnateur"}),  # 409: signed
            f"{path}/instruct": ({}, {"officer"}),
        }
        tranche = f"/tranches/{convention['tranches'][0]['id']}"
        report = {
            "year": YEAR,
            "achievements": "x",
            "lines": [{"budget_line": "x", "spent_cents": 1}],
        }
        writes.update(
            {
                f"{tranche}/instruct": ({}, {"officer"}),  # 409 past the checks: planned
                f"{tranche}/approve": ({"declares_no_interest": True}, {"ordonnateur"}),
                f"{tranche}/reject": ({"reason": "x"}, {"ordonnateur"}),
                f"{tranche}/pay": (
                    {"paid_on": f"{YEAR}-03-01", "amount_cents": 1, "payment_reference": "x"},
                    {"comptable"},
                ),
                f"{tranche}/request": ({}, {"beneficiary"}),
                f"{path}/reports": (report, {"beneficiary"}),
                f"{path}/reports/{YEAR}/decision": ({"accept": False}, {"officer"}),
                f"{path}/programme": ({"committee_date": f"{YEAR}-01-01"}, {"ordonnateur"}),
                "/interests": (
                    {"partner_id": str(other)},
                    {"officer", "ordonnateur", "comptable", "operator"},
                ),
                f"{path}/close": ({"reason": "x"}, {"ordonnateur"}),  # last: it ends the convention
            }
        )
        for route, (body, allowed) in writes.items():
            for name, headers in callers.items():
                status = (await http.post(route, json=body, headers=headers)).status_code
                assert (status not in (403, 404)) == (name in allowed), (route, name, status)
        assert (await http.get("/envelopes")).status_code == 401


async def test_unknown_ids_are_404_and_bad_ids_422(funding: Funding) -> None:
    async with funding.client() as http:
        missing = await http.get(f"/conventions/{uuid.uuid4()}", headers=funding.officer())
        bad = await http.get("/conventions/not-a-uuid", headers=funding.officer())
        tranche = await http.post(f"/tranches/{uuid.uuid4()}/instruct", headers=funding.officer())
    assert missing.json()["code"] == "convention_not_found"
    assert bad.status_code == 422
    assert tranche.json()["code"] == "tranche_not_found"


async def test_a_suspended_beneficiary_changes_nothing_with_its_unexpired_token(
    funding: Funding,
) -> None:
    """Decision 40: the read model, updated by partner.suspended, decides on every write."""
    beneficiary = await funding.verified_partner("Association des lecteurs")
    async with funding.client() as http:
        await funding.envelope(http, ae_cents=10_000_000, cp_cents=10_000_000)
        signed = await funding.signed(http, beneficiary, [3_000_000])
        await funding.apply(
            PartnerSuspended(
                partner_id=beneficiary,
                kind="association",
                legal_name="Association des lecteurs",
                status="suspended",
                version=2,
                siret="35600000000048",
                departement="94",
            )
        )
        advance = signed["tranches"][0]
        requested = await http.post(
            f"/tranches/{advance['id']}/request", headers=funding.partner(beneficiary)
        )
        read = await http.get(f"/conventions/{signed['id']}", headers=funding.partner(beneficiary))
    assert requested.status_code == 403, requested.text
    assert requested.json()["code"] == "partner_not_in_good_standing"
    assert read.status_code == 200
