"""The inbox applies a partition's records in batches, one transaction each (decision 57), and a
bad record still costs only itself: the records around it are applied once each, in order, and
it alone is retried or dead-lettered. Records are handed to ``EventConsumer.process`` as one
fetch would bring them; the database and the dead-letter topic are real."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
from aiokafka import ConsumerRecord
from backbone_world import ThingChanged, World

from maillage.common import dlq
from maillage.common.events import Envelope, encode_headers
from maillage.common.inbox import DeadLetterProducer, Delivery, EventConsumer, TransientError
from maillage.common.topics import ensure_topics


def record(
    world: World, offset: int, note: str = "", event_id: uuid.UUID | None = None
) -> ConsumerRecord[bytes, bytes]:
    """A ThingChanged of key ``k`` at ``offset`` of partition 0, its seq the offset."""
    envelope = Envelope(
        event_id or uuid.uuid4(),
        world.event_type,
        f"/maillage/{world.service}",
        "k",
        datetime.now(UTC),
    )
    value = ThingChanged(thing_id="k", seq=offset, note=note).model_dump_json().encode()
    return ConsumerRecord(
        world.topic.name, 0, offset, 0, 0, b"k", value, None, 1, len(value),
        tuple(encode_headers(envelope.headers())),
    )  # fmt: skip


def event_id(raw: ConsumerRecord[bytes, bytes]) -> uuid.UUID:
    return uuid.UUID(dict(raw.headers)["ce_id"].decode())


async def consumer_of(
    world: World, pool: asyncpg.Pool, name: str, calls: list[int], fail: dict[int, int]
) -> tuple[EventConsumer, DeadLetterProducer]:
    """A consumer recording each event in ``effects`` as ``name``. Its handler notes every call
    in ``calls``, and raises for seq ``s`` while ``fail[s]`` is positive, counting down: a
    TransientError when the event's note is "busy", a bug otherwise."""
    consumer = EventConsumer(f"{world.service}.{name}", [world.topic], catalog=world.catalog)

    @consumer.handler(ThingChanged)
    async def apply(event: ThingChanged, delivery: Delivery) -> None:
        calls.append(event.seq)
        if fail.get(event.seq, 0) > 0:
            fail[event.seq] -= 1
            if event.note == "busy":
                raise TransientError("the resource is busy")
            raise ValueError("a bug in the handler")
        await delivery.connection.execute(
            "INSERT INTO effects (event_id, thing_id, seq, consumer) VALUES ($1, $2, $3, $4)",
            delivery.envelope.id,
            event.thing_id,
            event.seq,
            name,
        )

    await ensure_topics(world.bootstrap, [(consumer.dead_letter_topic, 1)])
    dead_letters = DeadLetterProducer(world.bootstrap, client_id="t", idempotent=world.idempotent)
    consumer.bind(lambda: pool, dead_letters)
    return consumer, dead_letters


async def applied(pool: asyncpg.Pool, name: str) -> list[int]:
    """The seqs in ``effects`` of consumer ``name``, in the order they were applied."""
    rows = await pool.fetch("SELECT seq FROM effects WHERE consumer = $1 ORDER BY id", name)
    return [row["seq"] for row in rows]


async def test_a_poison_in_a_batch_is_dead_lettered_alone_and_the_others_applied_once_in_order(
    world: World, pool: asyncpg.Pool
) -> None:
    calls: list[int] = []
    consumer, dead_letters = await consumer_of(world, pool, "poisoned", calls, {3: 99})
    records = [record(world, offset, "poison" if offset == 3 else "") for offset in range(1, 7)]
    try:
        await consumer.process(records)
    finally:
        await dead_letters.stop()

    assert await applied(pool, "poisoned") == [1, 2, 4, 5, 6]
    # The batch ran 1, 2, 3 and rolled back; 1 and 2 again together; 3 alone; then 4, 5, 6.
    assert calls == [1, 2, 3, 1, 2, 3, 4, 5, 6]
    in_inbox = await pool.fetchval(
        "SELECT count(*) FROM inbox WHERE consumer_group = $1", consumer.group
    )
    assert in_inbox == 5
    letters = await dlq.list_dead_letters(world.bootstrap, [consumer.dead_letter_topic])
    assert [(letter.event_id, letter.attempts) for letter in letters] == [
        (str(event_id(records[2])), 1)
    ]


async def test_duplicates_in_a_batch_and_before_it_are_skipped(
    world: World, pool: asyncpg.Pool
) -> None:
    calls: list[int] = []
    consumer, dead_letters = await consumer_of(world, pool, "duplicated", calls, {})
    first, second = record(world, 1), record(world, 2)
    try:
        await consumer.process([first])
        again = record(world, 3, event_id=event_id(first))  # the relay sent it once more
        await consumer.process([second, again, record(world, 4, event_id=event_id(second))])
    finally:
        await dead_letters.stop()

    assert await applied(pool, "duplicated") == [1, 2]
    assert calls == [1, 2]


async def test_a_conflict_in_a_batch_is_retried_and_nothing_dead_lettered(
    world: World, pool: asyncpg.Pool
) -> None:
    calls: list[int] = []
    consumer, dead_letters = await consumer_of(world, pool, "busy", calls, {2: 2})
    records = [record(world, offset, "busy" if offset == 2 else "") for offset in range(1, 5)]
    try:
        await consumer.process(records)
    finally:
        await dead_letters.stop()

    assert await applied(pool, "busy") == [1, 2, 3, 4]
    # The batch failed at 2; 1 alone, then 2 alone (failing once more, then applied); 3, 4.
    assert calls == [1, 2, 1, 2, 2, 3, 4]
    assert await dlq.list_dead_letters(world.bootstrap, [consumer.dead_letter_topic]) == []


async def test_one_transaction_per_record_when_apply_batch_is_one(
    world: World, pool: asyncpg.Pool
) -> None:
    calls: list[int] = []
    consumer, dead_letters = await consumer_of(world, pool, "alone", calls, {2: 1})
    consumer.apply_batch = 1
    records = [record(world, offset, "poison" if offset == 2 else "") for offset in range(1, 4)]
    try:
        await consumer.process(records)
    finally:
        await dead_letters.stop()

    assert await applied(pool, "alone") == [1, 3]
    assert calls == [1, 2, 3]  # no batch: no handler ran twice
