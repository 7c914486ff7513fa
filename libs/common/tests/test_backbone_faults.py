"""The event backbone under faults: processes killed by SIGKILL, a standby relay, a broker cut off.

Real processes (backbone_processes.py, run as children and killed for real), the real broker and
real PostgreSQL. The claims under test, from outbox.py and inbox.py: a relay that dies between
the broker's acknowledgement and the outbox update only causes duplicates on the wire, and the
inbox absorbs them; a consumer killed mid-batch replays the batch harmlessly; a standby relay
takes over within seconds; a broker outage loses nothing and the backlog drains afterwards.

Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from backbone_processes import Child, TcpProxy
from backbone_world import (
    ThingChanged,
    World,
    new_world,
    read_topic,
    recording_consumer,
    start_consumers,
    wait_until,
)
from faststream.kafka import KafkaBroker

from maillage.cli.embedded import EmbeddedBroker, free_port
from maillage.common.db import create_pool, migrate_service, transaction
from maillage.common.inbox import EventConsumer
from maillage.common.outbox import OutboxRelay, publish
from maillage.common.topics import ensure_topics

Spawn = Callable[..., Awaitable[Child]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Starts backbone child processes; every one is killed at the end, whatever happened."""
    children: list[Child] = []

    async def start(name: str, role: str, **args: Any) -> Child:
        child = Child(name, role, **args)
        children.append(child)
        return await child.start()

    try:
        yield start
    finally:
        for child in children:
            child.kill()
        for child in children:
            with contextlib.suppress(Exception):
                await child.killed()
        assert not any(child.alive for child in children)


def child_args(world: World, **extra: Any) -> dict[str, Any]:
    return {
        "dsn": world.database_url,
        "bootstrap": world.bootstrap,
        "service": world.service,
        "idempotent": world.idempotent,
        **extra,
    }


@contextlib.asynccontextmanager
async def consuming(
    world: World, pool: asyncpg.Pool, *consumers: EventConsumer
) -> AsyncIterator[KafkaBroker]:
    """start_consumers() as a context manager: the broker stops on the way out, failing or not."""
    runs = start_consumers(world, pool, *consumers)
    broker = await anext(runs)
    try:
        yield broker
    finally:
        await runs.aclose()


@contextlib.asynccontextmanager
async def relay_running(world: World, **options: Any) -> AsyncIterator[OutboxRelay]:
    relay = OutboxRelay(
        world.database_url,
        world.bootstrap,
        service=world.service,
        idempotent=world.idempotent,
        **options,
    )
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        await asyncio.wait_for(task, 30)


async def write_events(
    pool: asyncpg.Pool,
    world: World,
    count: int,
    *,
    prefix: str = "thing",
    per_transaction: int = 10,
) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    for start in range(0, count, per_transaction):
        async with transaction(pool) as connection:
            for index in range(start, min(start + per_transaction, count)):
                event = ThingChanged(thing_id=f"{prefix}-{index % 7}", seq=index)
                ids.append(await publish(connection, event, catalog=world.catalog))
    return ids


def event_ids(records: list[ConsumerRecord]) -> Counter[uuid.UUID]:
    return Counter(uuid.UUID(dict(record.headers)["ce_id"].decode()) for record in records)


async def unpublished(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    return count


async def applied(pool: asyncpg.Pool) -> tuple[int, int]:
    """(rows in effects, distinct event ids in effects)."""
    row = await pool.fetchrow("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM effects")
    assert row is not None
    return row["n"], row["d"]


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offsets on ``topic``, summed: how many records it is done with.
    (A consumer with the group's id, assigned by hand: it never joins the group.)"""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        reader.assign(partitions)
        return sum([await reader.committed(partition) or 0 for partition in partitions])
    finally:
        await reader.stop()


async def test_a_relay_killed_between_the_acks_and_the_marking_only_duplicates_on_the_wire(
    world: World, pool: asyncpg.Pool, spawn: Spawn
) -> None:
    count = 50
    ids = await write_events(pool, world, count)

    stalling = await spawn("stalling-relay", "relay", **child_args(world, stall_on_mark=True))
    assert await stalling.wait_for("acked", timeout=30) == str(count)
    on_the_wire = event_ids(await read_topic(world.bootstrap, world.topic.name, at_least=count))
    assert on_the_wire == Counter(ids)  # all acknowledged by the broker, once each
    await stalling.killed()  # kill -9, before the UPDATE
    assert await unpublished(pool) == count  # the outbox never learnt they were sent

    consumer = recording_consumer(world)
    async with relay_running(world) as relay, consuming(world, pool, consumer):

        async def all_marked() -> bool:
            return await unpublished(pool) == 0

        assert await wait_until(all_marked, timeout=30), relay.status
        records = await read_topic(world.bootstrap, world.topic.name, at_least=2 * count)
        on_the_wire = event_ids(records)
        assert set(on_the_wire) == set(ids)
        # The whole batch was unmarked, so the new leader sent all of it again.
        assert min(on_the_wire.values()) >= 2, on_the_wire

        async def consumed_everything() -> bool:
            done = await committed(world.bootstrap, consumer.group, world.topic.name)
            return done >= len(records)

        assert await wait_until(consumed_everything, timeout=60, interval=0.5)

    print(
        f"\n[relay kill -9] {count} events, {len(records)} records on the topic "
        f"({sum(1 for c in on_the_wire.values() if c > 1)} events twice); applied once each"
    )
    assert await applied(pool) == (count, count)
    in_effect = {row["event_id"] for row in await pool.fetch("SELECT event_id FROM effects")}
    assert in_effect == set(ids)


async def test_a_consumer_killed_mid_batch_applies_every_event_exactly_once(
    world: World, pool: asyncpg.Pool, spawn: Spawn
) -> None:
    count = 300
    group = f"{world.service}.effects"
    async with relay_running(world):
        ids = await write_events(pool, world, count, per_transaction=30)

        async def all_marked() -> bool:
            return await unpublished(pool) == 0

        assert await wait_until(all_marked, timeout=60)

    slow = await spawn("slow-consumer", "consumer", **child_args(world, delay_ms=20))
    await slow.wait_for("started", timeout=30)

    async def some_applied() -> bool:
        return (await applied(pool))[0] >= 30

    assert await wait_until(some_applied, timeout=60, interval=0.02), slow.output()
    await slow.killed()  # kill -9, in the middle of a batch
    at_kill, _ = await applied(pool)
    done_at_kill = await committed(world.bootstrap, group, world.topic.name)
    print(f"\n[consumer kill -9] applied {at_kill}/{count}, offsets committed for {done_at_kill}")
    assert 0 < at_kill < count
    # Applied but not committed: these come again, and the inbox must skip them.
    assert done_at_kill < at_kill

    started = time.monotonic()
    await spawn("fresh-consumer", "consumer", **child_args(world))

    async def all_consumed() -> bool:
        return await committed(world.bootstrap, group, world.topic.name) >= count

    assert await wait_until(all_consumed, timeout=90, interval=0.5)
    print(f"[consumer kill -9] the fresh consumer finished in {time.monotonic() - started:.1f} s")
    assert await applied(pool) == (count, count)
    duplicates = await pool.fetch(
        "SELECT event_id FROM effects GROUP BY event_id HAVING count(*) > 1"
    )
    assert duplicates == []
    in_effect = {row["event_id"] for row in await pool.fetch("SELECT event_id FROM effects")}
    assert in_effect == set(ids)
    inbox = await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer_group = $1", group)
    assert inbox == count


async def test_a_standby_relay_takes_over_within_five_seconds(
    world: World, pool: asyncpg.Pool, spawn: Spawn
) -> None:
    first = await spawn("relay-1", "relay", **child_args(world))
    second = await spawn("relay-2", "relay", **child_args(world))

    async def one_leader_one_standby() -> bool:
        return sorted([first.last("role") or "", second.last("role") or ""]) == [
            "leader",
            "standby",
        ]

    assert await wait_until(one_leader_one_standby, timeout=30), (first.output(), second.output())
    leader, standby = (first, second) if first.last("role") == "leader" else (second, first)
    [warm_up] = await write_events(pool, world, 1, prefix="warm-up")

    async def published(event_id: uuid.UUID) -> bool:
        return bool(
            await pool.fetchval(
                "SELECT published_at IS NOT NULL FROM outbox WHERE event_id = $1", event_id
            )
        )

    assert await wait_until(lambda: published(warm_up), timeout=30)

    await leader.killed()  # kill -9
    killed_at = time.monotonic()
    [after] = await write_events(pool, world, 1, prefix="after-the-kill")
    assert await wait_until(lambda: published(after), timeout=15, interval=0.01), standby.output()
    takeover = time.monotonic() - killed_at
    await standby.wait_for("role", "leader", timeout=1)
    became_leader = next(
        at for at, name, value in standby.markers if name == "role" and value == "leader"
    )
    print(
        f"\n[standby takeover] leader kill -9 → standby leader in {became_leader - killed_at:.2f} s"
        f", event published in {takeover:.2f} s"
    )
    assert takeover < 5.0
    records = await read_topic(world.bootstrap, world.topic.name, at_least=2)
    assert event_ids(records) == Counter([warm_up, after])


async def test_a_broker_outage_loses_nothing_and_the_backlog_drains(
    database_url: str, tmp_path: Path
) -> None:
    outage_s = 30.0
    proxy = TcpProxy(free_port(), 0)
    broker = EmbeddedBroker(free_port(), advertised_port=proxy.port)
    proxy.target_port = broker.port
    await broker.start()
    try:
        await proxy.start()
        world = new_world(database_url, broker.bootstrap_servers, False, tmp_path)
        assert world.bootstrap == f"127.0.0.1:{proxy.port}"  # everything goes through the proxy
        await migrate_service(database_url, world.migrations)
        await ensure_topics(world.bootstrap, [(world.topic.name, world.topic.partitions)])
        pool = await create_pool(database_url, max_size=20)
        try:
            await _outage(world, pool, proxy, outage_s)
        finally:
            await pool.close()
    finally:
        await proxy.stop()
        await broker.stop()


async def _outage(world: World, pool: asyncpg.Pool, proxy: TcpProxy, outage_s: float) -> None:
    consumer = recording_consumer(world)
    async with relay_running(world) as relay, consuming(world, pool, consumer):
        before = await write_events(pool, world, 10, prefix="before")

        async def before_applied() -> bool:
            return (await applied(pool))[0] >= len(before)

        assert await wait_until(before_applied, timeout=60), relay.status
        assert relay.status.problem() is None

        await proxy.cut()
        try:
            cut_at = time.monotonic()
            during: list[uuid.UUID] = []
            problems: list[str] = []
            while time.monotonic() - cut_at < outage_s:
                during += await write_events(pool, world, 1, prefix="during")
                problem = relay.status.problem()
                if problem is not None:
                    problems.append(problem)
                await asyncio.sleep(1.0)
            since_cut = (
                relay.status.failing_since - cut_at
                if relay.status.failing_since is not None
                else float("nan")
            )
            print(
                f"\n[broker outage] {len(during)} events written during {outage_s:.0f} s; "
                f"readiness failing from {since_cut:.1f} s after the cut: {problems[-1:]}"
            )
            assert problems, "readiness never reported the outage"
            assert relay.status.failing_since is not None
            published_during = await pool.fetchval(
                "SELECT count(*) FROM outbox WHERE event_id = ANY($1::uuid[]) "
                "AND published_at IS NOT NULL",
                during,
            )
            assert published_during == 0
            assert await applied(pool) == (len(before), len(before))  # the cut is real
            assert await unpublished(pool) == len(during)
        finally:  # also when an assertion fails: the clients then stop cleanly
            await proxy.restore()
        restored_at = time.monotonic()

        async def drained() -> bool:
            return await unpublished(pool) == 0

        assert await wait_until(drained, timeout=60), relay.status
        drained_s = time.monotonic() - restored_at
        total = len(before) + len(during)

        async def all_applied() -> bool:
            return (await applied(pool))[0] >= total

        assert await wait_until(all_applied, timeout=90)
        applied_s = time.monotonic() - restored_at

        async def healthy() -> bool:
            return relay.status.problem() is None and relay.status.backlog == 0

        assert await wait_until(healthy, timeout=15), relay.status
        print(
            f"[broker outage] after the restore: backlog published in {drained_s:.1f} s, "
            f"every event applied in {applied_s:.1f} s"
        )
        await asyncio.sleep(1.0)  # a late duplicate would show up now
        assert await applied(pool) == (total, total)
        rows = await pool.fetch("SELECT event_id FROM effects")
        assert {row["event_id"] for row in rows} == {*before, *during}
