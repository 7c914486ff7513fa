"""The notifications OpenAPI fuzzed with schemathesis: no 5xx, no answer its schema does not allow.

Generated requests, valid and invalid (schemathesis' positive and negative modes), against every
operation, as an operator and as a partner (real tokens from the session JWKS), with random
identifiers and with those of the partner's real endpoint, e-mail channel, delivery and event
type. Every answer must be documented (status code, media type, headers) and match its schema,
so every error must be a well-formed problem document.

The app runs in the session event loop, where its pool and broker clients live; the Hypothesis
runs are synchronous, in a worker thread that hands each request to the app on that loop. DNS is
answered by a stub (every name is a public address), so generated host names cost no lookups.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from openapi_fuzzing import MODES, Fuzzer, describe

from maillage.common.ratelimit import TokenBucket

if TYPE_CHECKING:  # the fixtures' types; pytest itself loads conftest
    from services.notifications.tests.conftest import Notifications

BASE_URL = "http://notifications"
# Examples per operation, generation mode, caller and target (random or real).
MAX_EXAMPLES = 12
# Valid cases with one hostile value each (lone surrogates, NUL, long strings, deep nesting,
# extreme date-times, forged cursors), per operation, caller and target: never a 5xx.
HOSTILE_EXAMPLES = 6
PATH_PARAMETERS = ("endpoint_id", "channel_id", "delivery_id", "event_type")

pytestmark = pytest.mark.filterwarnings(
    # Schemathesis draws from `random` inside its strategies; Hypothesis seeds `random` for each
    # example (deterministically, with derandomize), so the runs stay reproducible.
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)


async def public_dns(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


@pytest.fixture
async def fuzzed(notifications: Notifications) -> AsyncIterator[Notifications]:
    """The app with stub DNS and no rate limit: requests reach the routes."""
    state = notifications.app.state
    resolver, limits = state.webhook_resolver, state.rate_limits
    state.webhook_resolver = public_dns
    state.rate_limits = {"email confirmation": TokenBucket(rate=1_000_000, per=60)}
    yield notifications
    state.webhook_resolver, state.rate_limits = resolver, limits


async def seed(notifications: Notifications, http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A partner with a real endpoint, e-mail channel and delivery for the fuzzer to aim at."""
    partner_id, headers = notifications.partner()
    endpoint = await http.post(
        "/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=headers
    )
    channel = await http.post(
        "/email-channels", json={"address": "fuzz@example.org"}, headers=headers
    )
    assert endpoint.status_code == channel.status_code == 201, (endpoint.text, channel.text)
    await notifications.publish(partner_id)
    deliveries = await http.get(
        f"/webhook-endpoints/{endpoint.json()['id']}/deliveries", headers=headers
    )
    [delivery] = deliveries.json()["items"]
    targets = {
        "endpoint_id": endpoint.json()["id"],
        "channel_id": channel.json()["id"],
        "delivery_id": delivery["id"],
        "event_type": "fr.maillage.funding.tranche.approved.v1",
    }
    # A long-lived token: the run outlives the default five minutes.
    bearer = notifications.bearer(partner_id=str(partner_id), roles=["partner"], ttl=3600)
    return bearer, targets


async def test_every_operation_answers_as_documented_under_fuzzing(fuzzed: Notifications) -> None:
    # A 500 comes back as an answer (for not_a_server_error); its traceback is in the logs.
    transport = httpx.ASGITransport(
        app=fuzzed.asgi, raise_app_exceptions=False, client=("192.0.2.30", 40000)
    )
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        partner, targets = await seed(fuzzed, http)
        callers = {
            "operator": fuzzed.bearer(partner_id=None, roles=["operator"], ttl=3600),
            "partner": partner,
        }
        document = await http.get("/openapi.json")
        schema = schemathesis.openapi.from_dict(document.json())
        fuzzer = Fuzzer(asyncio.get_running_loop(), http, BASE_URL, MAX_EXAMPLES)
        failures: list[str] = []

        def fuzz_everything() -> None:
            for result in schema.get_all_operations():
                operation = result.ok()
                if operation.path.startswith(("/admin", "/livez", "/readyz")):
                    continue  # the chassis' own routes: fuzzed with the registry
                real = {
                    name: targets[name]
                    for name in PATH_PARAMETERS
                    if f"{{{name}}}" in operation.path
                }
                choices: list[dict[str, Any] | None] = [None] + ([real] if real else [])
                for who, authorization in callers.items():
                    for mode in MODES:
                        for target in choices:
                            try:
                                fuzzer.fuzz(operation, mode, authorization, target)
                            # FailureGroup, or Hypothesis' group of distinct failures, is a
                            # BaseExceptionGroup; anything else is a bug of its own.
                            except (Exception, BaseExceptionGroup) as error:
                                failures.append(
                                    f"{operation.label} ({mode.value}, {who}, {target}):\n"
                                    + describe(error)
                                )
                    for target in choices:
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
    # The fuzzer reached the routes, not only the validation in front of them.
    assert {200, 201, 204, 404, 422} <= set(fuzzer.statuses)
