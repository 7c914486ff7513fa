"""End to end, as partners live it: the five services as real processes under ``maillage dev``.

A tête de cordée and a REP+ collège register with the registry (the collège is verified when the
code mailed to its institutional mailbox comes back, the tête by an operator) and receive API
credentials (the tête with its registration access token); each subscribes a webhook endpoint (a
local receiver that verifies every delivery with the official ``standardwebhooks`` library); the
tête opens a cordée offer; the collège asks for a match; the tête's endpoint receives the
proposal; the tête accepts; both endpoints receive the pairing. Each partner request carries a
W3C ``traceparent`` of the test's own, and the test checks that the webhooks it caused arrive in
that same trace, and that the spans the services exported to an OTLP sink form one trace from the
HTTP call to the webhook. The services sample no new trace at all (``TRACE_SAMPLE_RATIO=0``): the
two traced requests are kept whole only because their sampled ``traceparent`` decides for every
span after it (decision 50), and every other request leaves no span. Last, an operator suspends
the tête, and every service refuses its still-valid token within seconds.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from backbone_world import read_topic
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from otlp_sink import ExportedSpan, OtlpSink
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maillage.cli.demo import DEMO_PARTNERS
from maillage.cli.dev import SERVICES
from maillage.cli.embedded import free_port, free_ports
from maillage.registry import reference

MAILLAGE = str(Path(sys.executable).parent / "maillage")
DATA = Path(reference.__file__).parent / "data"
SCHOOL_YEAR = "2026-2027"
SERVER, CLIENT = 2, 3  # OTLP's SPAN_KIND_SERVER, SPAN_KIND_CLIENT
tracer = trace.get_tracer(__name__)
pytestmark = pytest.mark.slow


# --- the partners' webhook receiver ------------------------------------------------------------


@dataclass
class Webhooks:
    """One uvicorn app on loopback serving ``/hooks/<partner>``; verifies with each secret."""

    secrets: dict[str, str] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/hooks/{partner}", self._hook, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _hook(self, request: Request) -> Response:
        partner = request.path_params["partner"]
        body = await request.body()
        headers = dict(request.headers)
        try:
            payload = Webhook(self.secrets[partner]).verify(body, headers)
        except (KeyError, WebhookVerificationError):
            return Response(status_code=401)
        with self._lock:
            self.received.append(
                {
                    "partner": partner,
                    "webhook_id": headers["webhook-id"],
                    "type": payload["type"],
                    "data": payload["data"],
                    "trace_id": _trace_id(headers.get("traceparent", "")),
                }
            )
        return Response(status_code=204)

    def url(self, partner: str) -> str:
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks/{partner}"

    def wait_for(self, partner: str, event_type: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for item in self.received:
                    if item["partner"] == partner and item["type"] == event_type:
                        return item
            time.sleep(0.1)
        raise AssertionError(f"{partner} received no {event_type}; got {self.received}")

    def __enter__(self) -> Webhooks:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the webhook receiver did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def _trace_id(traceparent: str) -> str:
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


@contextmanager
def partner_trace(name: str) -> Iterator[str]:
    """A span of the test's own around a partner's calls: the instrumented httpx client sends
    its ``traceparent``, so the services continue this trace. Yields the trace id."""
    with tracer.start_as_current_span(name) as span:
        yield format(span.get_span_context().trace_id, "032x")


@contextmanager
def unsampled_trace() -> Iterator[str]:
    """A trace the caller decided not to sample: its calls send ``traceparent`` with the sampled
    flag off, and the services must record nothing of it. Yields the trace id."""
    ids = random.SystemRandom()
    context = SpanContext(
        trace_id=ids.getrandbits(128),
        span_id=ids.getrandbits(64),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )
    with trace.use_span(NonRecordingSpan(context)):
        yield format(context.trace_id, "032x")


# --- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    urls: dict[str, str]
    registry_database_url: str
    output: list[str]
    mail_dir: Path  # maillage dev's mailbox: one .eml per mail sent
    bootstrap: str  # maillage dev's broker


def mailed_code(mail_dir: Path, mailbox: str) -> str | None:
    """The eight-digit code of the newest mail to ``mailbox`` in the dev mailbox, if any."""
    for path in sorted(mail_dir.glob("*.eml"), reverse=True):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        if message["To"] != mailbox or not isinstance(message, EmailMessage):
            continue
        body = message.get_body(preferencelist=("plain",))
        found = re.search(r"^\s*(\d{8})\s*$", body.get_content() if body else "", re.MULTILINE)
        if found:
            return found.group(1)
    return None


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as started:
        yield started


@pytest.fixture
def stack(tmp_path: Path, sink: OtlpSink) -> Iterator[Stack]:
    port_base = free_ports(len(SERVICES) + 1)  # + the console (spans go to a sink)
    postgres_port = free_port()
    broker_port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    env.update(
        NO_COLOR="1",
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_METRIC_EXPORT_INTERVAL="600000",
        # No new trace is kept: only the partners' sampled traceparent decides (decision 50).
        **{f"{name.upper()}_TRACE_SAMPLE_RATIO": "0" for name in SERVICES},
        # The partners' receivers are on loopback and speak http: allowed for this test only.
        NOTIFICATIONS_WEBHOOK_ALLOW_HTTP="true",
        NOTIFICATIONS_WEBHOOK_ALLOWED_HOSTS='["127.0.0.1"]',
    )
    process = subprocess.Popen(
        [
            MAILLAGE,
            "dev",
            "--data-dir",
            str(tmp_path / "data"),
            "--port-base",
            str(port_base),
            "--broker-port",
            str(broker_port),
            "--postgres-port",
            str(postgres_port),
            "--smtp-port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("logs follow" in line for line in lines):
            assert process.poll() is None, "\n".join(lines[-80:])
            assert time.monotonic() < deadline, "\n".join(lines[-80:])
            time.sleep(0.2)
        yield Stack(
            urls={
                name: f"http://127.0.0.1:{port_base + index}" for index, name in enumerate(SERVICES)
            },
            registry_database_url=f"postgresql://postgres@127.0.0.1:{postgres_port}/registry",
            output=lines,
            mail_dir=tmp_path / "data" / "mail",
            bootstrap=f"127.0.0.1:{broker_port}",
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def maillage(*arguments: str, **variables: str) -> str:
    result = subprocess.run(
        [MAILLAGE, *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, **variables},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


# --- helpers over HTTP -------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def partner_token(http: httpx.Client, registry: str, creator: str, partner_id: str) -> str:
    """A client-credentials token of a new API client, created with ``creator``'s token (an
    operator's, or the partner's registration access token)."""
    client = http.post(
        f"{registry}/partners/{partner_id}/clients", json={"name": "e2e"}, headers=bearer(creator)
    )
    assert client.status_code == 201, client.text
    basic = base64.b64encode(
        f"{client.json()['client_id']}:{client.json()['client_secret']}".encode()
    ).decode()
    issued = http.post(
        f"{registry}/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert issued.status_code == 200, issued.text
    token: str = issued.json()["access_token"]
    return token


def until(check: Any, what: str, timeout: float = 60) -> Any:
    """Retry ``check()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def demo_partner(legal_name_start: str) -> dict[str, Any]:
    return next(p for p in DEMO_PARTNERS if p["legal_name"].startswith(legal_name_start))


def spans_by_service(spans: list[ExportedSpan]) -> dict[str, list[str]]:
    by_service: dict[str, list[str]] = {}
    for span in spans:
        by_service.setdefault(span.service, []).append(span.name)
    return by_service


# --- the flow ----------------------------------------------------------------------------------


def test_a_cordee_from_registration_to_pairing(stack: Stack, sink: OtlpSink) -> None:
    registry, cordees, notifications = (
        stack.urls["registry"],
        stack.urls["cordees"],
        stack.urls["notifications"],
    )
    maillage(
        "registry",
        "import-annuaire",
        str(DATA / "annuaire-education-demo-94.csv"),
        "--education-prioritaire",
        str(DATA / "education-prioritaire-demo-94.csv"),
        "--database-url",
        stack.registry_database_url,
    )
    maillage(
        "registry",
        "create-staff",
        "operator@e2e.test",
        "--role",
        "operator",
        "--database-url",
        stack.registry_database_url,
        MAILLAGE_STAFF_PASSWORD="e2e-operator-password",
    )

    with Webhooks() as webhooks, httpx.Client(timeout=15) as http:
        login = http.post(
            f"{registry}/oauth/token",
            data={
                "grant_type": "password",
                "username": "operator@e2e.test",
                "password": "e2e-operator-password",
            },
        )
        assert login.status_code == 200, login.text
        operator = login.json()["access_token"]

        # Registration: the tête is verified by the operator; the collège's facts come from the
        # reference data (REP+).
        tete = http.post(f"{registry}/partners", json=demo_partner("EFREI"))
        assert tete.status_code == 201, tete.text
        tete_id = tete.json()["id"]
        verified = http.post(
            f"{registry}/partners/{tete_id}/verify",
            json={"reason": "e2e"},
            headers=bearer(operator),
        )
        assert verified.status_code == 200, verified.text
        college = http.post(f"{registry}/partners", json=demo_partner("Collège Robert Desnos"))
        assert college.status_code == 201, college.text
        college_id = college.json()["id"]
        assert college.json()["education_prioritaire"] == "REP+"
        # The collège proves control of its institutional mailbox (the Annuaire's Mail column):
        # the code notifications mailed lands in maillage dev's mailbox (decision 41).
        assert college.json()["status"] == "pending"
        mailbox = college.json()["school_claim"]["mailbox"]
        code = until(lambda: mailed_code(stack.mail_dir, mailbox), f"the code mailed to {mailbox}")
        proven = http.post(
            f"{registry}/partners/{college_id}/school-claim",
            json={"code": code},
            headers=bearer(college.json()["registration_access_token"]),
        )
        assert proven.status_code == 200, proven.text
        assert proven.json()["status"] == "verified"
        # The code crossed the bus sealed for notifications alone (decision 63): no record of
        # the claims topic, key, value or header, holds it.
        claims = asyncio.run(read_topic(stack.bootstrap, "registry.school-claims", at_least=1))
        assert claims
        for record in claims:
            assert code.encode() not in b"".join(
                [record.key or b"", record.value or b"", *(v for _, v in record.headers)]
            )

        # The tête gets its first API client with its registration access token; the collège
        # through the operator.
        tete_token = partner_token(
            http, registry, tete.json()["registration_access_token"], tete_id
        )
        college_token = partner_token(http, registry, operator, college_id)

        # Both subscribe a webhook endpoint; the secret is shown once.
        for name, token in (("tete", tete_token), ("college", college_token)):
            endpoint = http.post(
                f"{notifications}/webhook-endpoints",
                json={"url": webhooks.url(name), "event_types": []},
                headers=bearer(token),
            )
            assert endpoint.status_code == 201, endpoint.text
            webhooks.secrets[name] = endpoint.json()["secret"]

        # The tête opens an offer once cordees has heard of it from the registry's events.
        def open_offer() -> httpx.Response | None:
            response = http.post(
                f"{cordees}/offers",
                json={
                    "school_year": SCHOOL_YEAR,
                    "capacity": 2,
                    "levels": ["4e", "3e"],
                    "thematics": ["numerique", "sciences"],
                    "max_distance_km": 30,
                },
                headers={**bearer(tete_token), "Idempotency-Key": "e2e-offer"},
            )
            return response if response.status_code == 201 else None

        with unsampled_trace() as offer_trace:
            offer = until(open_offer, "the tête to be known to cordees")
        offer_id = offer.json()["id"]
        opened = webhooks.wait_for("tete", "fr.maillage.cordees.offer.opened.v1")
        assert opened["trace_id"] == offer_trace  # told, though never recorded

        # The collège asks for a match, under a trace of the test's own.
        def ask() -> httpx.Response | None:
            response = http.post(
                f"{cordees}/match-requests",
                json={"school_year": SCHOOL_YEAR, "thematics": ["numerique"]},
                headers={
                    **bearer(college_token),
                    "Idempotency-Key": "e2e-request",
                },
            )
            return response if response.status_code == 202 else None

        with partner_trace("the collège asks for a match") as request_trace:
            accepted = until(ask, "the collège to be known to cordees")
        request_id = accepted.json()["id"]
        assert accepted.headers["location"].endswith(f"/match-requests/{request_id}")

        proposal = webhooks.wait_for("tete", "fr.maillage.cordees.match-request.proposed.v1")
        assert proposal["data"]["request_id"] == request_id
        assert proposal["data"]["offer_id"] == offer_id
        assert proposal["data"]["school_partner_id"] == college_id
        assert proposal["trace_id"] == request_trace
        status = http.get(f"{cordees}/match-requests/{request_id}", headers=bearer(college_token))
        assert status.json()["priority_class"] == "REP+"
        explanation = status.json()["proposal"]["explanation"]
        assert sum(part["points"] for part in explanation["parts"]) == explanation["score"]

        # The tête accepts: both receive the pairing, in the trace of the acceptance.
        with partner_trace("the tête accepts") as accept_trace:
            accept = http.post(
                f"{cordees}/match-requests/{request_id}/accept", headers=bearer(tete_token)
            )
        assert accept.status_code == 200, accept.text
        for partner in ("tete", "college"):
            pairing = webhooks.wait_for(partner, "fr.maillage.cordees.pairing.established.v1")
            assert pairing["data"]["offer_id"] == offer_id
            assert pairing["data"]["school_partner_id"] == college_id
            assert pairing["data"]["tete_partner_id"] == tete_id
            assert pairing["trace_id"] == accept_trace

        # Every endpoint got each event once (the webhook-id is the event id, the same for both
        # partners), all verified: the receiver refuses anything else.
        deliveries = [(item["partner"], item["webhook_id"]) for item in webhooks.received]
        assert len(deliveries) == len(set(deliveries))

        # An operator suspends the tête: within seconds, its unexpired token changes nothing in
        # any service (decision 40), while reads go on.
        suspended = http.post(
            f"{registry}/partners/{tete_id}/suspend",
            json={"reason": "e2e audit"},
            headers=bearer(operator),
        )
        assert suspended.status_code == 200, suspended.text
        writes = {
            "registry": lambda: http.patch(
                f"{registry}/partners/{tete_id}",
                json={"commune_name": "Villejuif"},
                headers=bearer(tete_token),
            ),
            "cordees": lambda: http.post(
                f"{cordees}/offers",
                json={
                    "school_year": SCHOOL_YEAR,
                    "capacity": 1,
                    "levels": ["3e"],
                    "thematics": ["numerique"],
                },
                headers=bearer(tete_token),
            ),
            "notifications": lambda: http.post(
                f"{notifications}/webhook-endpoints",
                json={"url": webhooks.url("tete"), "event_types": []},
                headers=bearer(tete_token),
            ),
        }
        for service, write in writes.items():
            refused = until(
                lambda write=write: (r := write()).status_code == 403 and r,
                f"{service} to refuse the suspended tête",
                timeout=20,
            )
            assert refused.json()["code"] == "partner_not_in_good_standing", service
        assert http.get(f"{cordees}/offers/{offer_id}", headers=bearer(tete_token)).is_success

    # One trace per request, from the HTTP call in cordees to the webhook sent by notifications.
    def whole_trace(trace_id: str) -> list[ExportedSpan] | None:
        spans = sink.trace(trace_id)
        services = {span.service for span in spans}
        webhook_sent = any(
            span.kind == CLIENT and span.name == "webhook attempt"
            for span in spans
            if span.service == "maillage-notifications"
        )
        return spans if "maillage-cordees" in services and webhook_sent else None

    for trace_id in (request_trace, accept_trace):
        spans = until(lambda t=trace_id: whole_trace(t), f"the spans of {trace_id}", timeout=30)
        by_service = spans_by_service(spans)
        # The partner's request is the root: every other span descends from it.
        ids = {span.span_id for span in spans}
        roots = [span for span in spans if span.parent_span_id not in ids]
        assert len(roots) == 1, (roots, by_service)
        assert roots[0].service == "maillage-cordees"
        print(trace_id, {service: len(names) for service, names in by_service.items()})
    # The offer was opened in an unsampled trace: its webhook arrived in that trace, and no
    # service exported a single span of it.
    assert sink.trace(offer_trace) == []
    # The services start no trace (ratio 0): every exported span is in a trace the test's sampled
    # calls started, and none is an orphan. Within a trace, the only spans whose parent was not
    # exported are SERVER spans (their parent is the test's call), and the failures, which are
    # always recorded as roots of their own.
    failures = ("unhandled error", "outbox relay publish failed")

    def orphans() -> list[ExportedSpan]:
        by_trace: dict[str, list[ExportedSpan]] = {}
        for span in sink.spans:
            by_trace.setdefault(span.trace_id, []).append(span)
        found = []
        for spans in by_trace.values():
            ids = {span.span_id for span in spans}
            found += [
                span
                for span in spans
                if span.parent_span_id not in ids
                and span.kind != SERVER
                and span.name not in failures
                and not span.name.startswith("dlq.")
            ]
        return found

    # A request's spans reach the sink in batches (every 200 ms here): a child that ended first
    # may come a batch before its SERVER parent, which ends once the answer has gone (a CI run
    # checked in between). An orphan is a span whose parent never comes.
    deadline = time.monotonic() + 5
    while (left := orphans()) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert left == [], spans_by_service(left)
