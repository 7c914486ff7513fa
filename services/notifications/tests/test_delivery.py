"""The webhook delivery worker against real receivers: uvicorn apps on 127.0.0.1.

Every request a receiver gets is verified with the official ``standardwebhooks`` library; the
deliveries, attempts and due times are read back from a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from opentelemetry import trace
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maillage.common.db import create_pool, migrate_service, transaction
from maillage.common.logging import configure_logging
from maillage.notifications import signing, store
from maillage.notifications.delivery import DeliveryWorker
from maillage.notifications.secretbox import SecretBox

MIGRATIONS = Path(store.__file__).parent / "migrations"
LOOPBACK = frozenset({"127.0.0.0/8"})
BOX = SecretBox("test-only webhook secret encryption key")
ZERO_SCHEDULE = (timedelta(0),) * 8
EVENT_TYPE = "cordees.proposal.created"


# --- the receiver ------------------------------------------------------------------------------


@dataclass
class Received:
    webhook_id: str
    verified: bool
    payload: Any
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]  # the worker's end of the TCP connection


@dataclass
class Receiver:
    """A webhook receiver on loopback: answers the scripted statuses first, then 200."""

    secrets: list[str]
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    answer: bytes = b"ok" * 10_000  # more than the worker reads
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="receiver", daemon=True)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        payload: Any = None
        verified = False
        for secret in self.secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified = True
            break
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            with self._lock:
                self.in_flight -= 1
        with self._lock:
            assert request.client is not None
            peer = (request.client.host, request.client.port)
            self.received.append(
                Received(headers["webhook-id"], verified, payload, headers, body, peer)
            )
            status, extra = self.script.pop(0) if self.script else (200, {})
        return Response(self.answer, status_code=status, headers=extra)

    def start(self) -> Receiver:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the receiver did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.stop()


def receiver(
    receivers: list[Receiver],
    secrets: list[str],
    script: list[tuple[int, dict[str, str]]] | None = None,
) -> Receiver:
    started = Receiver(secrets=list(secrets), script=list(script or [])).start()
    receivers.append(started)
    return started


# --- the database ------------------------------------------------------------------------------


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate_service(database_url, MIGRATIONS)
    pool = await create_pool(database_url)
    yield pool
    await pool.close()


def worker(pool: asyncpg.Pool, **options: Any) -> DeliveryWorker:
    options.setdefault("allow_http", True)
    options.setdefault("allowed_hosts", LOOPBACK)
    options.setdefault("schedule", ZERO_SCHEDULE)
    options.setdefault("secret_box", BOX)
    return DeliveryWorker(pool, **options)


async def endpoint(
    pool: asyncpg.Pool, url: str, secret: str, *, event_types: tuple[str, ...] = ()
) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    async with transaction(pool) as connection:
        return await store.create_endpoint(
            connection,
            endpoint_id=endpoint_id,
            partner_id=uuid.uuid4(),
            url=url,
            sealed_secret=BOX.seal(secret, endpoint_id),
            event_types=event_types,
        )


async def enqueue(pool: asyncpg.Pool, endpoint_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """Queue a fresh event for the endpoint: (delivery id, event id)."""
    event_id = uuid.uuid4()
    body = signing.body_for(EVENT_TYPE, datetime.now(UTC), {"proposal_id": str(uuid.uuid4())})
    async with transaction(pool) as connection:
        delivery_id = await store.enqueue(
            connection,
            endpoint_id=endpoint_id,
            event_id=event_id,
            event_type=EVENT_TYPE,
            payload=body.decode(),
            now=datetime.now(UTC),
        )
    assert delivery_id is not None
    return delivery_id, event_id


async def delivery(pool: asyncpg.Pool, delivery_id: uuid.UUID) -> dict[str, Any]:
    async with pool.acquire() as connection:
        row = await connection.fetchrow("SELECT * FROM deliveries WHERE id = $1", delivery_id)
    assert row is not None
    return dict(row)


async def attempts(pool: asyncpg.Pool, delivery_id: uuid.UUID) -> list[dict[str, Any]]:
    async with pool.acquire() as connection:
        return await store.list_attempts(connection, delivery_id)


# --- the tests ---------------------------------------------------------------------------------


async def test_a_delivery_arrives_once_signed_and_verifiable(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    secret = signing.new_secret()
    hook = receiver(receivers, [secret])
    endpoint_id = await endpoint(pool, hook.url, secret)
    delivery_id, event_id = await enqueue(pool, endpoint_id)

    async with worker(pool) as w:
        assert await w.deliver_due() == 1
        assert await w.deliver_due() == 0

    assert [(r.webhook_id, r.verified) for r in hook.received] == [(str(event_id), True)]
    assert hook.received[0].payload["type"] == EVENT_TYPE
    row = await delivery(pool, delivery_id)
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("delivered", 1, 200)
    assert row["delivered_at"] is not None
    assert row["next_attempt_at"] is None
    [attempt] = await attempts(pool, delivery_id)
    assert attempt["status_code"] == 200
    assert attempt["error"] is None
    assert attempt["duration_ms"] >= 0


async def test_an_event_is_queued_once_per_endpoint(pool: asyncpg.Pool) -> None:
    secret = signing.new_secret()
    partner = uuid.uuid4()
    event_id = uuid.uuid4()
    async with transaction(pool) as connection:
        for url, types in (
            ("https://a.example.org/hook", ()),
            ("https://b.example.org/hook", (EVENT_TYPE,)),
            ("https://c.example.org/hook", ("funding.tranche.approved",)),
        ):
            endpoint_id = uuid.uuid4()
            await store.create_endpoint(
                connection,
                endpoint_id=endpoint_id,
                partner_id=partner,
                url=url,
                sealed_secret=BOX.seal(secret, endpoint_id),
                event_types=types,
            )
        for _ in range(2):
            queued = await store.enqueue_event(
                connection,
                partner_ids=[partner],
                event_id=event_id,
                event_type=EVENT_TYPE,
                payload="{}",
                now=datetime.now(UTC),
            )
            assert queued == (2 if _ == 0 else 0)
        assert len(await store.list_deliveries(connection, event_id=event_id)) == 2


async def test_a_receiver_that_fails_then_recovers_gets_the_event_once(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    secret = signing.new_secret()
    hook = receiver(receivers, [secret], [(500, {}), (500, {})])
    endpoint_id = await endpoint(pool, hook.url, secret)
    delivery_id, event_id = await enqueue(pool, endpoint_id)

    async with worker(pool) as w:
        for _ in range(5):
            await w.deliver_due()

    # Three requests, all with the same webhook-id and a valid signature; the third succeeded.
    assert [(r.webhook_id, r.verified) for r in hook.received] == [(str(event_id), True)] * 3
    row = await delivery(pool, delivery_id)
    assert (row["status"], row["attempts"]) == ("delivered", 3)
    assert [a["status_code"] for a in await attempts(pool, delivery_id)] == [500, 500, 200]
    async with pool.acquire() as connection:
        health = await store.get_endpoint(connection, endpoint_id)
    assert health["enabled"]
    assert health["first_failure_at"] is None


async def test_an_exhausted_schedule_fails_the_delivery(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    secret = signing.new_secret()
    hook = receiver(receivers, [secret], [(503, {})] * 10)
    endpoint_id = await endpoint(pool, hook.url, secret)
    delivery_id, _ = await enqueue(pool, endpoint_id)

    # Three attempts in all: the schedule's first delay is the first attempt's ("at once").
    async with worker(pool, schedule=(timedelta(0),) * 3) as w:
        for _ in range(5):
            await w.deliver_due()

    assert len(hook.received) == 3  # the first attempt and two retries
    row = await delivery(pool, delivery_id)
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("failed", 3, 503)
    assert row["next_attempt_at"] is None


async def test_410_disables_the_endpoint(pool: asyncpg.Pool, receivers: list[Receiver]) -> None:
    secret = signing.new_secret()
    hook = receiver(receivers, [secret], [(410, {})])
    endpoint_id = await endpoint(pool, hook.url, secret)
    gone_id, _ = await enqueue(pool, endpoint_id)

    async with worker(pool, per_endpoint=1, batch_size=1) as w:
        assert await w.deliver_due() == 1
        later_id, _ = await enqueue(pool, endpoint_id)
        assert await w.deliver_due() == 0  # nothing is claimed for a disabled endpoint

    assert len(hook.received) == 1
    assert (await delivery(pool, gone_id))["status"] == "disabled"
    assert (await delivery(pool, later_id))["status"] == "pending"  # kept for a re-enable
    async with pool.acquire() as connection:
        row = await store.get_endpoint(connection, endpoint_id)
    assert row["enabled"] is False
    assert "410" in row["disabled_reason"]


async def test_retry_after_is_honoured(pool: asyncpg.Pool, receivers: list[Receiver]) -> None:
    secret = signing.new_secret()
    hook = receiver(receivers, [secret], [(429, {"retry-after": "120"})])
    endpoint_id = await endpoint(pool, hook.url, secret)
    delivery_id, _ = await enqueue(pool, endpoint_id)
    now = datetime.now(UTC)
    clock = [now]

    async with worker(pool, clock=lambda: clock[0]) as w:
        assert await w.deliver_due() == 1
        row = await delivery(pool, delivery_id)
        # The schedule says "at once"; the receiver said two minutes, and wins.
        assert row["status"] == "pending"
        assert timedelta(seconds=119) <= row["next_attempt_at"] - now <= timedelta(seconds=121)
        clock[0] = now + timedelta(seconds=60)
        assert await w.deliver_due() == 0
        clock[0] = now + timedelta(seconds=121)
        assert await w.deliver_due() == 1

    assert (await delivery(pool, delivery_id))["status"] == "delivered"
    assert len(hook.received) == 2


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://10.0.0.1/hook", LOOPBACK),
        ("http://169.254.169.254/latest/meta-data/", LOOPBACK),
        ("http://[::1]/", LOOPBACK),
        ("http://127.0.0.1:9/hook", frozenset()),  # loopback without the allow-list
    ],
)
async def test_unsafe_targets_are_not_delivered_at_delivery_time(
    pool: asyncpg.Pool, url: str, allowed: frozenset[str]
) -> None:
    endpoint_id = await endpoint(pool, url, signing.new_secret())
    delivery_id, _ = await enqueue(pool, endpoint_id)

    async with worker(pool, schedule=(timedelta(0),) * 2, allowed_hosts=allowed) as w:
        await w.deliver_due()
        await w.deliver_due()
        await w.deliver_due()

    row = await delivery(pool, delivery_id)
    assert row["status"] == "failed"
    assert row["last_status_code"] is None
    tries = await attempts(pool, delivery_id)
    assert len(tries) == 2
    assert all(
        t["status_code"] is None and "webhook_url_address_not_allowed" in t["error"] for t in tries
    )


async def test_a_hostname_resolving_to_a_private_address_is_not_delivered(
    pool: asyncpg.Pool,
) -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        return ["10.1.2.3"]

    endpoint_id = await endpoint(pool, "https://hooks.example.org/x", signing.new_secret())
    delivery_id, _ = await enqueue(pool, endpoint_id)
    async with worker(pool, resolver=rebinding, schedule=(timedelta(0),)) as w:
        await w.deliver_due()
    [attempt] = await attempts(pool, delivery_id)
    assert attempt["status_code"] is None
    assert attempt["error"] == (
        "refused (webhook_url_address_not_allowed): hooks.example.org se résout en 10.1.2.3,"
        " une adresse privée (10.0.0.0/8) : un point de réception de webhooks est sur l'internet"
        " public."
    )
    assert (await delivery(pool, delivery_id))["status"] == "failed"


def resolving(table: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A resolver answering from ``table``, as DNS would (names not in it do not exist)."""

    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


async def test_a_name_is_checked_when_the_connection_opens_and_refused_there(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    secret = signing.new_secret()
    hook = receiver(receivers, [secret])
    port = hook.port
    # A public-looking name whose DNS answer is the receiver on loopback, not allow-listed.
    endpoint_id = await endpoint(pool, f"http://hooks.partner.example:{port}/hook", secret)
    delivery_id, _ = await enqueue(pool, endpoint_id)
    dns = resolving({"hooks.partner.example": ["127.0.0.1"]})

    schedule = (timedelta(0), timedelta(hours=1))
    w = worker(pool, resolver=dns, allowed_hosts=frozenset(), schedule=schedule, poll_interval=0.05)
    running = asyncio.create_task(w.run())
    try:
        async with asyncio.timeout(20):
            while not await attempts(pool, delivery_id):
                await asyncio.sleep(0.05)
    finally:
        w.stop()
        await running  # the refusal is an attempt's outcome, not a crash of the loop

    assert hook.received == []
    [attempt] = await attempts(pool, delivery_id)
    assert attempt["status_code"] is None
    assert attempt["error"].startswith(
        "refused (webhook_url_address_not_allowed): hooks.partner.example se résout en 127.0.0.1,"
        " une adresse de bouclage"
    )
    row = await delivery(pool, delivery_id)
    assert (row["status"], row["attempts"]) == ("pending", 1)  # retried on the schedule


async def test_an_allowed_name_is_delivered_to_with_its_name_and_its_own_connections(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    secret = signing.new_secret()
    # A short answer, read whole: the connection stays open for the next request.
    hook = Receiver(secrets=[secret], answer=b"ok").start()
    receivers.append(hook)
    port = hook.port
    # Two partners' names on one address (a shared host, a CDN): each keeps its own connections.
    names = ("a.receiver.example", "b.receiver.example")
    dns = resolving({name: ["127.0.0.1"] for name in names})
    ids = [await endpoint(pool, f"http://{name}:{port}/hook", secret) for name in names]
    for endpoint_id in ids * 3:
        await enqueue(pool, endpoint_id)

    async with worker(pool, resolver=dns, per_endpoint=1, max_concurrency=2) as w:
        for _ in range(3):
            assert await w.deliver_due() == 2

    assert len(hook.received) == 6
    assert all(r.verified for r in hook.received)
    hosts = {r.headers["host"] for r in hook.received}
    assert hosts == {f"{name}:{port}" for name in names}
    peers = {
        name: {r.peer for r in hook.received if r.headers["host"] == f"{name}:{port}"}
        for name in names
    }
    assert peers[names[0]].isdisjoint(peers[names[1]])
    assert all(len(used) == 1 for used in peers.values())  # kept alive and reused per name


async def test_a_restarted_worker_resumes_the_schedule(
    database_url: str, receivers: list[Receiver]
) -> None:
    await migrate_service(database_url, MIGRATIONS)
    secret = signing.new_secret()
    hook = receiver(receivers, [secret], [(500, {})])
    schedule = (timedelta(0), timedelta(minutes=5), timedelta(minutes=30))

    first_pool = await create_pool(database_url)
    try:
        endpoint_id = await endpoint(first_pool, hook.url, secret)
        delivery_id, event_id = await enqueue(first_pool, endpoint_id)
        now = datetime.now(UTC)
        async with worker(first_pool, schedule=schedule, clock=lambda: now) as first:
            assert await first.deliver_due() == 1
    finally:
        await first_pool.close()  # the process ends

    second_pool = await create_pool(database_url)
    try:
        row = await delivery(second_pool, delivery_id)
        assert (row["status"], row["attempts"]) == ("pending", 1)
        due = row["next_attempt_at"]
        assert timedelta(minutes=4) < due - now < timedelta(minutes=6)  # 5 min ± 10 %
        later = [now + timedelta(minutes=1)]
        async with worker(second_pool, schedule=schedule, clock=lambda: later[0]) as second:
            assert await second.deliver_due() == 0  # not due yet
            later[0] = due
            assert await second.deliver_due() == 1
        row = await delivery(second_pool, delivery_id)
        assert (row["status"], row["attempts"]) == ("delivered", 2)
        assert [a["number"] for a in await attempts(second_pool, delivery_id)] == [1, 2]
    finally:
        await second_pool.close()
    assert [r.webhook_id for r in hook.received] == [str(event_id)] * 2
    assert all(r.verified for r in hook.received)


async def test_a_worker_that_dies_mid_attempt_leaves_the_delivery_due_after_its_lease(
    pool: asyncpg.Pool,
) -> None:
    endpoint_id = await endpoint(pool, "https://hooks.example.org/x", signing.new_secret())
    delivery_id, _ = await enqueue(pool, endpoint_id)
    now = datetime.now(UTC)
    async with transaction(pool) as connection:
        [claimed] = await store.claim_due(
            connection, now=now, limit=10, per_endpoint=4, lease=timedelta(seconds=60)
        )
    assert claimed.id == delivery_id
    # Never recorded: the worker died. Another one sees it only once the lease is over.
    async with transaction(pool) as connection:
        assert (
            await store.claim_due(
                connection, now=now, limit=10, per_endpoint=4, lease=timedelta(seconds=60)
            )
            == []
        )
        again = await store.claim_due(
            connection,
            now=now + timedelta(seconds=61),
            limit=10,
            per_endpoint=4,
            lease=timedelta(seconds=60),
        )
    assert [c.id for c in again] == [delivery_id]


async def test_rotation_signs_with_both_secrets(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    old, new = signing.new_secret(), signing.new_secret()
    only_old = receiver(receivers, [old])
    endpoint_id = await endpoint(pool, only_old.url, old)
    async with transaction(pool) as connection:
        await store.rotate_secret(
            connection,
            endpoint_id,
            BOX.seal(new, endpoint_id),
            now=datetime.now(UTC),
            overlap=timedelta(hours=1),
        )
    await enqueue(pool, endpoint_id)
    async with worker(pool) as w:
        await w.deliver_due()
    [received] = only_old.received
    assert received.verified
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    # Each secret alone verifies the delivery: receivers can switch at any time in the overlap.
    for secret in (old, new):
        assert Webhook(secret).verify(received.body, received.headers)["type"] == EVENT_TYPE


async def test_concurrency_is_bounded_per_endpoint_and_run_delivers_until_stopped(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    secret = signing.new_secret()
    hook = Receiver(secrets=[secret], delay=0.1).start()
    receivers.append(hook)
    endpoint_id = await endpoint(pool, hook.url, secret)
    ids = [(await enqueue(pool, endpoint_id))[0] for _ in range(12)]

    w = worker(pool, per_endpoint=2, max_concurrency=10, poll_interval=0.05)
    running = asyncio.create_task(w.run())
    try:
        async with asyncio.timeout(20):
            while True:
                async with pool.acquire() as connection:
                    done = await store.list_deliveries(
                        connection, endpoint_id=endpoint_id, status="delivered"
                    )
                if len(done) == len(ids):
                    break
                await asyncio.sleep(0.05)
    finally:
        w.stop()
        await running

    assert len(hook.received) == len(ids)
    assert all(r.verified for r in hook.received)
    assert hook.max_in_flight <= 2


async def test_queued_deliveries_wake_an_idle_worker_without_waiting_for_its_poll(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    secret = signing.new_secret()
    hook = receiver(receivers, [secret])
    endpoint_id = await endpoint(pool, hook.url, secret)
    w = worker(pool, poll_interval=3600)
    running = asyncio.create_task(w.run())
    try:
        await asyncio.sleep(0.3)  # it claimed nothing and sleeps until a NOTIFY (or an hour)
        delivery_id, _ = await enqueue(pool, endpoint_id)
        async with asyncio.timeout(10):
            while (await delivery(pool, delivery_id))["status"] != "delivered":
                await asyncio.sleep(0.02)
    finally:
        w.stop()
        await running
    assert [r.verified for r in hook.received] == [True]


async def test_redirects_are_not_followed(pool: asyncpg.Pool, receivers: list[Receiver]) -> None:
    secret = signing.new_secret()
    target = receiver(receivers, [secret])
    hook = receiver(receivers, [secret], [(307, {"location": target.url})])
    endpoint_id = await endpoint(pool, hook.url, secret)
    delivery_id, _ = await enqueue(pool, endpoint_id)
    async with worker(pool, schedule=(timedelta(0),)) as w:
        await w.deliver_due()
    assert target.received == []
    row = await delivery(pool, delivery_id)
    assert (row["status"], row["last_status_code"]) == ("failed", 307)


async def test_an_endpoint_failing_for_days_is_disabled(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    secret = signing.new_secret()
    hook = receiver(receivers, [secret], [(500, {})] * 3)
    endpoint_id = await endpoint(pool, hook.url, secret)
    first_id, _ = await enqueue(pool, endpoint_id)
    now = datetime.now(UTC)
    clock = [now]
    async with worker(pool, clock=lambda: clock[0], disable_after=timedelta(days=5)) as w:
        assert await w.deliver_due() == 1
        async with pool.acquire() as connection:
            assert (await store.get_endpoint(connection, endpoint_id))["enabled"]
        clock[0] = now + timedelta(days=5, seconds=1)
        assert await w.deliver_due() == 1
    async with pool.acquire() as connection:
        row = await store.get_endpoint(connection, endpoint_id)
    assert row["enabled"] is False
    assert row["disabled_reason"].startswith("failing without a success since")
    assert (await delivery(pool, first_id))["status"] == "disabled"


async def test_an_attempt_continues_the_trace_of_the_event_it_carries(
    pool: asyncpg.Pool, receivers: list[Receiver], capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("notifications", fmt="json")
    secret = signing.new_secret()
    hook = receiver(receivers, [secret])
    endpoint_id = await endpoint(pool, hook.url, secret)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("the consumer of the event") as span:
        delivery_id, _ = await enqueue(pool, endpoint_id)
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert (await delivery(pool, delivery_id))["trace_context"]["traceparent"].split("-")[1] == (
        trace_id
    )

    async with worker(pool) as w:
        assert await w.deliver_due() == 1
    [received] = hook.received
    assert received.verified
    # The receiver is told the trace: a partner's own tracing can join the operator's.
    assert received.headers["traceparent"].split("-")[1] == trace_id
    # And the attempt's log line is in it, with the attempt span's id (issue 15 §4).
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    [attempt] = [line for line in lines if line["event"] == "webhook attempt"]
    assert attempt["trace_id"] == trace_id
    assert attempt["span_id"] not in (None, format(span.get_span_context().span_id, "016x"))
