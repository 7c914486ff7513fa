"""Numbers and booleans of the wrong JSON type, sent to a running service (``common/kinds.py``).

Each service's API tests give a few real requests (:class:`Probe`: a valid body and the pointers
of its integer, number and boolean fields); :func:`refuse_wrong_kinds` replaces one field at a
time by a JSON value of another type (``true`` for an integer, ``"1"``, ``1.0``; ``1`` or
``"true"`` for a boolean), first the usual ones, then Hypothesis' (on a worker thread, the app
on the test's loop). Each answer must be a 422 ``validation_failed`` naming that field in
French, and ``snapshot`` (what the service keeps) must not change.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

# Hypothesis' warning on the worker thread, as in the fuzz tests.
WARNINGS = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
USUAL: dict[str, list[Any]] = {
    "int": [True, False, "1", "100", 1.0, 100.0],
    "float": [True, False, "1", "1.5"],
    "bool": [1, 0, "true", "false", "1", 1.0],
}
_NUMERIC_TEXT = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "int": st.one_of(
        st.booleans(),
        _NUMERIC_TEXT,
        st.integers(-(10**9), 10**9).map(float),  # 1.0: a number with a fraction part
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    "float": st.one_of(st.booleans(), _NUMERIC_TEXT),
    "bool": st.one_of(
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["true", "false", "1", "0", "yes", "on", "True"]),
    ),
}


@dataclass
class Probe:
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    fields: dict[str, str]  # "cofinancements/0/amount_cents": "int" | "float" | "bool"


def replaced(body: Any, pointer: str, value: Any) -> Any:
    document = json.loads(json.dumps(body))
    *parents, last = pointer.split("/")
    target = document
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return document


def check_refused(response: httpx.Response, pointer: str, value: Any) -> None:
    sent = f"{pointer} = {json.dumps(value)}"
    assert response.status_code == 422, f"{sent}: {response.status_code} {response.text[:300]}"
    problem = response.json()
    assert problem["code"] == "validation_failed", sent
    named = [error for error in problem["errors"] if error["pointer"] == f"#/{pointer}"]
    assert named, f"{sent}: {problem['errors']}"
    assert any(word in named[0]["detail"] for word in ("entier", "nombre", "booléen")), (
        f"{sent}: {named[0]['detail']}"
    )


async def refuse_wrong_kinds(
    http: httpx.AsyncClient,
    probes: list[Probe],
    snapshot: Callable[[], Awaitable[Any]],
    max_examples: int = 40,
) -> int:
    """Every probe's field, with every usual wrong value then Hypothesis' ones: 422 and no
    change. Returns how many requests were sent."""
    before = await snapshot()
    sent = 0
    for probe in probes:
        for pointer, kind in probe.fields.items():
            for value in USUAL[kind]:
                body = replaced(probe.body, pointer, value)
                response = await http.request(
                    probe.method, probe.url, headers=probe.headers, json=body
                )
                check_refused(response, pointer, value)
                sent += 1
    loop = asyncio.get_running_loop()
    cases = [(probe, pointer, kind) for probe in probes for pointer, kind in probe.fields.items()]

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        nonlocal sent
        probe, pointer, kind = data.draw(st.sampled_from(cases), label="field")
        value = data.draw(WRONG[kind], label="value")
        body = replaced(probe.body, pointer, value)
        request = http.request(probe.method, probe.url, headers=probe.headers, json=body)
        response = asyncio.run_coroutine_threadsafe(request, loop).result(timeout=60)
        sent += 1
        check_refused(response, pointer, value)

    await asyncio.to_thread(run)
    assert await snapshot() == before
    return sent
