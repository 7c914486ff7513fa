"""A small world for backbone tests: a catalog of its own, a topic per test, an effects table.

Each test gets unique topic and event names, so tests sharing the session's broker never read
each other's messages.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker

from maillage.common.events import Catalog, Event, Level, Topic
from maillage.common.inbox import DeadLetterProducer, Delivery, EventConsumer

EFFECTS_SQL = """
CREATE TABLE effects (
    id        bigserial PRIMARY KEY,
    event_id  uuid NOT NULL,
    thing_id  text NOT NULL,
    seq       integer NOT NULL,
    consumer  text NOT NULL
);
CREATE TABLE things (thing_id text PRIMARY KEY, seq integer NOT NULL);
"""


class ThingChanged(Event):
    thing_id: Annotated[str, Level.PUBLIC]
    seq: Annotated[int, Level.PARTNERS]
    note: Annotated[str, Level.PUBLIC] = ""


@dataclass
class World:
    service: str
    catalog: Catalog
    topic: Topic
    database_url: str
    bootstrap: str
    idempotent: bool
    migrations: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def event_type(self) -> str:
        return f"fr.maillage.{self.service}.thing.changed.v1"


def new_world(database_url: str, bootstrap: str, idempotent: bool, tmp_path: Path) -> World:
    service = "t" + uuid.uuid4().hex[:10]
    catalog = Catalog()
    topic = catalog.topic(f"{service}.things", partitions=3)
    catalog.register(
        ThingChanged,
        event_type=f"fr.maillage.{service}.thing.changed.v1",
        topic=topic,
        key="thing_id",
    )
    migrations = tmp_path / "migrations"
    migrations.mkdir(exist_ok=True)
    (migrations / "0001_effects.sql").write_text(EFFECTS_SQL)
    return World(service, catalog, topic, database_url, bootstrap, idempotent, migrations)


def recording_consumer(world: World, group_suffix: str = "effects") -> EventConsumer:
    """A consumer group whose handler records each event in ``effects``."""
    consumer = EventConsumer(
        f"{world.service}.{group_suffix}", [world.topic], catalog=world.catalog
    )

    @consumer.handler(ThingChanged)
    async def record(event: ThingChanged, delivery: Delivery) -> None:
        await delivery.connection.execute(
            "INSERT INTO effects (event_id, thing_id, seq, consumer) VALUES ($1, $2, $3, $4)",
            delivery.envelope.id,
            event.thing_id,
            event.seq,
            consumer.group,
        )

    return consumer


async def start_consumers(
    world: World, pool: asyncpg.Pool, *consumers: EventConsumer
) -> AsyncIterator[KafkaBroker]:
    broker = KafkaBroker(world.bootstrap, logger=None)
    dead_letters = DeadLetterProducer(
        world.bootstrap, client_id="test", idempotent=world.idempotent
    )
    for consumer in consumers:
        consumer.attach(broker, lambda: pool, dead_letters, max_attempts=3)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
        await dead_letters.stop()


async def read_topic(
    bootstrap: str, topic: str, *, at_least: int, timeout: float = 30
) -> list[ConsumerRecord]:
    """Every record on ``topic`` from the beginning, once at least ``at_least`` are there."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        deadline = time.monotonic() + timeout
        while not partitions and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for received in batch.values():
                records.extend(received)
            if len(records) >= at_least:
                # Drain what else is already there (duplicates would show up here).
                batch = await consumer.getmany(timeout_ms=500)
                for received in batch.values():
                    records.extend(received)
                return records
        return records
    finally:
        await consumer.stop()


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 30, interval: float = 0.1
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return await predicate()
