"""The funding OpenAPI under fuzzing: no 5xx, and no answer its schema does not allow.

Two passes, against every operation, as an officer, an ordonnateur, a comptable and a beneficiary
(real tokens), at random identifiers and at real ones (a signed convention, its tranche, the
envelope), with the harness of tests/openapi_fuzzing.py (the app on the session loop, Hypothesis
in a worker thread):

- hostile input (issue 16 §4): valid cases with one hostile value in one place (lone surrogates,
  NUL, long strings, deep nesting, extreme date-times, forged cursors, hostile bodies,
  ``Fuzzer.hostile``): never a 5xx;
- the documented answers: schemathesis' positive and negative modes with the conformance checks
  (status, content type, headers, body as documented).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import schemathesis
from funding_world import Funding
from openapi_fuzzing import MODES, Fuzzer, describe

BASE_URL = "http://funding"
# Valid cases with one hostile value each, per operation, caller and target: never a 5xx.
HOSTILE_EXAMPLES = 6
# Positive and negative cases per operation, mode, caller and target: answered as documented.
MAX_EXAMPLES = 6

pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)


async def test_no_hostile_input_reaches_a_5xx(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    callers = {
        "officer": funding.officer()["Authorization"],
        "ordonnateur": funding.ordonnateur()["Authorization"],
        "comptable": funding.comptable()["Authorization"],
        "beneficiary": funding.partner(beneficiary)["Authorization"],
    }
    async with funding.client() as http:
        envelope = await funding.envelope(http, 10_000_000, 10_000_000)
        convention = await funding.signed(http, beneficiary, [1_000_000])
        tranche_id = next(
            (tranche["id"] for tranche in convention.get("tranches", [])), convention["id"]
        )
        real = {
            "convention_id": convention["id"],
            "envelope_id": envelope["id"],
            "tranche_id": tranche_id,
        }
        document = await http.get("/openapi.json")
        schema = schemathesis.openapi.from_dict(document.json())
        fuzzer = Fuzzer(asyncio.get_running_loop(), http, BASE_URL, HOSTILE_EXAMPLES)
        failures: list[str] = []

        def fuzz_everything() -> None:
            for result in schema.get_all_operations():
                operation = result.ok()
                targets: list[dict[str, Any] | None] = [None]
                known = {
                    name: value for name, value in real.items() if f"{{{name}}}" in operation.path
                }
                if known and len(known) == operation.path.count("{"):
                    targets.append(known)
                for who, authorization in callers.items():
                    for target in targets:
                        try:
                            fuzzer.hostile(operation, authorization, target, HOSTILE_EXAMPLES)
                        except (Exception, BaseExceptionGroup) as error:
                            failures.append(
                                f"{operation.label} (hostile, {who}, {target}):\n" + describe(error)
                            )

        started = time.monotonic()
        await asyncio.to_thread(fuzz_everything)
        elapsed = time.monotonic() - started
    print(
        f"\n{fuzzer.sent} hostile requests in {elapsed:.1f} s;"
        f" statuses: {dict(sorted(fuzzer.statuses.items()))}"
    )
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    assert fuzzer.sent >= 200
    assert not any(status >= 500 for status in fuzzer.statuses)


async def test_every_operation_answers_as_documented_under_fuzzing(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    callers = {
        "beneficiary": funding.partner(beneficiary)["Authorization"],
        "officer": funding.officer("fuzz-officer")["Authorization"],
        "ordonnateur": funding.ordonnateur("fuzz-ordonnateur")["Authorization"],
        "comptable": funding.comptable("fuzz-comptable")["Authorization"],
    }
    async with funding.client() as http:
        envelope = await funding.envelope(http, ae_cents=10**12, cp_cents=10**12)
        convention = await funding.signed(http, beneficiary, [3_000_000, 3_000_000])
        real = {
            "envelope_id": envelope["id"],
            "convention_id": convention["id"],
            "tranche_id": convention["tranches"][0]["id"],
            "year": 2027,
        }
        document = await http.get("/openapi.json")
        schema = schemathesis.openapi.from_dict(document.json())
        fuzzer = Fuzzer(asyncio.get_running_loop(), http, BASE_URL, MAX_EXAMPLES)
        failures: list[str] = []

        def fuzz_everything() -> None:
            for result in schema.get_all_operations():
                operation = result.ok()
                targets: list[dict[str, Any] | None] = [None]
                real_target = {
                    name: value for name, value in real.items() if f"{{{name}}}" in operation.path
                }
                if real_target:
                    targets.append(real_target)
                for who, authorization in callers.items():
                    for mode in MODES:
                        for target in targets:
                            try:
                                fuzzer.fuzz(operation, mode, authorization, target)
                            except (Exception, BaseExceptionGroup) as error:
                                failures.append(
                                    f"{operation.label} ({mode.value}, {who}, {target}):\n"
                                    + describe(error)
                                )

        started = time.monotonic()
        await asyncio.to_thread(fuzz_everything)
        elapsed = time.monotonic() - started
    print(
        f"\n{fuzzer.sent} generated requests in {elapsed:.1f} s;"
        f" statuses: {dict(sorted(fuzzer.statuses.items()))}"
    )
    if failures:
        pytest.fail("\n\n".join(failures[:15]), pytrace=False)
    assert not any(status >= 500 for status in fuzzer.statuses)
