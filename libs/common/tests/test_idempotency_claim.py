"""``idempotency.claim`` against real PostgreSQL: a fresh key is claimed, a replay gets the stored
answer, another body or an unfinished first request a 409, and an expired key is claimed anew
(the caller's other expired keys go, other callers' stay)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse

from maillage.common import idempotency
from maillage.common.db import create_pool, migrate_service
from maillage.common.problems import Problem


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    with tempfile.TemporaryDirectory() as empty:  # the common tables only
        await migrate_service(database_url, Path(empty))
    pool = await create_pool(database_url, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def post(key: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/things",
            "headers": [(b"idempotency-key", key.encode())],
            "query_string": b"",
            "server": ("test", 80),
            "scheme": "http",
        }
    )


async def age(pool: asyncpg.Pool, key: str, hours: float) -> None:
    await pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - $2::float8 * interval '1 hour'"
        " WHERE key = $1",
        key,
        hours,
    )


async def test_claim_replay_conflicts_and_expiry(pool: asyncpg.Pool) -> None:
    claimed = await idempotency.claim(pool, post("key-one-1"), "caller:a", {"n": 1})
    assert isinstance(claimed, idempotency.IdempotencyKey)

    with pytest.raises(Problem) as in_progress:
        await idempotency.claim(pool, post("key-one-1"), "caller:a", {"n": 1})
    assert in_progress.value.code == "idempotency_key_in_progress"

    async with pool.acquire() as connection, connection.transaction():
        await idempotency.remember(connection, claimed, 201, {"id": 7})
    replay = await idempotency.claim(pool, post("key-one-1"), "caller:a", {"n": 1})
    assert isinstance(replay, JSONResponse)
    assert (replay.status_code, replay.body) == (201, b'{"id":7}')

    with pytest.raises(Problem) as reused:
        await idempotency.claim(pool, post("key-one-1"), "caller:a", {"n": 2})
    assert reused.value.code == "idempotency_key_reused"

    # Expired: the same key is a new request, even with another body.
    other = await idempotency.claim(pool, post("key-two-2"), "caller:a", {"n": 3})
    elsewhere = await idempotency.claim(pool, post("key-old-3"), "caller:b", {"n": 4})
    assert isinstance(other, idempotency.IdempotencyKey)
    assert isinstance(elsewhere, idempotency.IdempotencyKey)
    for key in ("key-one-1", "key-two-2", "key-old-3"):
        await age(pool, key, idempotency.RETENTION_HOURS + 1)
    again = await idempotency.claim(pool, post("key-one-1"), "caller:a", {"n": 2})
    assert again == idempotency.IdempotencyKey("caller:a", "key-one-1", again.request_hash)
    assert again.request_hash != claimed.request_hash
    row = await pool.fetchrow(
        "SELECT status_code, response FROM idempotency_keys WHERE key = 'key-one-1'"
    )
    assert (row["status_code"], row["response"]) == (None, None)
    left = {r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")}
    assert left == {"key-one-1", "key-old-3"}  # caller a's other expired key went, b's stays


async def test_claim_on_a_connection_refuses_a_transaction(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        claimed = await idempotency.claim(connection, post("key-conn-1"), "caller:a", {})
        assert isinstance(claimed, idempotency.IdempotencyKey)
        async with connection.transaction():
            with pytest.raises(RuntimeError):
                await idempotency.claim(connection, post("key-conn-2"), "caller:a", {})
