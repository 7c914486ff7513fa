"""Run by test_backbone_metrics.py in a process of its own (one global meter provider per
process): moves a few events through the backbone with OTLP export on, then flushes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from backbone_world import ThingChanged, new_world, wait_until

from maillage.common.db import create_pool, migrate_service, transaction
from maillage.common.inbox import DeadLetterProducer, Delivery, EventConsumer
from maillage.common.outbox import OutboxRelay, publish
from maillage.common.telemetry import configure_telemetry, shutdown_telemetry
from maillage.common.topics import ensure_topics


async def main(database_url: str, bootstrap: str, workdir: str) -> None:
    configure_telemetry("metrics-probe")
    world = new_world(database_url, bootstrap, False, Path(workdir))
    await migrate_service(database_url, world.migrations)
    consumer = EventConsumer(f"{world.service}.probe", [world.topic], catalog=world.catalog)
    await ensure_topics(bootstrap, [(world.topic.name, 3), (consumer.dead_letter_topic, 1)])

    @consumer.handler(ThingChanged)
    async def handle(event: ThingChanged, delivery: Delivery) -> None:
        if event.note == "poison":
            raise ValueError("poison")

    pool = await create_pool(database_url)
    dead_letters = DeadLetterProducer(bootstrap, client_id="probe", idempotent=False)
    consumer.bind(lambda: pool, dead_letters)
    relay = OutboxRelay(database_url, bootstrap, service=world.service, idempotent=False)
    task = asyncio.create_task(relay.run())
    for seq, note in ((1, ""), (2, ""), (3, "poison")):
        async with transaction(pool) as connection:
            await publish(
                connection, ThingChanged(thing_id="m", seq=seq, note=note), catalog=world.catalog
            )

    async def relayed() -> bool:
        return await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

    assert await wait_until(relayed)
    # Feed the consumer the records straight from the topic, the first one twice.
    from backbone_world import read_topic

    records = await read_topic(bootstrap, world.topic.name, at_least=3)
    records.sort(key=lambda record: record.offset)
    await consumer.process([*records, records[0]])
    await asyncio.sleep(1.5)  # at least one collection of the observable gauges
    relay.stop()
    await task
    await dead_letters.stop()
    await pool.close()
    shutdown_telemetry()


if __name__ == "__main__":
    arguments = json.loads(sys.argv[1])
    asyncio.run(main(**arguments))
