"""``Idempotency-Key`` on creating POSTs: the same key and body get the same response.

The first request with a key claims it (a row with no response yet) in its own transaction,
so a concurrent retry gets a 409 "in progress" instead of creating twice. When the handler
succeeds, the response is stored *in the handler's transaction* (``remember``), so the effect
and its recorded response commit together. The same key with another body is a 409.
Keys are scoped to the caller (or to the client address for anonymous registration) and kept
for 24 hours.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from maillage.common.problems import Problem

_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,255}$")
RETENTION_HOURS = 24

OPENAPI_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": f"Retry safely: the same key and body get the same answer for "
    f"{RETENTION_HOURS} hours",
    "schema": {"type": "string", "minLength": 8, "maxLength": 255, "pattern": _KEY.pattern},
}
"""The header as an OpenAPI parameter, for the ``openapi_extra`` of a route that honours it."""


@dataclass(frozen=True)
class IdempotencyKey:
    scope: str
    key: str
    request_hash: str


async def claim(
    database: asyncpg.Pool | asyncpg.Connection, request: Request, scope: str, body: Any
) -> IdempotencyKey | JSONResponse | None:
    """Claim the request's key. Returns None without a key, the stored response for a replay,
    or the claimed key for the handler to ``remember`` its response under.

    ``database``: the pool, or a connection outside any transaction (a handler that reads on it
    before and writes on it after saves taking a second one): the claim must commit at once, so
    that a concurrent retry sees it in progress."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _KEY.match(key):
        raise Problem(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key non valide",
            detail="Une Idempotency-Key a de 8 à 255 caractères : lettres, chiffres, . _ : -",
        )
    if not isinstance(database, asyncpg.Pool) and database.is_in_transaction():
        raise RuntimeError("claim() commits at once: call it outside the handler's transaction")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    request_hash = hashlib.sha256(
        f"{request.method} {request.url.path}\n{canonical}".encode()
    ).hexdigest()
    # One statement: drop the caller's other expired keys, and take this key if it is free or
    # expired (a concurrent claim of the same expired key waits on its row, then finds it fresh).
    claimed = await database.fetchval(
        """
        WITH expired AS (
            DELETE FROM idempotency_keys
            WHERE scope = $1 AND key <> $2 AND created_at < now() - $4::float8 * interval '1 hour'
        )
        INSERT INTO idempotency_keys AS kept (scope, key, request_hash) VALUES ($1, $2, $3)
        ON CONFLICT (scope, key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, status_code = NULL, response = NULL,
                created_at = now()
            WHERE kept.created_at < now() - $4::float8 * interval '1 hour'
        RETURNING true
        """,
        scope,
        key,
        request_hash,
        float(RETENTION_HOURS),
    )
    if claimed:
        return IdempotencyKey(scope, key, request_hash)
    row = await database.fetchrow(
        "SELECT request_hash, status_code, response FROM idempotency_keys"
        " WHERE scope = $1 AND key = $2",
        scope,
        key,
    )
    if row is None:  # expired and deleted between the two statements: try once more
        return await claim(database, request, scope, body)
    if row["request_hash"] != request_hash:
        raise Problem(
            409,
            "idempotency_key_reused",
            "Idempotency-Key déjà utilisée",
            detail="Cette Idempotency-Key a servi à une autre requête ; prenez-en une nouvelle.",
        )
    if row["status_code"] is None:
        raise Problem(
            409,
            "idempotency_key_in_progress",
            "Requête en cours",
            detail="La première requête portant cette Idempotency-Key est encore en traitement.",
            headers={"Retry-After": "1"},
        )
    response = row["response"]
    if isinstance(response, str):
        response = json.loads(response)
    return JSONResponse(
        response, status_code=row["status_code"], headers={"Idempotent-Replayed": "true"}
    )


async def remember(
    connection: asyncpg.Connection, claimed: IdempotencyKey | None, status_code: int, body: Any
) -> None:
    """Store the response, inside the transaction that made the change."""
    if claimed is None:
        return
    await connection.execute(
        """
        UPDATE idempotency_keys SET status_code = $3, response = $4::text::jsonb
        WHERE scope = $1 AND key = $2
        """,
        claimed.scope,
        claimed.key,
        status_code,
        json.dumps(body, default=str),
    )


async def release(pool: asyncpg.Pool, claimed: IdempotencyKey | None) -> None:
    """The request failed: free the key so the client can retry with it."""
    if claimed is None:
        return
    await pool.execute(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status_code IS NULL",
        claimed.scope,
        claimed.key,
    )


async def respond(
    request: Request,
    pool: asyncpg.Pool,
    scope: str,
    body: Any,
    status_code: int,
    run: Callable[[asyncpg.Connection], Awaitable[tuple[Any, str | None]]],
) -> JSONResponse:
    """A creating POST with its Idempotency-Key, in one call (docs: style.md, section 2).

    ``run(connection)`` does the work inside one transaction and returns the answer's body and
    its ``Location`` (or None). A replay gets the stored answer; the answer is remembered in
    ``run``'s transaction, so effect and answer commit together; a failure frees the key."""
    claimed = await claim(pool, request, scope, body)
    if isinstance(claimed, JSONResponse):
        return claimed
    try:
        async with pool.acquire() as connection, connection.transaction():
            answer, location = await run(connection)
            content = jsonable_encoder(answer)
            await remember(connection, claimed, status_code, content)
    except BaseException:
        await release(pool, claimed)
        raise
    headers = {"Location": location} if location else None
    return JSONResponse(content, status_code=status_code, headers=headers)
