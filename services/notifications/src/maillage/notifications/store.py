"""SQL of the notifications service: asyncpg queries on its own database only.

Functions take a connection (``transaction(pool)`` gives one) and the current time ``now`` from
the caller, so the worker's clock is the only clock and tests can move it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
from opentelemetry import propagate

from maillage.common.catalog import PartnerFacts
from maillage.common.pagination import Position
from maillage.notifications import domain, mail

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
    trace_context: Mapping[str, str] = field(default_factory=dict)  # W3C, of the event


@dataclass(frozen=True)
class AttemptRecord:
    """One finished attempt, as the worker saw it."""

    number: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None


def current_trace_context() -> dict[str, str]:
    """The W3C headers of the current span, to store with what is sent later on its behalf."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


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
    connection: asyncpg.Connection, endpoint_id: uuid.UUID, *, reason: str, notify: bool
) -> int:
    """Disable an endpoint and stop its pending deliveries; the number of deliveries stopped.

    When this disables an enabled endpoint and ``notify`` holds (the worker gave up on it, not
    its partner's own request), the partner is told by e-mail in the same transaction.
    """
    endpoint = await connection.fetchrow(
        """
        UPDATE webhook_endpoints e SET enabled = false, disabled_reason = $2
          FROM (SELECT id, enabled FROM webhook_endpoints WHERE id = $1 FOR UPDATE) before
         WHERE e.id = before.id
        RETURNING e.partner_id, e.url, e.first_failure_at, before.enabled AS was_enabled
        """,
        endpoint_id,
        reason,
    )
    if notify and endpoint is not None and endpoint["was_enabled"]:
        await mail_partner(
            connection,
            endpoint["partner_id"],
            template="endpoint_disabled",
            context={
                "endpoint_url": endpoint["url"],
                "reason": reason,
                "failing_since": endpoint["first_failure_at"],
            },
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
        INSERT INTO deliveries
               (id, endpoint_id, event_id, event_type, payload, next_attempt_at, trace_context)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (endpoint_id, event_id) DO NOTHING
        RETURNING id
        """,
        uuid.uuid4(),
        endpoint_id,
        event_id,
        event_type,
        payload,
        now,
        current_trace_context(),
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
    deliveries were queued by this call. The current trace context (the consumer's span, itself
    in the trace of the request that caused the event) is stored with each delivery.
    """
    result: str = await connection.execute(
        """
        INSERT INTO deliveries
               (id, endpoint_id, event_id, event_type, payload, next_attempt_at, trace_context)
        SELECT gen_random_uuid(), e.id, $2, $3, $4, $5, $6
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
        current_trace_context(),
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
                  d.trace_context,
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
            trace_context=row["trace_context"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class AttemptOutcome:
    """One finished attempt and what it makes of its delivery."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    attempt: AttemptRecord
    status: DeliveryStatus  # the delivery's status after the attempt
    next_attempt_at: datetime | None  # set exactly when it stays pending


async def record_attempts(
    connection: asyncpg.Connection, outcomes: Sequence[AttemptOutcome], *, now: datetime
) -> None:
    """Store finished attempts, their deliveries' outcomes and the endpoints' health.

    A handful of statements whatever the number of attempts (the worker records them in
    batches). ``outcomes`` are in the order the attempts finished: an endpoint's health follows
    its last attempts (a success clears ``first_failure_at``, a failure sets it if unset).

    The endpoints are locked first, then their deliveries: the order every writer takes (the
    API disabling or deleting an endpoint too), so none deadlocks with another. An attempt may
    finish after its partner deleted or disabled the endpoint: a deleted delivery records
    nothing, and a disabled one stays disabled unless the attempt delivered it.
    """
    if not outcomes:
        return
    await connection.execute(
        "SELECT 1 FROM webhook_endpoints WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        sorted({o.endpoint_id for o in outcomes}),
    )
    await connection.execute(
        """
        INSERT INTO delivery_attempts
               (delivery_id, number, started_at, duration_ms, status_code, error)
        SELECT u.* FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::int[],
                               $6::text[])
                        AS u (delivery_id, number, started_at, duration_ms, status_code, error)
          JOIN deliveries d ON d.id = u.delivery_id
        ON CONFLICT (delivery_id, number) DO NOTHING
        """,
        [o.delivery_id for o in outcomes],
        [o.attempt.number for o in outcomes],
        [o.attempt.started_at for o in outcomes],
        [o.attempt.duration_ms for o in outcomes],
        [o.attempt.status_code for o in outcomes],
        [o.attempt.error for o in outcomes],
    )
    await connection.execute(
        """
        UPDATE deliveries d
           SET status = CASE WHEN d.status = 'pending' OR u.status = 'delivered'
                             THEN u.status ELSE d.status END,
               next_attempt_at = CASE WHEN d.status = 'pending' AND u.status = 'pending'
                                      THEN u.next_attempt_at END,
               attempts = greatest(d.attempts, u.number),
               last_status_code = u.status_code,
               last_error = u.error,
               delivered_at = CASE WHEN u.status = 'delivered' THEN $7 ELSE d.delivered_at END
          FROM unnest($1::uuid[], $2::text[], $3::int[], $4::timestamptz[], $5::int[], $6::text[])
               AS u (id, status, number, next_attempt_at, status_code, error)
         WHERE d.id = u.id
        """,
        [o.delivery_id for o in outcomes],
        [o.status for o in outcomes],
        [o.attempt.number for o in outcomes],
        [o.next_attempt_at for o in outcomes],
        [o.attempt.status_code for o in outcomes],
        [o.attempt.error for o in outcomes],
        now,
    )
    # Per endpoint: healthy if its last attempt succeeded; else failing since its first failure
    # after its last success (or since before, when no success came in this batch).
    healthy: set[uuid.UUID] = set()
    failing: dict[uuid.UUID, tuple[datetime, bool]] = {}  # since, after a success of the batch
    for o in outcomes:
        if o.status == "delivered":
            healthy.add(o.endpoint_id)
            failing.pop(o.endpoint_id, None)
        elif o.endpoint_id not in failing:
            failing[o.endpoint_id] = (o.attempt.started_at, o.endpoint_id in healthy)
            healthy.discard(o.endpoint_id)
    if healthy:
        await connection.execute(
            "UPDATE webhook_endpoints SET first_failure_at = NULL WHERE id = ANY($1::uuid[])",
            list(healthy),
        )
    if failing:
        await connection.execute(
            """
            UPDATE webhook_endpoints e
               SET first_failure_at = CASE WHEN f.reset THEN f.since
                                           ELSE coalesce(e.first_failure_at, f.since) END
              FROM unnest($1::uuid[], $2::timestamptz[], $3::boolean[]) AS f (id, since, reset)
             WHERE e.id = f.id
            """,
            list(failing),
            [since for since, _ in failing.values()],
            [reset for _, reset in failing.values()],
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


# --- the partner read model --------------------------------------------------------------------


@dataclass(frozen=True)
class KnownPartner:
    """A partner as the registry last published it (levels 2 and 3 only)."""

    id: uuid.UUID
    kind: str
    legal_name: str
    status: str
    location: domain.GeoPoint | None


async def apply_partner(connection: asyncpg.Connection, facts: PartnerFacts) -> bool:
    """Keep the read model of a partner; an event older than what is stored changes nothing.

    True when the row was written.
    """
    written: bool | None = await connection.fetchval(
        """
        INSERT INTO partners (id, kind, legal_name, status, latitude, longitude, departement,
                              version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (id) DO UPDATE
           SET kind = EXCLUDED.kind, legal_name = EXCLUDED.legal_name,
               status = EXCLUDED.status, latitude = EXCLUDED.latitude,
               longitude = EXCLUDED.longitude, departement = EXCLUDED.departement,
               version = EXCLUDED.version, updated_at = now()
         WHERE partners.version < EXCLUDED.version
        RETURNING true
        """,
        facts.partner_id,
        facts.kind,
        facts.legal_name,
        facts.status,
        facts.latitude,
        facts.longitude,
        facts.departement,
        facts.version,
    )
    return bool(written)


def _location(row: Mapping[str, Any]) -> domain.GeoPoint | None:
    if row["latitude"] is None or row["longitude"] is None:
        return None
    return domain.GeoPoint(row["latitude"], row["longitude"])


async def known_partners(
    connection: asyncpg.Connection, partner_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, KnownPartner]:
    """The partners of the read model among ``partner_ids`` (unknown ones are absent)."""
    rows = await connection.fetch(
        "SELECT id, kind, legal_name, status, latitude, longitude FROM partners"
        " WHERE id = ANY($1::uuid[])",
        list(partner_ids),
    )
    return {
        row["id"]: KnownPartner(
            row["id"], row["kind"], row["legal_name"], row["status"], _location(row)
        )
        for row in rows
    }


async def offer_followers(
    connection: asyncpg.Connection, near: domain.GeoPoint
) -> list[domain.OfferFollower]:
    """Schools following stage offers that may be close enough to ``near``.

    A latitude band as wide as the largest distance a school may choose narrows the rows; the
    exact rule (each school's own distance) is :func:`domain.schools_near`.
    """
    band = domain.latitude_degrees(domain.MAX_OFFERS_WITHIN_KM)
    rows = await connection.fetch(
        """
        SELECT p.id, p.latitude, p.longitude, s.stage_offers_within_km
          FROM partner_settings s
          JOIN partners p ON p.id = s.partner_id
         WHERE s.stage_offers_within_km IS NOT NULL
           AND p.kind = ANY($1::text[])
           AND p.latitude BETWEEN $2::float8 - $3::float8 AND $2::float8 + $3::float8
           AND p.longitude IS NOT NULL
        """,
        sorted(domain.SCHOOL_KINDS),
        near.latitude,
        band,
    )
    return [
        domain.OfferFollower(
            row["id"],
            domain.GeoPoint(row["latitude"], row["longitude"]),
            row["stage_offers_within_km"],
        )
        for row in rows
    ]


# --- channels and preferences ------------------------------------------------------------------


async def wanted_channels(
    connection: asyncpg.Connection, partner_ids: Collection[uuid.UUID], event_type: str
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """Which of these partners want this event type by webhook, and which by e-mail.

    A partner without a preference for the type wants both (the default).
    """
    rows = await connection.fetch(
        """
        SELECT wanted.id, coalesce(p.webhook, true) AS webhook, coalesce(p.email, true) AS email
          FROM unnest($1::uuid[]) AS wanted (id)
          LEFT JOIN preferences p ON p.partner_id = wanted.id AND p.event_type = $2
        """,
        list(partner_ids),
        event_type,
    )
    webhook = {row["id"] for row in rows if row["webhook"]}
    email = {row["id"] for row in rows if row["email"]}
    return webhook, email


async def email_recipients(
    connection: asyncpg.Connection, partner_ids: Collection[uuid.UUID]
) -> list[tuple[uuid.UUID, str]]:
    """(partner, address) of every confirmed, enabled e-mail channel of these partners."""
    rows = await connection.fetch(
        """
        SELECT partner_id, address FROM email_channels
         WHERE partner_id = ANY($1::uuid[]) AND enabled AND confirmed_at IS NOT NULL
         ORDER BY partner_id, address
        """,
        list(partner_ids),
    )
    return [(row["partner_id"], row["address"]) for row in rows]


async def mail_partner(
    connection: asyncpg.Connection,
    partner_id: uuid.UUID,
    *,
    template: str,
    context: Mapping[str, Any],
    dedupe_key: str | None = None,
) -> int:
    """Queue one mail to every confirmed channel of a partner (about its own account: no
    preference applies); how many were queued."""
    partner = (await known_partners(connection, [partner_id])).get(partner_id)
    name = partner.legal_name if partner else None
    queued = 0
    for _, address in await email_recipients(connection, [partner_id]):
        mail_id = await mail.queue(
            connection,
            to=address,
            template=template,
            context={**context, "recipient": name, "names": {str(partner_id): name}},
            partner_id=partner_id,
            dedupe_key=dedupe_key,
        )
        queued += mail_id is not None
    return queued


# --- endpoint health: the warning before disabling ---------------------------------------------


async def warn_failing_endpoints(
    connection: asyncpg.Connection,
    *,
    now: datetime,
    disable_after: timedelta,
    warn_ahead: timedelta,
) -> int:
    """E-mail the partners of endpoints due the "will be disabled" warning; how many endpoints.

    Once per failure streak: an endpoint warned after its streak began is skipped, and a new
    streak (a success resets ``first_failure_at``) is due its own warning.
    """
    rows = await connection.fetch(
        """
        SELECT id, partner_id, url, first_failure_at FROM webhook_endpoints
         WHERE enabled AND first_failure_at <= $1
           AND (disable_warning_sent_at IS NULL OR disable_warning_sent_at < first_failure_at)
         ORDER BY first_failure_at
           FOR UPDATE SKIP LOCKED
        """,
        now - max(disable_after - warn_ahead, timedelta(0)),
    )
    warned = 0
    for row in rows:
        first_failure_at: datetime = row["first_failure_at"]
        if not domain.warn_before_disable(
            first_failure_at, now, after=disable_after, ahead=warn_ahead
        ):
            continue
        await mail_partner(
            connection,
            row["partner_id"],
            template="endpoint_disable_warning",
            context={
                "endpoint_url": row["url"],
                "failing_since": first_failure_at,
                "disable_at": first_failure_at + disable_after,
            },
            dedupe_key=f"endpoint-disable-warning:{row['id']}:{first_failure_at.isoformat()}",
        )
        await connection.execute(
            "UPDATE webhook_endpoints SET disable_warning_sent_at = $2 WHERE id = $1",
            row["id"],
            now,
        )
        warned += 1
    return warned


# --- the subscriptions API ---------------------------------------------------------------------
# A partner's webhook endpoints, e-mail channels, preferences and settings, as the API reads and
# changes them. ``partner_id=None`` on a read means every partner's (operators).


async def lock_partner_subscriptions(connection: asyncpg.Connection, partner_id: uuid.UUID) -> None:
    """Serialise one partner's creations until the transaction ends (limits are counted)."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock("
        " hashtextextended('notifications.partner:' || $1::uuid::text, 0))",
        partner_id,
    )


_ENDPOINT = """
    SELECT e.id, e.partner_id, e.url, e.event_types, e.description, e.enabled, e.disabled_reason,
           e.first_failure_at AS failing_since, e.created_at, e.updated_at,
           (SELECT max(s.not_after) FROM endpoint_secrets s
             WHERE s.endpoint_id = e.id AND s.not_after > $1) AS previous_secret_expires_at
      FROM webhook_endpoints e
"""


async def count_endpoints(connection: asyncpg.Connection, partner_id: uuid.UUID) -> int:
    count: int = await connection.fetchval(
        "SELECT count(*) FROM webhook_endpoints WHERE partner_id = $1", partner_id
    )
    return count


async def find_endpoint(
    connection: asyncpg.Connection,
    endpoint_id: uuid.UUID,
    *,
    partner_id: uuid.UUID | None,
    now: datetime,
    for_update: bool = False,
) -> dict[str, Any] | None:
    """One endpoint as the API shows it (never a secret); None when it is not this partner's."""
    row = await connection.fetchrow(
        _ENDPOINT
        + " WHERE e.id = $2 AND ($3::uuid IS NULL OR e.partner_id = $3)"
        + (" FOR UPDATE OF e" if for_update else ""),
        now,
        endpoint_id,
        partner_id,
    )
    return dict(row) if row is not None else None


async def list_endpoints(
    connection: asyncpg.Connection,
    *,
    partner_id: uuid.UUID | None,
    after: Position | None,
    limit: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Endpoints, oldest first, from the page start."""
    rows = await connection.fetch(
        _ENDPOINT
        + """
         WHERE ($2::uuid IS NULL OR e.partner_id = $2)
           AND ($3::timestamptz IS NULL OR (e.created_at, e.id) > ($3, $4::uuid))
         ORDER BY e.created_at, e.id
         LIMIT $5
        """,
        now,
        partner_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [dict(row) for row in rows]


async def update_endpoint(
    connection: asyncpg.Connection,
    endpoint_id: uuid.UUID,
    *,
    url: str,
    event_types: Sequence[str],
    description: str | None,
    now: datetime,
) -> None:
    """New settings for an endpoint; a new URL starts a new health record."""
    await connection.execute(
        """
        UPDATE webhook_endpoints
           SET first_failure_at = CASE WHEN url = $2 THEN first_failure_at END,
               url = $2, event_types = $3, description = $4, updated_at = $5
         WHERE id = $1
        """,
        endpoint_id,
        url,
        list(event_types),
        description,
        now,
    )


async def enable_endpoint(
    connection: asyncpg.Connection, endpoint_id: uuid.UUID, *, now: datetime
) -> None:
    """Enabled again, healthy until it fails anew (its failure streak is forgotten)."""
    await connection.execute(
        """
        UPDATE webhook_endpoints
           SET enabled = true, disabled_reason = NULL, first_failure_at = NULL, updated_at = $2
         WHERE id = $1
        """,
        endpoint_id,
        now,
    )


async def touch_endpoint(
    connection: asyncpg.Connection, endpoint_id: uuid.UUID, *, now: datetime
) -> None:
    await connection.execute(
        "UPDATE webhook_endpoints SET updated_at = $2 WHERE id = $1", endpoint_id, now
    )


async def delete_endpoint(connection: asyncpg.Connection, endpoint_id: uuid.UUID) -> None:
    """The endpoint, its secrets, deliveries and attempts (ON DELETE CASCADE)."""
    await connection.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint_id)


# --- e-mail channels ---------------------------------------------------------------------------

_CHANNEL = """
    SELECT id, partner_id, address, confirmed_at, confirmation_expires_at, confirmation_sent_at,
           enabled, created_at
      FROM email_channels
"""


async def count_email_channels(connection: asyncpg.Connection, partner_id: uuid.UUID) -> int:
    count: int = await connection.fetchval(
        "SELECT count(*) FROM email_channels WHERE partner_id = $1", partner_id
    )
    return count


async def create_email_channel(
    connection: asyncpg.Connection,
    *,
    channel_id: uuid.UUID,
    partner_id: uuid.UUID,
    address: str,
    token_hash: bytes,
    expires_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    """A pending channel awaiting its confirmation token; UniqueViolationError if it exists."""
    row = await connection.fetchrow(
        """
        INSERT INTO email_channels (id, partner_id, address, confirmation_token_hash,
                                    confirmation_expires_at, confirmation_sent_at, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $6)
        RETURNING id, partner_id, address, confirmed_at, confirmation_expires_at,
                  confirmation_sent_at, enabled, created_at
        """,
        channel_id,
        partner_id,
        address,
        token_hash,
        expires_at,
        now,
    )
    return dict(row)


async def find_email_channel(
    connection: asyncpg.Connection,
    channel_id: uuid.UUID,
    *,
    partner_id: uuid.UUID | None,
    for_update: bool = False,
) -> dict[str, Any] | None:
    row = await connection.fetchrow(
        _CHANNEL
        + " WHERE id = $1 AND ($2::uuid IS NULL OR partner_id = $2)"
        + (" FOR UPDATE" if for_update else ""),
        channel_id,
        partner_id,
    )
    return dict(row) if row is not None else None


async def list_email_channels(
    connection: asyncpg.Connection,
    *,
    partner_id: uuid.UUID | None,
    after: Position | None,
    limit: int,
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        _CHANNEL
        + """
         WHERE ($1::uuid IS NULL OR partner_id = $1)
           AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
         ORDER BY created_at, id
         LIMIT $4
        """,
        partner_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [dict(row) for row in rows]


async def renew_confirmation(
    connection: asyncpg.Connection,
    channel_id: uuid.UUID,
    *,
    token_hash: bytes,
    expires_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    """A new confirmation token for a pending channel: the previous one no longer works."""
    row = await connection.fetchrow(
        """
        UPDATE email_channels
           SET confirmation_token_hash = $2, confirmation_expires_at = $3,
               confirmation_sent_at = $4
         WHERE id = $1
        RETURNING id, partner_id, address, confirmed_at, confirmation_expires_at,
                  confirmation_sent_at, enabled, created_at
        """,
        channel_id,
        token_hash,
        expires_at,
        now,
    )
    return dict(row)


async def channel_by_token(
    connection: asyncpg.Connection, token_hash: bytes
) -> dict[str, Any] | None:
    """The pending channel a confirmation token belongs to (locked), expired or not."""
    row = await connection.fetchrow(
        _CHANNEL + " WHERE confirmation_token_hash = $1 FOR UPDATE", token_hash
    )
    return dict(row) if row is not None else None


async def confirm_email_channel(
    connection: asyncpg.Connection, channel_id: uuid.UUID, *, now: datetime
) -> dict[str, Any]:
    """Confirmed: the token is spent (its hash is forgotten)."""
    row = await connection.fetchrow(
        """
        UPDATE email_channels
           SET confirmed_at = $2, confirmation_token_hash = NULL, confirmation_expires_at = NULL
         WHERE id = $1
        RETURNING id, partner_id, address, confirmed_at, confirmation_expires_at,
                  confirmation_sent_at, enabled, created_at
        """,
        channel_id,
        now,
    )
    return dict(row)


async def delete_email_channel(connection: asyncpg.Connection, channel_id: uuid.UUID) -> None:
    await connection.execute("DELETE FROM email_channels WHERE id = $1", channel_id)


# --- preferences and settings ------------------------------------------------------------------


async def preferences_of(
    connection: asyncpg.Connection, partner_id: uuid.UUID
) -> dict[str, tuple[bool, bool]]:
    """The partner's stored choices: event type → (webhook, email); absent types are defaults."""
    rows = await connection.fetch(
        "SELECT event_type, webhook, email FROM preferences WHERE partner_id = $1", partner_id
    )
    return {row["event_type"]: (row["webhook"], row["email"]) for row in rows}


async def set_preference(
    connection: asyncpg.Connection,
    partner_id: uuid.UUID,
    event_type: str,
    *,
    webhook: bool,
    email: bool,
    now: datetime,
) -> None:
    await connection.execute(
        """
        INSERT INTO preferences (partner_id, event_type, webhook, email, updated_at)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (partner_id, event_type)
        DO UPDATE SET webhook = $3, email = $4, updated_at = $5
        """,
        partner_id,
        event_type,
        webhook,
        email,
        now,
    )


async def settings_of(connection: asyncpg.Connection, partner_id: uuid.UUID) -> dict[str, Any]:
    """The partner's settings; defaults when it never set any."""
    row = await connection.fetchrow(
        "SELECT stage_offers_within_km, updated_at FROM partner_settings WHERE partner_id = $1",
        partner_id,
    )
    return dict(row) if row is not None else {"stage_offers_within_km": None, "updated_at": None}


async def put_settings(
    connection: asyncpg.Connection,
    partner_id: uuid.UUID,
    *,
    stage_offers_within_km: float | None,
    now: datetime,
) -> None:
    await connection.execute(
        """
        INSERT INTO partner_settings (partner_id, stage_offers_within_km, updated_at)
        VALUES ($1, $2, $3)
        ON CONFLICT (partner_id) DO UPDATE SET stage_offers_within_km = $2, updated_at = $3
        """,
        partner_id,
        stage_offers_within_km,
        now,
    )


# --- the delivery log, resend and recover ------------------------------------------------------

_DELIVERY_COLUMNS = """
    SELECT d.id, d.endpoint_id, e.partner_id, d.event_id, d.event_type, d.status, d.attempts,
           d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.delivered_at,
           last.duration_ms AS last_latency_ms, last.started_at AS last_attempt_at
"""
_DELIVERY_FROM = """
      FROM deliveries d
      JOIN webhook_endpoints e ON e.id = d.endpoint_id
      LEFT JOIN LATERAL (
            SELECT a.duration_ms, a.started_at FROM delivery_attempts a
             WHERE a.delivery_id = d.id ORDER BY a.number DESC LIMIT 1
      ) last ON true
"""


async def delivery_log(
    connection: asyncpg.Connection,
    *,
    partner_id: uuid.UUID | None,
    endpoint_id: uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
    status: DeliveryStatus | None = None,
    after: Position | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """Deliveries, newest first, with their last attempt's latency, from the page start."""
    rows = await connection.fetch(
        _DELIVERY_COLUMNS
        + _DELIVERY_FROM
        + """
         WHERE ($1::uuid IS NULL OR e.partner_id = $1)
           AND ($2::uuid IS NULL OR d.endpoint_id = $2)
           AND ($3::uuid IS NULL OR d.event_id = $3)
           AND ($4::text IS NULL OR d.status = $4)
           AND ($5::timestamptz IS NULL OR (d.created_at, d.id) < ($5, $6::uuid))
         ORDER BY d.created_at DESC, d.id DESC
         LIMIT $7
        """,
        partner_id,
        endpoint_id,
        event_id,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [dict(row) for row in rows]


async def find_delivery(
    connection: asyncpg.Connection,
    delivery_id: uuid.UUID,
    *,
    partner_id: uuid.UUID | None,
    for_update: bool = False,
) -> dict[str, Any] | None:
    """One delivery with its payload and its endpoint's state; None when not this partner's."""
    row = await connection.fetchrow(
        _DELIVERY_COLUMNS
        + ", d.payload, e.enabled AS endpoint_enabled"
        + _DELIVERY_FROM
        + " WHERE d.id = $1 AND ($2::uuid IS NULL OR e.partner_id = $2)"
        + (" FOR UPDATE OF d" if for_update else ""),
        delivery_id,
        partner_id,
    )
    return dict(row) if row is not None else None


async def resend_delivery(
    connection: asyncpg.Connection, delivery_id: uuid.UUID, *, now: datetime
) -> None:
    """Due again at ``now`` (same event id, so the same ``webhook-id``): one more attempt."""
    await connection.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = $2 WHERE id = $1",
        delivery_id,
        now,
    )


async def recover_deliveries(
    connection: asyncpg.Connection, endpoint_id: uuid.UUID, *, since: datetime, now: datetime
) -> int:
    """Every delivery of the endpoint created since ``since`` that failed, or that was stopped
    when the endpoint was disabled, due again at ``now``; how many."""
    result: str = await connection.execute(
        """
        UPDATE deliveries SET status = 'pending', next_attempt_at = $3
         WHERE endpoint_id = $1 AND created_at >= $2 AND status IN ('failed', 'disabled')
        """,
        endpoint_id,
        since,
        now,
    )
    return int(result.rsplit(" ", 1)[-1])
