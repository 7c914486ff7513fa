"""Fuzzing a service's OpenAPI with schemathesis, shared by the services' ``test_*_fuzz.py``.

Cases are generated from the service's own document (positive and negative), sent to the app in
process with a real token of the caller under test, and every answer is checked: no 5xx, and the
status, content type, headers and body as documented.
"""

from __future__ import annotations

import asyncio
import traceback
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
import schemathesis
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

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@dataclass
class Fuzzer:
    """Sends schemathesis cases to the app on the session loop and validates the answers."""

    loop: asyncio.AbstractEventLoop
    http: httpx.AsyncClient
    base_url: str  # the client's, as the generated cases' URLs must be
    max_examples: int  # per operation, generation mode, caller and target
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
            base_url=self.base_url, headers={"Authorization": authorization}
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
        max_examples: int | None = None,
    ) -> None:
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

        @settings(
            max_examples=max_examples or self.max_examples,
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
