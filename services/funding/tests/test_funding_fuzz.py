"""The funding OpenAPI under hostile input: no 5xx (issue 16 §4).

Valid cases generated from the service's own document, each with one hostile value in one place
(lone surrogates, NUL, long strings, deep nesting, extreme date-times, forged cursors, hostile
bodies: tests/openapi_fuzzing.py, ``Fuzzer.hostile``), against every operation, as an officer,
an ordonnateur, a comptable and a beneficiary, at random identifiers and at real ones. Not yet
here: the registry's and cordees' fuzzing of the documented answers (schemathesis' positive and
negative modes with the conformance checks).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import schemathesis
from funding_world import Funding
from openapi_fuzzing import Fuzzer, describe

BASE_URL = "http://funding"
# Valid cases with one hostile value each, per operation, caller and target: never a 5xx.
HOSTILE_EXAMPLES = 6

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
