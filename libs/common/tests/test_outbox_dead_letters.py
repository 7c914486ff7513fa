"""No single event may stall the relay (issue 16 §1).

An event over the producer's limit is refused inside its business transaction (nothing commits);
a row the broker refuses for good anyway is set aside as an outbox dead letter, named by
/readyz, listed and moved back by ``maillage dlq``, while the rows behind it flow.

The broker with a small limit: the embedded tansu (0.6) takes records of any size and ignores a
topic's ``max.message.bytes`` (checked by hand: a 100 kB record to a topic configured for
2,000 bytes is accepted). So the limit is the relay producer's ``max_request_size``, set small
through the service's ``KAFKA_MAX_MESSAGE_BYTES``: aiokafka then refuses the record with
``MessageSizeTooLargeError``, the very error of the attack (1,049,261 bytes over aiokafka's
default 1 MiB). A broker's own refusal (error 10, the same class) takes the same path after one
try alone (``_send_alone_or_set_aside``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka.errors import MessageSizeTooLargeError
from asgi_lifespan import LifespanManager
from backbone_world import ThingChanged, World, read_topic, wait_until
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from maillage.common import outbox
from maillage.common.db import transaction
from maillage.common.http import create_app
from maillage.common.outbox import EventTooLarge, publish
from maillage.common.settings import ServiceSettings

MAILLAGE = str(Path(sys.executable).parent / "maillage")
SMALL_LIMIT = 8_192


@pytest.fixture
def default_limit() -> Iterator[None]:
    """The module-wide limit back to its default after the test (create_app sets it)."""
    yield
    outbox.set_max_message_bytes(outbox.DEFAULT_MAX_MESSAGE_BYTES)


async def test_an_event_over_the_limit_is_refused_in_its_transaction(
    world: World, pool: asyncpg.Pool, default_limit: None
) -> None:
    outbox.set_max_message_bytes(SMALL_LIMIT)

    async def change_with_a_big_event() -> None:
        async with transaction(pool) as connection:
            await connection.execute("INSERT INTO things VALUES ('big', 1)")
            await publish(
                connection,
                ThingChanged(thing_id="big", seq=1, note="é" * SMALL_LIMIT),
                catalog=world.catalog,
            )

    with pytest.raises(EventTooLarge) as refused:
        await change_with_a_big_event()
    problem = refused.value
    assert (problem.status, problem.code) == (422, "event_too_large")
    assert problem.extensions["limit"] == SMALL_LIMIT - outbox.RELAY_HEADROOM_BYTES
    assert problem.extensions["size"] > 2 * SMALL_LIMIT  # bytes, not characters
    assert await pool.fetchval("SELECT count(*) FROM things") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0

    # Just under the limit goes through.
    async with transaction(pool) as connection:
        await publish(
            connection, ThingChanged(thing_id="fits", seq=1, note="x" * 6000), catalog=world.catalog
        )
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


def maillage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MAILLAGE, *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_a_row_the_broker_refuses_is_set_aside_and_the_rows_behind_flow(
    world: World, pool: asyncpg.Pool, default_limit: None
) -> None:
    spans = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    settings = ServiceSettings(
        service_name=world.service,
        environment="test",
        database_url=world.database_url,
        kafka_bootstrap_servers=world.bootstrap,
        kafka_idempotent_producer=world.idempotent,
        kafka_max_message_bytes=SMALL_LIMIT,
    )
    app = create_app(
        settings, title="t", description="t", migrations=world.migrations, catalog=world.catalog
    )
    # The service was told more than its broker takes (or the rows were written before the
    # check existed): they reach the outbox, and the broker side refuses the big one.
    outbox.set_max_message_bytes(outbox.DEFAULT_MAX_MESSAGE_BYTES)
    async with LifespanManager(app, startup_timeout=60) as manager:
        async with transaction(pool) as connection:
            for thing_id, note in (("a", ""), ("big", "x" * 50_000), ("b", ""), ("c", "")):
                await publish(
                    connection,
                    ThingChanged(thing_id=thing_id, seq=1, note=note),
                    catalog=world.catalog,
                )
        big = await pool.fetchval("SELECT event_id FROM outbox WHERE key = 'big'")
        records = await read_topic(world.bootstrap, world.topic.name, at_least=3)
        assert sorted(record.key for record in records) == [b"a", b"b", b"c"]

        async def set_aside() -> bool:
            return await pool.fetchval("SELECT count(*) FROM outbox_dead_letters") == 1

        assert await wait_until(set_aside)
        row = await pool.fetchrow("SELECT * FROM outbox_dead_letters")
        assert row["event_id"] == big
        assert row["error"].startswith("MessageSizeTooLargeError")
        # Recorded as a span whatever the sampling (decision 50).
        (set_aside_span,) = [
            s for s in spans.get_finished_spans() if s.name == f"{world.topic.name} set aside"
        ]
        assert set_aside_span.attributes is not None
        assert set_aside_span.attributes["messaging.message.id"] == str(big)
        assert set_aside_span.status.status_code == StatusCode.ERROR
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

        # The rows behind keep flowing, and /readyz stays ready but names the set-aside event.
        async with transaction(pool) as connection:
            await publish(connection, ThingChanged(thing_id="d", seq=1), catalog=world.catalog)
        records = await read_topic(world.bootstrap, world.topic.name, at_least=4)
        assert b"d" in {record.key for record in records}
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert str(big) in ready.json()["attention"]["outbox_dead_letters"]

        async def counted() -> bool:
            return app.state.runtime.relay.status.dead_letters == 1

        assert await wait_until(counted)

    # Listed and moved back by `maillage dlq` (the broker's limit raised in the meantime).
    where = ["--service", world.service, "--bootstrap", world.bootstrap]
    where += ["--database-url", world.database_url]
    listed = maillage("dlq", "list", *where)
    assert listed.returncode == 0, listed.stderr
    assert f"outbox  set aside  {big}  {world.event_type}" in listed.stdout
    assert "MessageSizeTooLargeError" in listed.stdout
    moved = maillage("dlq", "replay", *where, "--event-id", str(big))
    assert moved.returncode == 0, moved.stderr
    assert f"moved {big} ({world.event_type}) back to the outbox" in moved.stdout
    assert await pool.fetchval("SELECT count(*) FROM outbox_dead_letters") == 0

    relay = outbox.OutboxRelay(
        world.database_url, world.bootstrap, service=world.service, idempotent=world.idempotent
    )
    task = asyncio.create_task(relay.run())
    try:
        records = await read_topic(world.bootstrap, world.topic.name, at_least=5)
    finally:
        relay.stop()
        await task
    replayed = [record for record in records if record.key == b"big"]
    assert [dict(record.headers)["ce_id"].decode() for record in replayed] == [str(big)]


class BatchRefusingBroker:
    """Stands for a broker that answers MESSAGE_TOO_LARGE for a whole batch when one record of
    it is over ``limit`` (tansu never refuses): every record sent in one pass is one batch."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: list[tuple[asyncio.Future[None], bytes, bytes]] = []
        self.delivered: list[bytes] = []

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: object
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.pending:
            asyncio.get_running_loop().call_soon(self._answer)
        self.pending.append((future, key, value))
        return future

    def _answer(self) -> None:
        batch, self.pending = self.pending, []
        refused = any(len(value) > self.limit for _, _, value in batch)
        for future, key, _ in batch:
            if refused:
                future.set_exception(MessageSizeTooLargeError("the batch is too large"))
            else:
                future.set_result(None)
                self.delivered.append(key)

    async def send_and_wait(self, topic: str, value: bytes, key: bytes, headers: object) -> None:
        if len(value) > self.limit:
            raise MessageSizeTooLargeError("the record is too large")
        self.delivered.append(key)

    async def stop(self) -> None:
        pass


async def test_a_batch_the_broker_refuses_sets_aside_only_its_own_culprit(
    world: World, pool: asyncpg.Pool
) -> None:
    """The broker refuses a batch for one record in it: each refused row is tried alone, so only
    the culprit is set aside, and its neighbours, before and after it, are published."""
    async with transaction(pool) as connection:
        for thing_id, note in (("a", ""), ("big", "x" * 5_000), ("b", ""), ("c", "")):
            await publish(
                connection,
                ThingChanged(thing_id=thing_id, seq=1, note=note),
                catalog=world.catalog,
            )
    relay = outbox.OutboxRelay(world.database_url, world.bootstrap, service=world.service)
    broker = BatchRefusingBroker(limit=1_000)
    relay._producer = broker  # type: ignore[assignment]
    async with pool.acquire() as connection:
        for _ in range(10):
            if not await relay._publish_batch(connection):
                break
    assert sorted(broker.delivered) == [b"a", b"b", b"c"]
    assert await pool.fetchval("SELECT key FROM outbox_dead_letters") == "big"
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
