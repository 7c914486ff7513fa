"""The stages3e OpenAPI fuzzed with schemathesis: no 5xx, no answer its schema does not allow.

Generated requests, valid and invalid, against every operation, as a verified collège, a
verified host and an operator (real tokens), at random identifiers and at real ones (an offer,
an application). The harness is the registry's and cordees' (tests/openapi_fuzzing.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import schemathesis
from openapi_fuzzing import MODES, Fuzzer, describe
from stages3e_world import Stages

BASE_URL = "http://stages3e"
MAX_EXAMPLES = 8
# Valid cases with one hostile value each (lone surrogates, NUL, long strings, deep nesting,
# extreme date-times, forged cursors), per operation, caller and target: never a 5xx.
HOSTILE_EXAMPLES = 6

pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)


async def test_every_operation_answers_as_documented_under_fuzzing(stages: Stages) -> None:
    host = await stages.partner()
    school = await stages.school("REP+")
    callers = {
        "school": stages.school_token(school)["Authorization"],
        "host": stages.host_token(host)["Authorization"],
        "operator": stages.operator()["Authorization"],
    }
    transport = httpx.ASGITransport(app=stages.asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60) as http:
        offer = await stages.offer(host, http)
        application = await stages.application(school, offer, http)
        real = {"offer_id": offer["id"], "application_id": application["id"], "remote_id": "job-1"}
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
    assert not any(status >= 500 for status in fuzzer.statuses)
