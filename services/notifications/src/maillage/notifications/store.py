"""SQL of the notifications service: asyncpg queries on its own database only.

Functions take a connection (``transaction(pool)`` gives one) and the current time ``now`` from
the caller, so the worker's clock is the only clock and tests can move it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

DeliveryStatus = Literal["pending", "delivered", "failed", "disabled"]


@dataclass(frozen=True)
class ClaimedDelivery:
    """A due delivery a worker holds until ``lease_until``, with what it needs to send it."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    event_id: uuid.UUID
    event_type: str
    payload: str
    attempts: int  # attempts made before this one
    # Sealed (secretbox.SecretBox.open them with endpoint_id): current first, then the
    # rotated-out secrets still live.
    secrets: tuple[bytes, ...]


@dataclass(frozen=True)
class AttemptRecord:
    """One finished attempt, as the worker saw it."""

    number: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None


# --- endpoints ---------------------------------------------------------------------------------


async def create_endpoint(
    connection: asyncpg.Connection,
    *,
    endpoint_id: uuid.UUID,
    partner_id: uuid.UUID,
    url: str,
    sealed_secret: bytes,
    event_types: Sequence[str] = (),
    description: str | None = None,
) -> uuid.UUID:
    """A new enabled endpoint with its first (current) secret, sealed for ``endpoint_id``."""
    await connection.execute(
        "INSERT INTO webhook_endpoints (id, partner_id, url, event_types, description)"
        " VALUES ($1, $2, $3, $4, $5)",
        endpoint_id,
        partner_id,
        url,
        list(event_types),
        description,
    )
    await connection.execute(
        "INSERT INTO endpoint_secrets (endpoint_id, sealed) VALUES ($1, $2)",
        endpoint_id,
        sealed_secret,
    )
    return endpoint_id


async def rotate_secret(
    connection: asyncpg.Connection,
    endpoint_id: uuid.UUID,
    sealed_secret: bytes,
    *,
    now: datetime,
    overlap: timedelta,
) -> None:
    """``sealed_secret`` becomes current; the old current keeps signing until ``now + overlap``."""
    await connection.execute(
        "UPDATE endpoint_secrets SET not_after = $2 WHERE endpoint_id = $1 AND not_after IS NULL",
        endpoint_id,
        now + overlap,
    )
    await connection.execute(
        "DELETE FROM endpoint_secrets WHERE endpoint_id = $1 AND not_after <= $2",
        endpoint_id,
        now,
    )
    await connection.execute(
        "INSERT INTO endpoint_secrets (endpoint_id, sealed) VALUES ($1, $2)",
        endpoint_id,
        sealed_secret,
    )


async def disable_endpoint(
    connection: asyncpg.Connection, endpoint_id: uuid.UUID, *, reason: str
) -> int:
    """Disable an endpoint and stop its pending deliveries; the number of deliveries stopped."""
    await connection.execute(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2 WHERE id = $1",
        endpoint_id,
        reason,
    )
    result: str = await connection.execute(
        """
        UPDATE deliveries
           SET status = 'disabled', next_attempt_at = NULL,
               last_error = coalesce(last_error, $2)
         WHERE endpoint_id = $1 AND status = 'pending'
        """,
        endpoint_id,
        f"endpoint disabled: {reason}",
    )
    return int(result.rsplit(" ", 1)[-1])


async def get_endpoint(connection: asyncpg.Connection, endpoint_id: uuid.UUID) -> dict[str, Any]:
    row = await connection.fetchrow("SELECT * FROM webhook_endpoints WHERE id = $1", endpoint_id)
    if row is None:
        raise LookupError(f"no webhook endpoint {endpoint_id}")
    return dict(row)


# --- enqueueing --------------------------------------------------------------------------------


async def enqueue(
    connection: asyncpg.Connection,
    *,
    endpoint_id: uuid.UUID,
    event_id: uuid.UUID,
    event_type: str,
    payload: str,
    now: datetime,
) -> uuid.UUID | None:
    """Queue an event for one endpoint, due at once; None when it was already queued there."""
    delivery_id: uuid.UUID | None = await connection.fetchval(
        """
        INSERT INTO deliveries (id, endpoint_id, event_id, event_type, payload, next_attempt_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (endpoint_id, event_id) DO NOTHING
        RETURNING id
        """,
        uuid.uuid4(),
        endpoint_id,
        event_id,
        event_type,
        payload,
        now,
    )
    return delivery_id


async def enqueue_event(
    connection: asyncpg.Connection,
    *,
    partner_ids: Sequence[uuid.UUID],
    event_id: uuid.UUID,
    event_type: str,
    payload: str,
    now: datetime,
) -> int:
    """Queue an event for every enabled endpoint of these partners that wants its type.

    Idempotent: an event already queued for an endpoint is not queued again. Returns how many
    deliveries were queued by this call.
    """
    result: str = await connection.execute(
        """
        INSERT INTO deliveries (id, endpoint_id, event_id, event_type, payload, next_attempt_at)
        SELECT gen_random_uuid(), e.id, $2, $3, $4, $5
          FROM webhook_endpoints e
         WHERE e.partner_id = ANY($1::uuid[]) AND e.enabled
           AND (cardinality(e.event_types) = 0 OR $3 = ANY(e.event_types))
        ON CONFLICT (endpoint_id, event_id) DO NOTHING
        """,
        list(partner_ids),
        event_id,
        event_type,
        payload,
        now,
    )
    return int(result.rsplit(" ", 1)[-1])


# --- the worker's queries ----------------------------------------------------------------------


async def claim_due(
    connection: asyncpg.Connection,
    *,
    now: datetime,
    limit: int,
    per_endpoint: int,
    lease: timedelta,
) -> list[ClaimedDelivery]:
    """Take up to ``limit`` due deliveries (at most ``per_endpoint`` per endpoint), earliest first.

    Rows other workers hold are skipped (``FOR UPDATE SKIP LOCKED``); the claimed ones are moved
    to ``now + lease``, so no other worker takes them while this one sends them, and a worker
    that dies mid-attempt leaves them due again when the lease ends. Call it in a transaction.
    """
    rows = await connection.fetch(
        """
        WITH candidates AS (
            SELECT id FROM (
                SELECT due.id, row_number() OVER (
                           PARTITION BY due.endpoint_id ORDER BY due.next_attempt_at, due.id
                       ) AS rank
                  FROM (SELECT d.id, d.endpoint_id, d.next_attempt_at
                          FROM deliveries d
                         WHERE d.status = 'pending' AND d.next_attempt_at <= $1
                         ORDER BY d.next_attempt_at
                         LIMIT $2 * 4) due
            ) ranked
            WHERE rank <= $3
        ),
        locked AS (
            SELECT d.id
              FROM deliveries d
              JOIN webhook_endpoints e ON e.id = d.endpoint_id
             WHERE d.id IN (SELECT id FROM candidates)
               AND d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled
             ORDER BY d.next_attempt_at
             LIMIT $2
               FOR UPDATE OF d SKIP LOCKED
        )
        UPDATE deliveries d
           SET next_attempt_at = $1 + $4::interval
          FROM locked, webhook_endpoints e
         WHERE d.id = locked.id AND e.id = d.endpoint_id
        RETURNING d.id, d.endpoint_id, e.url, d.event_id, d.event_type, d.payload, d.attempts,
                  ARRAY(SELECT s.sealed FROM endpoint_secrets s
                         WHERE s.endpoint_id = d.endpoint_id
                           AND (s.not_after IS NULL OR s.not_after > $1)
                         ORDER BY s.not_after IS NOT NULL, s.not_after DESC) AS secrets
        """,
        now,
        limit,
        per_endpoint,
        lease,
    )
    return [
        ClaimedDelivery(
            id=row["id"],
            endpoint_id=row["endpoint_id"],
            url=row["url"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            payload=row["payload"],
            attempts=row["attempts"],
            secrets=tuple(row["secrets"]),
        )
        for row in rows
    ]


async def record_attempt(
    connection: asyncpg.Connection,
    delivery_id: uuid.UUID,
    attempt: AttemptRecord,
    *,
    status: DeliveryStatus,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    """Store one attempt and its outcome on the delivery (and the endpoint's health).

    ``status`` is the delivery's status after the attempt; ``next_attempt_at`` is set exactly
    when it stays pending.
    """
    await connection.execute(
        """
        INSERT INTO delivery_attempts
               (delivery_id, number, started_at, duration_ms, status_code, error)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (delivery_id, number) DO NOTHING
        """,
        delivery_id,
        attempt.number,
        attempt.started_at,
        attempt.duration_ms,
        attempt.status_code,
        attempt.error,
    )
    endpoint_id: uuid.UUID = await connection.fetchval(
        """
        UPDATE deliveries
           SET status = $2, attempts = greatest(attempts, $3), next_attempt_at = $4,
               last_status_code = $5, last_error = $6,
               delivered_at = CASE WHEN $2 = 'delivered' THEN $7 ELSE delivered_at END
         WHERE id = $1
        RETURNING endpoint_id
        """,
        delivery_id,
        status,
        attempt.number,
        next_attempt_at,
        attempt.status_code,
        attempt.error,
        now,
    )
    if status == "delivered":
        await connection.execute(
            "UPDATE webhook_endpoints SET first_failure_at = NULL WHERE id = $1", endpoint_id
        )
    else:
        await connection.execute(
            "UPDATE webhook_endpoints SET first_failure_at = coalesce(first_failure_at, $2)"
            " WHERE id = $1",
            endpoint_id,
            attempt.started_at,
        )


async def endpoint_first_failure(
    connection: asyncpg.Connection, endpoint_id: uuid.UUID
) -> datetime | None:
    value: datetime | None = await connection.fetchval(
        "SELECT first_failure_at FROM webhook_endpoints WHERE id = $1", endpoint_id
    )
    return value


# --- the delivery log --------------------------------------------------------------------------


async def list_deliveries(
    connection: asyncpg.Connection,
    *,
    endpoint_id: uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
    status: DeliveryStatus | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Deliveries, newest first, filtered by endpoint, event and status when given."""
    rows = await connection.fetch(
        """
        SELECT id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at,
               last_status_code, last_error, created_at, delivered_at
          FROM deliveries
         WHERE ($1::uuid IS NULL OR endpoint_id = $1)
           AND ($2::uuid IS NULL OR event_id = $2)
           AND ($3::text IS NULL OR status = $3)
         ORDER BY created_at DESC, id
         LIMIT $4
        """,
        endpoint_id,
        event_id,
        status,
        limit,
    )
    return [dict(row) for row in rows]


async def list_attempts(
    connection: asyncpg.Connection, delivery_id: uuid.UUID
) -> list[dict[str, Any]]:
    """The attempts of one delivery, in order."""
    rows = await connection.fetch(
        "SELECT number, started_at, duration_ms, status_code, error FROM delivery_attempts"
        " WHERE delivery_id = $1 ORDER BY number",
        delivery_id,
    )
    return [dict(row) for row in rows]
