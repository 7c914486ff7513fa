"""``outbox.publish`` takes its key's lock before its row gets an outbox id: a writer of a key
held by another transaction gets its id after that transaction's later rows, so id order is
commit order per key (what the relay relies on)."""

from __future__ import annotations

import asyncio

import asyncpg
from backbone_world import ThingChanged, World

from maillage.common.outbox import publish


async def test_a_blocked_writer_gets_its_id_after_the_holders_commit(
    world: World, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as first, pool.acquire() as second:
        holder = first.transaction()
        await holder.start()
        await publish(first, ThingChanged(thing_id="k", seq=1), catalog=world.catalog)

        async def waiter() -> None:
            async with second.transaction():
                await publish(second, ThingChanged(thing_id="k", seq=3), catalog=world.catalog)

        blocked = asyncio.create_task(waiter())
        await asyncio.sleep(0.3)
        assert not blocked.done()  # waiting on the key's lock
        await publish(first, ThingChanged(thing_id="other", seq=2), catalog=world.catalog)
        await holder.commit()
        await asyncio.wait_for(blocked, 10)

    rows = await pool.fetch("SELECT key, payload::jsonb->>'seq' AS seq FROM outbox ORDER BY id")
    assert [(row["key"], row["seq"]) for row in rows] == [("k", "1"), ("other", "2"), ("k", "3")]
