"""Staff act for their départements (decision 64): funding checks the token's territory on every
route. Another département's envelope, convention, tranche or reversement is not found (404, as a
missing one), creating one there is refused (403 ``departement_not_in_scope``), lists and exports
hold only the caller's départements, and a national account sees everything."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from funding_world import YEAR, Funding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maillage.common.auth import Caller
from maillage.funding import usecases

SEINE_SAINT_DENIS = ("93",)


async def _in_93(funding: Funding, http: httpx.AsyncClient, beneficiary: uuid.UUID) -> str:
    """A 93 envelope and a draft 93 convention, by 93 staff; the convention's id."""
    opened = await http.post(
        "/envelopes",
        json={"departement": "93", "year": YEAR, "ae_cents": 1_000_000, "cp_cents": 1_000_000},
        headers=funding.staff("ordonnateur-93", "ordonnateur", departements=SEINE_SAINT_DENIS),
    )
    assert opened.status_code == 201, opened.text
    recorded = await http.post(
        "/conventions",
        json={
            "beneficiary_partner_id": str(beneficiary),
            "departement": "93",
            "object": "Cité éducative de Clichy-sous-Bois",
            "first_year": YEAR,
            "yearly_amounts_cents": [100_000],
            "budget_cents": 100_000,
        },
        headers=funding.staff("officer-93", "officer", departements=SEINE_SAINT_DENIS),
    )
    assert recorded.status_code == 201, recorded.text
    convention_id: str = recorded.json()["id"]
    return convention_id


async def test_staff_of_93_neither_see_nor_act_on_94(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    officer = funding.staff("officer-93", "officer", departements=SEINE_SAINT_DENIS)
    ordonnateur = funding.staff("ordonnateur-93", "ordonnateur", departements=SEINE_SAINT_DENIS)
    comptable = funding.staff("comptable-93", "comptable", departements=SEINE_SAINT_DENIS)
    async with funding.client() as http:
        envelope = await funding.envelope(http, 10_000_000, 10_000_000)
        signed = await funding.signed(http, beneficiary, [1_000_000])
        draft = await funding.draft(http, beneficiary, [500_000])
        tranche = signed["tranches"][0]["id"]
        requested = await http.post(
            f"/tranches/{tranche}/request", headers=funding.partner(beneficiary)
        )
        assert requested.status_code == 200, requested.text
        convention_93 = await _in_93(funding, http, beneficiary)
        signed_path, draft_path = f"/conventions/{signed['id']}", f"/conventions/{draft['id']}"

        reads = {
            f"/envelopes/{envelope['id']}": "envelope_not_found",
            signed_path: "convention_not_found",
        }
        for path, code in reads.items():
            for caller in (officer, ordonnateur, comptable):
                refused = await http.get(path, headers=caller)
                assert (refused.status_code, refused.json()["code"]) == (404, code), path
        signature = {"ej_number": "2103456789", "signed_on": f"{YEAR}-02-01"}
        on_conventions: list[tuple[str, dict[str, Any], dict[str, str]]] = [
            (f"{draft_path}/instruct", {}, officer),
            (f"{draft_path}/programme", {"committee_date": f"{YEAR}-01-15"}, ordonnateur),
            (f"{draft_path}/sign", {**signature, "declares_no_interest": True}, ordonnateur),
            (f"{draft_path}/cancel", {"reason": "hors périmètre"}, ordonnateur),
            (f"{signed_path}/close", {"reason": "hors périmètre"}, ordonnateur),
            (f"{signed_path}/reports/{YEAR}/decision", {"accept": True}, officer),
        ]
        on_tranches: list[tuple[str, dict[str, Any], dict[str, str]]] = [
            (f"/tranches/{tranche}/instruct", {}, officer),
            (f"/tranches/{tranche}/approve", {"declares_no_interest": True}, ordonnateur),
            (f"/tranches/{tranche}/reject", {"reason": "hors périmètre"}, ordonnateur),
            (
                f"/tranches/{tranche}/pay",
                {"paid_on": f"{YEAR}-03-01", "amount_cents": 1, "payment_reference": "x"},
                comptable,
            ),
        ]
        for writes, code in (
            (on_conventions, "convention_not_found"),
            (on_tranches, "tranche_not_found"),
        ):
            for path, body, caller in writes:
                refused = await http.post(path, json=body, headers=caller)
                assert (refused.status_code, refused.json()["code"]) == (404, code), path
        creations = {
            "/envelopes": (
                {"departement": "94", "year": YEAR + 1, "ae_cents": 1, "cp_cents": 1},
                ordonnateur,
            ),
            "/conventions": (
                {
                    "beneficiary_partner_id": str(beneficiary),
                    "departement": "94",
                    "object": "Hors périmètre",
                    "first_year": YEAR,
                    "yearly_amounts_cents": [1],
                    "budget_cents": 1,
                },
                officer,
            ),
        }
        for path, (body, caller) in creations.items():
            refused = await http.post(path, json=body, headers=caller)
            assert refused.status_code == 403, refused.text
            problem = refused.json()
            assert (problem["code"], problem["departement"]) == ("departement_not_in_scope", "94")
            assert "département 94" in problem["detail"]

        # Nothing changed: the 94 objects are as they were.
        national = funding.staff("central-officer", "officer", national=True)
        unchanged = (await http.get(draft_path, headers=national)).json()
        assert unchanged["status"] == "draft"
        assert (await http.get(signed_path, headers=national)).json()["status"] == "signed"
        assert (await http.get(signed_path, headers=national)).json()["tranches"][0][
            "status"
        ] == "requested"

        # Lists, the audit log and the tranches export hold the caller's départements only.
        async def listed(path: str, headers: dict[str, str]) -> set[str]:
            page = await http.get(path, headers=headers)
            assert page.status_code == 200, page.text
            return {item["departement"] for item in page.json()["items"]}

        assert await listed("/envelopes", ordonnateur) == {"93"}
        assert await listed("/conventions", officer) == {"93"}
        assert await listed("/envelopes", funding.ordonnateur()) == {"94"}
        assert await listed("/conventions", funding.officer()) == {"94"}
        for everywhere in (national, funding.staff("operator", "operator")):
            assert await listed("/envelopes", everywhere) == {"93", "94"}
            assert await listed("/conventions", everywhere) == {"93", "94"}
        both = funding.staff("officer-93-94", "officer", departements=("93", "94"))
        assert await listed("/conventions", both) == {"93", "94"}
        nowhere = funding.staff("officer-nowhere", "officer", departements=())
        assert await listed("/conventions", nowhere) == set()
        audit = (await http.get("/audit?limit=500", headers=ordonnateur)).json()["items"]
        assert {entry["object_id"] for entry in audit} <= {
            convention_93,
            *(e["id"] for e in (await http.get("/envelopes", headers=ordonnateur)).json()["items"]),
        }
        assert audit
        assert signed["id"] not in {entry["object_id"] for entry in audit}
        export = await http.get(f"/exports/tranches.csv?year={YEAR}", headers=comptable)
        assert export.status_code == 200
        assert signed["ej_number"] not in export.text
        assert (
            signed["ej_number"]
            in (
                await http.get(f"/exports/tranches.csv?year={YEAR}", headers=funding.comptable())
            ).text
        )
        # The SCDL open data stays public: any authenticated caller, every département.
        scdl = await http.get(f"/exports/scdl-subventions.csv?year={YEAR}", headers=comptable)
        assert scdl.status_code == 200
        assert "Orly" in scdl.text


async def test_a_comptable_of_93_cannot_receive_a_94_reversement(funding: Funding) -> None:
    """The reversement's convention decides: another département's is not found."""
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    async with funding.client() as http:
        await funding.envelope(http, 10_000_000, 10_000_000)
        signed = await funding.signed(http, beneficiary, [1_000_000])
        path = f"/conventions/{signed['id']}"
        advance = signed["tranches"][0]["id"]
        for step, body, headers in (
            ("request", {}, funding.partner(beneficiary)),
            ("instruct", {}, funding.officer()),
            ("approve", {"declares_no_interest": True}, funding.ordonnateur()),
            (
                "pay",
                {
                    "paid_on": f"{YEAR}-03-01",
                    "amount_cents": signed["tranches"][0]["amount_cents"],
                    "payment_reference": "P",
                },
                funding.comptable(),
            ),
        ):
            answer = await http.post(f"/tranches/{advance}/{step}", json=body, headers=headers)
            assert answer.status_code == 200, (step, answer.text)
        report = {
            "year": YEAR,
            "achievements": "Ateliers tenus",
            "lines": [{"budget_line": "Frais de personnel", "spent_cents": 0}],
        }
        filed = await http.post(
            f"{path}/reports", json=report, headers=funding.partner(beneficiary)
        )
        assert filed.status_code == 201, filed.text
        accepted = await http.post(
            f"{path}/reports/{YEAR}/decision", json={"accept": True}, headers=funding.officer()
        )
        assert accepted.status_code == 200, accepted.text
        reversements = (await http.get(path, headers=funding.officer())).json()["reversements"]
        assert reversements, "an unspent advance is ordered back"
        receive = f"/reversements/{reversements[0]['id']}/receive"
        comptable_93 = funding.staff("comptable-93", "comptable", departements=SEINE_SAINT_DENIS)
        refused = await http.post(receive, headers=comptable_93)
        assert (refused.status_code, refused.json()["code"]) == (404, "reversement_not_found")
        assert (await http.post(receive, headers=funding.comptable())).status_code == 200


# --- the rule, over random scopes and resources ------------------------------------------------

# Départements with an envelope and a draft convention each; "75" has none.
HELD = ("01", "2A", "93", "94", "971")
CODES = (*HELD, "75")


def test_visible_departements_is_the_token_territory() -> None:
    officer = Caller("staff:1", None, frozenset({"officer"}), frozenset({"94", "93"}))
    national = Caller("staff:2", None, frozenset({"officer"}), national=True)
    partner = Caller("client", str(uuid.uuid4()), frozenset({"partner"}), frozenset({"94"}))
    assert usecases.visible_departements(officer) == ["93", "94"]
    assert usecases.visible_departements(national) is None
    assert usecases.visible_departements(partner) is None  # scoped by partner_id instead
    assert officer.covers("93")
    assert not officer.covers("75")
    assert national.covers("2A")


@pytest.mark.filterwarnings(  # the app's code runs while Hypothesis draws, as in the fuzz tests
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
async def test_access_is_granted_iff_the_departement_is_in_scope(funding: Funding) -> None:
    """Hypothesis draws a scope (national, or a set of codes) and a département; reading the
    envelope and the convention there, listing them, and opening an envelope there succeed
    exactly when the scope covers it (the app runs on this loop; Hypothesis in a thread)."""
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    national_officer = funding.staff("central-officer", "officer", national=True)
    national_ordonnateur = funding.staff("central-ordonnateur", "ordonnateur", national=True)
    envelopes: dict[str, str] = {}
    conventions: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    async with funding.client() as http:
        for code in HELD:
            opened = await http.post(
                "/envelopes",
                json={"departement": code, "year": YEAR, "ae_cents": 10, "cp_cents": 10},
                headers=national_ordonnateur,
            )
            assert opened.status_code == 201, opened.text
            envelopes[code] = opened.json()["id"]
            recorded = await http.post(
                "/conventions",
                json={
                    "beneficiary_partner_id": str(beneficiary),
                    "departement": code,
                    "object": f"Action en {code}",
                    "first_year": YEAR,
                    "yearly_amounts_cents": [10],
                    "budget_cents": 10,
                },
                headers=national_officer,
            )
            assert recorded.status_code == 201, recorded.text
            conventions[code] = recorded.json()["id"]

        async def check(national: bool, scope: frozenset[str], code: str, year: int) -> None:
            name = f"{'national' if national else '-'.join(sorted(scope))}"
            reader = funding.staff(
                f"o-{name}", "officer", departements=tuple(scope), national=national
            )
            ordonnateur = funding.staff(
                f"d-{name}", "ordonnateur", departements=tuple(scope), national=national
            )
            covered = national or code in scope
            if code in envelopes:
                envelope = await http.get(f"/envelopes/{envelopes[code]}", headers=reader)
                convention = await http.get(f"/conventions/{conventions[code]}", headers=reader)
                assert envelope.status_code == convention.status_code == (200 if covered else 404)
            listed = await http.get("/envelopes", params={"year": YEAR}, headers=reader)
            shown = {item["departement"] for item in listed.json()["items"]}
            assert shown == ({*HELD} if national else {*HELD} & scope)
            listed = await http.get("/conventions", params={"limit": 100}, headers=reader)
            shown = {item["departement"] for item in listed.json()["items"]}
            assert shown == ({*HELD} if national else {*HELD} & scope)
            opened = await http.post(
                "/envelopes",
                json={"departement": code, "year": year, "ae_cents": 1, "cp_cents": 1},
                headers=ordonnateur,
            )
            assert opened.status_code in ((201, 409) if covered else (403,)), opened.text

        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            national=st.booleans(),
            scope=st.frozensets(st.sampled_from(CODES), max_size=4),
            code=st.sampled_from(CODES),
            year=st.integers(2030, 2040),
        )
        def property_holds(national: bool, scope: frozenset[str], code: str, year: int) -> None:
            scope = frozenset() if national else scope
            asyncio.run_coroutine_threadsafe(check(national, scope, code, year), loop).result(60)

        await asyncio.to_thread(property_holds)
