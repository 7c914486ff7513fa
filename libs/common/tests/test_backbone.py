"""The event backbone end to end, in one process: outbox → relay → Kafka → inbox → handler.

Real broker, real PostgreSQL. Faults that need a process killed are in test_backbone_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from backbone_world import (
    ThingChanged,
    World,
    read_topic,
    recording_consumer,
    start_consumers,
    wait_until,
)
from cloudevents.kafka import KafkaMessage as CloudEventsKafkaMessage
from cloudevents.kafka import from_binary

from maillage.common.db import transaction
from maillage.common.inbox import Delivery, EventConsumer, TransientError
from maillage.common.outbox import OutboxRelay, publish, publish_many
from maillage.common.topics import ensure_topics


@pytest.fixture
async def relay(world: World) -> AsyncIterator[OutboxRelay]:
    relay = OutboxRelay(
        world.database_url, world.bootstrap, service=world.service, idempotent=world.idempotent
    )
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        await task


async def publish_thing(pool: asyncpg.Pool, world: World, thing_id: str, seq: int = 1) -> uuid.UUID:
    async with transaction(pool) as connection:
        return await publish(
            connection, ThingChanged(thing_id=thing_id, seq=seq), catalog=world.catalog
        )


async def test_rolled_back_publishes_nothing_committed_publishes_once(
    world: World, pool: asyncpg.Pool, relay: OutboxRelay
) -> None:
    async def change_then_fail() -> None:
        async with transaction(pool) as connection:
            await publish(
                connection, ThingChanged(thing_id="rolled-back", seq=1), catalog=world.catalog
            )
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await change_then_fail()
    event_id = await publish_thing(pool, world, "committed", seq=7)

    records = await read_topic(world.bootstrap, world.topic.name, at_least=1)
    assert [record.key for record in records] == [b"committed"]
    record = records[0]
    event = from_binary(
        CloudEventsKafkaMessage(
            headers={name: value for name, value in record.headers},
            key=record.key,
            value=record.value,
        )
    )
    assert event["specversion"] == "1.0"
    assert event["id"] == str(event_id)
    assert event["type"] == world.event_type
    assert event["source"] == f"/maillage/{world.service}"
    assert event["subject"] == "committed"
    assert event["time"]
    assert event["datacontenttype"] == "application/json"
    assert event.data == {"thing_id": "committed", "seq": 7, "note": ""}
    headers = dict(record.headers)
    assert headers["traceparent"]  # the relay's produce span, for the consumer to continue

    # Marked once: the outbox row is published and nothing remains.
    async def marked() -> bool:
        return await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

    assert await wait_until(marked)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_publish_outside_a_transaction_is_refused(world: World, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await publish(connection, ThingChanged(thing_id="x", seq=1), catalog=world.catalog)


async def test_publish_many_writes_a_batch_in_order_or_nothing(
    world: World, pool: asyncpg.Pool, relay: OutboxRelay
) -> None:
    batch = [ThingChanged(thing_id=f"bulk-{index % 3}", seq=index) for index in range(30)]

    async def publish_then_fail() -> None:
        async with transaction(pool) as connection:
            await publish_many(connection, batch, catalog=world.catalog)
            raise RuntimeError("import failed")

    with pytest.raises(RuntimeError, match="import failed"):
        await publish_then_fail()
    async with pool.acquire() as connection:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await publish_many(connection, batch, catalog=world.catalog)
    async with transaction(pool) as connection:
        assert await publish_many(connection, [], catalog=world.catalog) == []
        ids = await publish_many(connection, batch, catalog=world.catalog)

    records = await read_topic(world.bootstrap, world.topic.name, at_least=30)
    assert len(records) == 30
    by_key: dict[bytes, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(record.key or b"", []).append(json.loads(record.value or b"")["seq"])
    # Per key, in the order of the batch; every event is a CloudEvent with its own id.
    assert by_key == {
        f"bulk-{key}".encode(): [seq for seq in range(30) if seq % 3 == key] for key in range(3)
    }
    received_ids = {dict(record.headers)["ce_id"].decode() for record in records}
    assert received_ids == {str(event_id) for event_id in ids}


async def test_per_key_order_holds_with_concurrent_writers(
    world: World, pool: asyncpg.Pool, relay: OutboxRelay
) -> None:
    keys = [f"thing-{index}" for index in range(50)]
    plan = [key for key in keys for _ in range(20)]  # 1,000 events, 20 per key
    random.Random(7).shuffle(plan)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in plan:
        queue.put_nowait(key)

    async def writer() -> None:
        while not queue.empty():
            key = queue.get_nowait()
            async with transaction(pool) as connection:
                # An aggregate's version, as a real service would bump it; commit order per key.
                seq = await connection.fetchval(
                    """
                    INSERT INTO things (thing_id, seq) VALUES ($1, 1)
                    ON CONFLICT (thing_id) DO UPDATE SET seq = things.seq + 1 RETURNING seq
                    """,
                    key,
                )
                await publish(
                    connection, ThingChanged(thing_id=key, seq=seq), catalog=world.catalog
                )

    consumer = recording_consumer(world)
    async for _ in start_consumers(world, pool, consumer):
        await asyncio.gather(*(writer() for _ in range(16)))

        async def all_applied() -> bool:
            return await pool.fetchval("SELECT count(*) FROM effects") >= len(plan)

        assert await wait_until(all_applied, timeout=90)
        records = await read_topic(world.bootstrap, world.topic.name, at_least=len(plan))

    on_the_wire: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        on_the_wire.setdefault(record.key.decode(), []).append(json.loads(record.value)["seq"])
    assert on_the_wire == {key: list(range(1, 21)) for key in keys}
    applied = await pool.fetch("SELECT thing_id, seq FROM effects ORDER BY id")
    in_effect: dict[str, list[int]] = {}
    for row in applied:
        in_effect.setdefault(row["thing_id"], []).append(row["seq"])
    assert in_effect == {key: list(range(1, 21)) for key in keys}


async def test_a_poison_message_is_dead_lettered_and_the_partition_keeps_flowing(
    world: World, pool: asyncpg.Pool, relay: OutboxRelay
) -> None:
    from maillage.common import dlq
    from maillage.common.inbox import DeadLetterProducer

    broken = {"yes": True}
    consumer = EventConsumer(f"{world.service}.fragile", [world.topic], catalog=world.catalog)
    await ensure_topics(world.bootstrap, [(consumer.dead_letter_topic, 1)])

    @consumer.handler(ThingChanged)
    async def fragile(event: ThingChanged, delivery: Delivery) -> None:
        if event.note == "poison" and broken["yes"]:
            raise KeyError("a bug in the handler")
        await delivery.connection.execute(
            "INSERT INTO effects (event_id, thing_id, seq, consumer)"
            " VALUES ($1, $2, $3, 'fragile')",
            delivery.envelope.id,
            event.thing_id,
            event.seq,
        )

    async for _ in start_consumers(world, pool, consumer):
        # Same key, so same partition: the poison sits between two good events.
        await publish_thing(pool, world, "same", 1)
        async with transaction(pool) as connection:
            poison_id = await publish(
                connection,
                ThingChanged(thing_id="same", seq=2, note="poison"),
                catalog=world.catalog,
            )
        await publish_thing(pool, world, "same", 3)

        async def good_ones_applied() -> bool:
            return await pool.fetchval("SELECT count(*) FROM effects") == 2

        assert await wait_until(good_ones_applied)
        letters = await dlq.list_dead_letters(world.bootstrap, [consumer.dead_letter_topic])
        assert len(letters) == 1
        letter = letters[0]
        assert letter.event_id == str(poison_id)
        assert letter.original_topic == world.topic.name
        assert letter.consumer_group == consumer.group
        assert letter.error_class == "builtins.KeyError"
        assert "a bug in the handler" in letter.error_message
        assert letter.attempts == 1
        assert letter.original_offset >= 0
        assert not letter.replayed

        broken["yes"] = False  # the handler is fixed and redeployed
        producer = DeadLetterProducer(
            world.bootstrap, client_id="replay", idempotent=world.idempotent
        )
        try:
            replayed = await dlq.replay_all(world.bootstrap, [consumer.dead_letter_topic], producer)
            assert [r.event_id for r in replayed] == [str(poison_id)]
            # A second "all" replays nothing more; replaying the event by id again is harmless.
            assert (
                await dlq.replay_all(world.bootstrap, [consumer.dead_letter_topic], producer) == []
            )
            await dlq.replay_event(
                world.bootstrap, [consumer.dead_letter_topic], poison_id, producer
            )
        finally:
            await producer.stop()

        async def poison_applied() -> bool:
            return await pool.fetchval("SELECT count(*) FROM effects WHERE seq = 2") == 1

        assert await wait_until(poison_applied)
        await asyncio.sleep(1.0)  # let the second replay arrive: it must be skipped
        assert await pool.fetchval("SELECT count(*) FROM effects WHERE seq = 2") == 1
        assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", poison_id) == 1
        listed = await dlq.list_dead_letters(world.bootstrap, [consumer.dead_letter_topic])
        assert [letter.replayed for letter in listed] == [True]


async def test_a_transient_failure_is_retried_without_a_dead_letter(
    world: World, pool: asyncpg.Pool, relay: OutboxRelay
) -> None:
    from maillage.common import dlq

    attempts: list[int] = []
    consumer = EventConsumer(f"{world.service}.flaky", [world.topic], catalog=world.catalog)
    await ensure_topics(world.bootstrap, [(consumer.dead_letter_topic, 1)])

    @consumer.handler(ThingChanged)
    async def flaky(event: ThingChanged, delivery: Delivery) -> None:
        attempts.append(event.seq)
        if len(attempts) <= 2:
            raise TransientError("the resource is busy")
        await delivery.connection.execute(
            "INSERT INTO effects (event_id, thing_id, seq, consumer) VALUES ($1, $2, $3, 'flaky')",
            delivery.envelope.id,
            event.thing_id,
            event.seq,
        )

    async for _ in start_consumers(world, pool, consumer):
        await publish_thing(pool, world, "flaky", 1)

        async def applied() -> bool:
            return await pool.fetchval("SELECT count(*) FROM effects") == 1

        assert await wait_until(applied)
    assert attempts == [1, 1, 1]
    assert await dlq.list_dead_letters(world.bootstrap, [consumer.dead_letter_topic]) == []


async def test_invalid_data_and_unknown_types_do_not_stop_the_partition(
    world: World, pool: asyncpg.Pool
) -> None:
    from aiokafka import AIOKafkaProducer

    from maillage.common import dlq
    from maillage.common.events import Envelope

    consumer = recording_consumer(world)
    await ensure_topics(world.bootstrap, [(consumer.dead_letter_topic, 1)])

    def headers(event_type: str) -> list[tuple[str, bytes]]:
        envelope = Envelope(
            uuid.uuid4(),
            event_type,
            f"/maillage/{world.service}",
            "k",
            datetime.now(UTC),
        )
        return [(k, v.encode()) for k, v in envelope.headers().items()]

    producer = AIOKafkaProducer(bootstrap_servers=world.bootstrap)
    await producer.start()
    try:
        send = producer.send_and_wait
        topic = world.topic.name
        await send(topic, b"{not json", key=b"k", headers=headers(world.event_type))
        await send(
            topic, b'{"thing_id": "k"}', key=b"k", headers=headers(world.event_type)
        )  # no seq
        await send(
            topic,
            b'{"x": 1}',
            key=b"k",
            headers=headers(f"fr.maillage.{world.service}.thing.vanished.v1"),
        )
        await send(
            topic,
            b'{"thing_id": "k", "seq": 1}',
            key=b"k",
            headers=[("content-type", b"application/json")],
        )
        await send(
            topic, b'{"thing_id": "k", "seq": 2}', key=b"k", headers=headers(world.event_type)
        )
    finally:
        await producer.stop()

    async for _ in start_consumers(world, pool, consumer):

        async def good_one_applied() -> bool:
            return await pool.fetchval("SELECT count(*) FROM effects") == 1

        assert await wait_until(good_one_applied)
        letters = await dlq.list_dead_letters(world.bootstrap, [consumer.dead_letter_topic])
    assert await pool.fetchval("SELECT seq FROM effects") == 2
    classes = sorted(letter.error_class.rsplit(".", 1)[-1] for letter in letters)
    # invalid JSON and missing field: validation errors; no ce_* headers: not a CloudEvent.
    assert classes == ["EnvelopeError", "ValidationError", "ValidationError"]
    assert all(letter.attempts == 1 for letter in letters)


async def test_published_rows_and_old_inbox_entries_are_pruned(
    world: World, pool: asyncpg.Pool
) -> None:
    relay = OutboxRelay(
        world.database_url,
        world.bootstrap,
        service=world.service,
        idempotent=world.idempotent,
        retention_hours=0.5 / 3600,  # half a second
        inbox_retention_days=1,
        prune_interval=0.2,
    )
    await pool.execute(
        "INSERT INTO inbox (consumer_group, event_id, event_type, processed_at)"
        " VALUES ('g.old', $1, 't', now() - interval '2 days'), ('g.new', $2, 't', now())",
        uuid.uuid4(),
        uuid.uuid4(),
    )
    task = asyncio.create_task(relay.run())
    try:
        await publish_thing(pool, world, "pruned")

        async def pruned() -> bool:
            return await pool.fetchval("SELECT count(*) FROM outbox") == 0

        assert await wait_until(pruned, timeout=15)
    finally:
        relay.stop()
        await task
    assert [r["consumer_group"] for r in await pool.fetch("SELECT consumer_group FROM inbox")] == [
        "g.new"
    ]
    records = await read_topic(world.bootstrap, world.topic.name, at_least=1)
    assert [record.key for record in records] == [b"pruned"]  # published before it was pruned
