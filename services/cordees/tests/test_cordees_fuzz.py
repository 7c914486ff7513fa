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
import traceback
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from cordees_world import Cordees
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

BASE_URL = "http://cordees"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# Examples per operation, generation mode, caller and target (random or real).
MAX_EXAMPLES = 12

pytestmark = pytest.mark.filterwarnings(
    # Schemathesis draws from `random` inside its strategies; Hypothesis seeds `random` for each
    # example (deterministically, with derandomize), so the runs stay reproducible.
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)


@dataclass
class Fuzzer:
    """Sends schemathesis cases to the app on the session loop and validates the answers."""

    loop: asyncio.AbstractEventLoop
    http: httpx.AsyncClient
    statuses: dict[int, int] = field(default_factory=dict)
    answers: list[httpx.Response] = field(default_factory=list)
    keep: frozenset[int] = frozenset()  # statuses whose answers are kept for inspection

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def send(self, case: schemathesis.Case, authorization: str) -> httpx.Response:
        # Our token replaces any generated Authorization header; schemathesis still leaves it
        # out when a negative case is about a missing credential.
        kwargs = case.as_transport_kwargs(
            base_url=BASE_URL, headers={"Authorization": authorization}
        )
        prepared = requests.Request(
            method=kwargs.pop("method"),
            url=kwargs.pop("url"),
            headers=kwargs.pop("headers", None),
            params=kwargs.pop("params", None),
            cookies=kwargs.pop("cookies", None),
            json=kwargs.pop("json", None),
            data=kwargs.pop("data", None),
            files=kwargs.pop("files", None),
        ).prepare()
        assert not kwargs, f"transport arguments not sent: {sorted(kwargs)}"
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        # Header values travel as latin-1 (httpx would encode str values as ASCII).
        headers = {name: value.encode("latin-1") for name, value in prepared.headers.items()}
        request = self.http.request(
            str(prepared.method), str(prepared.url), headers=headers, content=body
        )
        response = asyncio.run_coroutine_threadsafe(request, self.loop).result(timeout=60)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        if response.status_code in self.keep:
            self.answers.append(response)
        return response

    def fuzz(
        self,
        operation: schemathesis.APIOperation,
        mode: GenerationMode,
        authorization: str,
        path_parameters: dict[str, Any] | None = None,
        max_examples: int = MAX_EXAMPLES,
    ) -> None:
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

        @settings(
            max_examples=max_examples,
            deadline=None,
            derandomize=True,  # the same requests on every run and in CI
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            # Large bodies, and negative data, are slow to generate and filter out many drafts.
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.filter_too_much,
                HealthCheck.data_too_large,
            ],
            print_blob=False,
        )
        @given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            response = self.send(case, authorization)
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # Negative data for an operation with no parameter, body or credential to break.
            if mode is not GenerationMode.NEGATIVE:
                raise


def describe(error: BaseException) -> str:
    """Every distinct failure in a (nested) group: schemathesis' reports, or a traceback."""
    if isinstance(error, FailureGroup):
        return str(error)
    if isinstance(error, BaseExceptionGroup):
        return "\n".join(describe(inner) for inner in error.exceptions)
    return "".join(traceback.format_exception(error))


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
        fuzzer = Fuzzer(asyncio.get_running_loop(), http)
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
