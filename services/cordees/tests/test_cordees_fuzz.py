"""The cordees OpenAPI fuzzed with schemathesis: no 5xx, no answer its schema does not allow.

Generated requests, valid and invalid, against every operation, as a verified school, a verified
tête de cordée and an operator (real tokens), at random identifiers and at real ones (an offer,
a proposed request, a pairing, a campaign). The harness is the registry's
(services/registry/tests/test_registry_fuzz.py): the app runs on the session loop, Hypothesis in
a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import schemathesis
from cordees_world import Cordees
from openapi_fuzzing import MODES, Fuzzer, describe

BASE_URL = "http://cordees"
# Examples per operation, generation mode, caller and target (random or real).
MAX_EXAMPLES = 12
# Valid cases with one hostile value each (lone surrogates, NUL, long strings, deep nesting,
# extreme date-times, forged cursors), per operation, caller and target: never a 5xx.
HOSTILE_EXAMPLES = 6

pytestmark = pytest.mark.filterwarnings(
    # Schemathesis draws from `random` inside its strategies; Hypothesis seeds `random` for each
    # example (deterministically, with derandomize), so the runs stay reproducible.
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)


async def test_every_operation_answers_as_documented_under_fuzzing(cordees: Cordees) -> None:
    tete = await cordees.partner("etablissement_superieur")
    school = await cordees.partner("college", education_prioritaire="REP+")
    other = await cordees.partner("college")
    callers = {
        "school": cordees.token(school, "partner", "school")["Authorization"],
        "tete": cordees.token(tete, "partner")["Authorization"],
        "operator": cordees.operator()["Authorization"],
    }
    transport = httpx.ASGITransport(app=cordees.asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60) as http:
        offer = await cordees.offer(tete, http, capacity=50)
        proposed = await cordees.request(school, http)
        paired = await cordees.request(other, http)
        pairing = await http.post(
            f"/match-requests/{paired['id']}/accept", headers=cordees.token(tete, "partner")
        )
        campaign = await http.post("/campaigns", json={}, headers=cordees.operator())
        real = {
            "offer_id": offer["id"],
            "request_id": proposed["id"],
            "pairing_id": pairing.json()["id"],
            "campaign_id": campaign.json()["id"],
        }
        document = await http.get("/openapi.json")
        schema = schemathesis.openapi.from_dict(document.json())
        fuzzer = Fuzzer(asyncio.get_running_loop(), http, BASE_URL, MAX_EXAMPLES)
        failures: list[str] = []

        def fuzz_everything() -> None:
            for result in schema.get_all_operations():
                operation = result.ok()
                targets: list[dict[str, Any] | None] = [None]
                for name, value in real.items():
                    if f"{{{name}}}" in operation.path:
                        targets.append({name: value})
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
        f"\n{fuzzer.sent} generated requests in {elapsed:.1f} s;"
        f" statuses: {dict(sorted(fuzzer.statuses.items()))}"
    )
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    assert fuzzer.sent >= 1000
    assert not any(status >= 500 for status in fuzzer.statuses)
