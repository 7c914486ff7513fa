"""Fuzzing a service's OpenAPI with schemathesis, shared by the services' ``test_*_fuzz.py``.

Cases are generated from the service's own document (positive and negative), sent to the app in
process with a real token of the caller under test, and every answer is checked: no 5xx, and the
status, content type, headers and body as documented.

:meth:`Fuzzer.hostile` goes where generated data does not (issue 16 §4): it takes a valid case
and puts one hostile value in one place, a query or path parameter, a body field, a cursor, or
the whole body: lone surrogates, NUL, very long strings, deep nesting, out-of-range and
extreme-offset date-times, forged cursors, numbers no parser should hold. The answer must not be
a 5xx, and a problem document must be one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import traceback
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
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


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_ID = "00000000-0000-4000-8000-000000000001"
EXTREME_TIMES = (
    "9999-12-31T23:59:59-23:59",  # leaves the range once in UTC
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59.999999+00:00",
    "10000-01-01T00:00:00Z",
    "2026-02-30T25:61:00Z",
    "0000-00-00",
)
FORGED_CURSORS = (
    *(_cursor(json.dumps([at, _ID]).encode()) for at in EXTREME_TIMES),
    _cursor(b"[" * 3000),  # Python's recursion limit
    _cursor(b'["\\ud800", "x"]'),
    _cursor(b"\xff\xfe\x00"),
    _cursor(b'{"a": 1}'),
    "A" * 10_000,
    "!!!",
)
HOSTILE_VALUES = st.sampled_from(
    (
        "\ud800",
        "a\udfffb",
        "\udc00\ud800",
        "a\x00b",
        "\x00",
        "x" * 100_000,
        "é" * 30_000,
        "\u202e\ufeff\U0001f600",
        *EXTREME_TIMES,
        *FORGED_CURSORS,
        "-1",
        "1e309",
        "NaN",
    )
)
URL_ROOM = 30_000
HOSTILE_BODIES = st.sampled_from(
    (
        b"[" * 5000,
        b'{"a":' * 3000,
        b'{"x": "\\ud800"}',
        b'"\\udfff"',
        b"\x00",
        b"1" * 5000,  # more digits than Python converts
        b"\xff\xfe{}",
        b'{"a": 1e999999, "b": -1e999999}',
        b"[" * 31 + b"]" * 31,
        b"",
    )
)


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

    def hostile(
        self,
        operation: schemathesis.APIOperation,
        authorization: str,
        path_parameters: dict[str, Any] | None = None,
        max_examples: int = 10,
    ) -> None:
        """Valid cases with one hostile value each (see the module docstring): never a 5xx."""
        strategy = operation.as_strategy(
            generation_mode=GenerationMode.POSITIVE, path_parameters=path_parameters
        )

        @settings(
            max_examples=max_examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(case=strategy, data=st.data())
        def run(case: schemathesis.Case, data: st.DataObject) -> None:
            method, url, headers, body = hostile_request(case, data, self.base_url)
            request = self.http.request(
                method, url, headers={**headers, "Authorization": authorization}, content=body
            )
            response = asyncio.run_coroutine_threadsafe(request, self.loop).result(timeout=60)
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, f"{method} {url[:300]}: {response.text[:500]}"
            if response.headers.get("content-type") == "application/problem+json":
                assert response.json()["status"] == response.status_code

        run()


def _leaves(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every place of a JSON document (its root too) where a value can be replaced."""
    places: list[tuple[str | int, ...]] = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            places += _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            places += _leaves(item, (*path, index))
    return places


def _replaced(document: Any, path: tuple[str | int, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[head] = _replaced(document[head], tuple(rest), value)  # type: ignore[index]
    return copy


def _encoded(value: Any) -> str:
    """A query or path value, percent-encoded as UTF-8 even when it holds a lone surrogate."""
    return quote(str(value).encode("utf-8", "surrogatepass"), safe="")


def hostile_request(
    case: schemathesis.Case, data: st.DataObject, base_url: str
) -> tuple[str, str, dict[str, str], bytes | None]:
    """Method, URL, headers and body of ``case`` with one hostile value in one place."""
    query: dict[str, Any] = dict(case.query or {})
    path_parameters: dict[str, Any] = dict(case.path_parameters or {})
    body = case.body if case.media_type == "application/json" else None
    has_body = case.media_type is not None
    places: list[tuple[str, Any]] = [("query", "x-hostile")]
    places += [("query", name) for name in query]
    places += [("path", name) for name in path_parameters]
    if has_body and body is not None and not isinstance(body, bytes):
        places += [("body", leaf) for leaf in _leaves(body)]
    if has_body:
        places.append(("raw body", None))
    where, name = data.draw(st.sampled_from(places), label="where")
    raw: bytes | None = None
    if where == "raw body":
        raw = data.draw(HOSTILE_BODIES, label="body")
    else:
        value = data.draw(HOSTILE_VALUES, label="value")
        if where in ("query", "path") and len(_encoded(value)) > URL_ROOM:
            value = value[: URL_ROOM // 9]  # httpx, like servers, refuses URLs over 64 KiB
        if where == "query":
            query[name] = value
        elif where == "path":
            path_parameters[name] = value
        else:
            body = _replaced(body, name, value)
    path = case.operation.path
    for key, value in path_parameters.items():
        path = path.replace(f"{{{key}}}", _encoded(value))
    pairs = [
        (key, item) for key, values in query.items()
        for item in (values if isinstance(values, list) else [values])
    ]  # fmt: skip
    url = base_url + path + ("?" + "&".join(f"{_encoded(k)}={_encoded(v)}" for k, v in pairs))
    headers = {"content-type": "application/json"} if has_body else {}
    if raw is None and has_body and body is not None:
        raw = json.dumps(body, ensure_ascii=True).encode()
    return case.method.upper(), url, headers, raw


def describe(error: BaseException) -> str:
    """Every distinct failure in a (nested) group: schemathesis' reports, or a traceback."""
    if isinstance(error, FailureGroup):
        return str(error)
    if isinstance(error, BaseExceptionGroup):
        return "\n".join(describe(inner) for inner in error.exceptions)
    return "".join(traceback.format_exception(error))
