"""The transactional outbox: events are written with the state change, then relayed to Kafka.

``publish(connection, event)`` inserts the event into the ``outbox`` table inside the caller's
transaction, so the event exists if and only if the change committed. The :class:`OutboxRelay`
then publishes unpublished rows in id order and marks them published.

Order: the events of one aggregate (one Kafka key) must reach Kafka in the order their
transactions committed. ``publish`` takes a transaction-level advisory lock on the key, so a
second writer of the same key gets its outbox id only after the first has committed: id order is
commit order per key, and the relay's id-ordered reads see the earlier row whenever they see the
later one.

Leadership: one relay per service database publishes at a time, the holder of a session-level
advisory lock on a dedicated connection. A standby retries the lock every poll interval, so it
takes over within about a second of the leader's death (its connection closes, the lock goes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from aiokafka import AIOKafkaProducer
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from maillage.common.catalog import catalog as default_catalog
from maillage.common.db import CONNECTION_ERRORS
from maillage.common.events import Catalog, Envelope, Event, encode_headers
from maillage.common.logging import get_logger
from maillage.common.telemetry import record_failure

log = get_logger(__name__)
tracer = trace.get_tracer("maillage.outbox")
meter = metrics.get_meter("maillage.outbox")

NOTIFY_CHANNEL = "maillage_outbox"
RELAY_LOCK_KEY = 0x6F75_7462_6F78  # "outbox"
TRACE_HEADERS = ("traceparent", "tracestate")

_published = meter.create_counter(
    "maillage.outbox.published", unit="{event}", description="Events published to Kafka"
)
_publish_latency = meter.create_histogram(
    "maillage.outbox.publish.latency",
    unit="s",
    description="From the outbox insert to the broker's acknowledgement",
)


async def publish(
    connection: asyncpg.Connection,
    event: Event,
    *,
    event_id: UUID | None = None,
    catalog: Catalog = default_catalog,
) -> UUID:
    """Record ``event`` in the outbox, inside the caller's transaction. Returns the event id."""
    if not connection.is_in_transaction():
        raise RuntimeError("publish() belongs inside the transaction that changes the state")
    spec = catalog.spec_of(event)
    key = spec.key_of(event)
    envelope = Envelope(
        id=event_id or uuid4(),
        type=spec.event_type,
        source=spec.source,
        subject=key,
        time=datetime.now(UTC),
    )
    headers = envelope.headers()
    propagate.inject(headers)  # the writer's trace continues in the relay
    # One round trip: the inserted row is read from the materialised lock, so the lock is held
    # before the row (and its outbox id) exists; a NOTIFY is delivered only at commit anyway.
    await connection.execute(
        """
        WITH locked AS MATERIALIZED (
            SELECT pg_advisory_xact_lock(hashtextextended($7, 0)), pg_notify($8, '')
        )
        INSERT INTO outbox (event_id, topic, key, type, headers, payload)
        SELECT $1::uuid, $2::text, $3::text, $4::text, $5::text::jsonb, $6::text FROM locked
        """,
        envelope.id,
        spec.topic.name,
        key,
        spec.event_type,
        json.dumps(headers),
        event.model_dump_json(),
        f"{spec.topic.name}/{key}",
        NOTIFY_CHANNEL,
    )
    return envelope.id


async def publish_many(
    connection: asyncpg.Connection,
    events: Sequence[Event],
    *,
    catalog: Catalog = default_catalog,
) -> list[UUID]:
    """Record many events of one topic in the outbox in one statement, inside the caller's
    transaction (a bulk writer: a national reference import). Returns their ids, in order.

    :func:`publish` takes one lock per key until commit, which a transaction of 66,000 events
    cannot hold (PostgreSQL's lock table overflows); this takes one lock for the whole topic, so
    batches of concurrent writers commit, and reach Kafka, one after the other. Per-key order
    holds between writers of one kind only: a topic is written with ``publish`` or with
    ``publish_many``, not both.
    """
    if not connection.is_in_transaction():
        raise RuntimeError("publish_many() belongs inside the transaction that changes the state")
    if not events:
        return []
    specs = [catalog.spec_of(event) for event in events]
    topics = {spec.topic.name for spec in specs}
    if len(topics) != 1:
        raise ValueError(f"publish_many() writes one topic at a time, not {sorted(topics)}")
    trace_context: dict[str, str] = {}
    propagate.inject(trace_context)  # the writer's trace continues in the relay
    now = datetime.now(UTC)
    ids, keys, types, headers, payloads = [], [], [], [], []
    for spec, event in zip(specs, events, strict=True):
        key = spec.key_of(event)
        envelope = Envelope(
            id=uuid4(), type=spec.event_type, source=spec.source, subject=key, time=now
        )
        ids.append(envelope.id)
        keys.append(key)
        types.append(spec.event_type)
        headers.append(json.dumps(envelope.headers() | trace_context))
        payloads.append(event.model_dump_json())
    (topic,) = topics
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), pg_notify($2, '')",
        topic,
        NOTIFY_CHANNEL,
    )
    await connection.execute(
        """
        INSERT INTO outbox (event_id, topic, key, type, headers, payload)
        SELECT event_id, $2, key, type, headers::jsonb, payload
          FROM unnest($1::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])
               WITH ORDINALITY AS event (event_id, key, type, headers, payload, position)
         ORDER BY position
        """,
        ids,
        topic,
        keys,
        types,
        headers,
        payloads,
    )
    return ids


@dataclass
class RelayStatus:
    role: str = "starting"  # starting | standby | leader | stopped
    backlog: int = 0
    oldest_age_s: float = 0.0
    failing_since: float | None = None
    last_error: str | None = None

    def problem(self) -> str | None:
        """Why readiness should fail, or None."""
        if self.role == "leader" and self.failing_since is not None:
            since = time.monotonic() - self.failing_since
            return (
                f"publishing fails for {since:.0f} s ({self.last_error}); "
                f"{self.backlog} events wait, the oldest for {self.oldest_age_s:.0f} s"
            )
        return None


class OutboxRelay:
    """Publishes the outbox of one service database to Kafka. Run one per process; the advisory
    lock makes exactly one of them active."""

    def __init__(
        self,
        dsn: str,
        bootstrap_servers: str,
        *,
        service: str,
        idempotent: bool = True,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retention_hours: float = 168,
        inbox_retention_days: float = 30,
        prune_interval: float = 60.0,
    ) -> None:
        self.dsn = dsn
        self.bootstrap_servers = bootstrap_servers
        self.service = service
        self.idempotent = idempotent
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention_hours = retention_hours
        self.inbox_retention_days = inbox_retention_days
        self.prune_interval = prune_interval
        self.status = RelayStatus()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._last_prune = 0.0
        self._last_stats = 0.0
        meter.create_observable_gauge(
            "maillage.outbox.backlog",
            callbacks=[self._observe_backlog],
            unit="{event}",
            description="Events in the outbox not yet published",
        )
        meter.create_observable_gauge(
            "maillage.outbox.oldest_unpublished_age",
            callbacks=[self._observe_age],
            unit="s",
            description="Age of the oldest unpublished event",
        )

    def _observe_backlog(self, _options: Any) -> list[metrics.Observation]:
        return [metrics.Observation(self.status.backlog, {"service": self.service})]

    def _observe_age(self, _options: Any) -> list[metrics.Observation]:
        return [metrics.Observation(self.status.oldest_age_s, {"service": self.service})]

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Until :meth:`stop`: wait for leadership, then relay; step down on any lost connection."""
        try:
            while not self._stop.is_set():
                try:
                    await self._run_once()
                except CONNECTION_ERRORS as error:
                    log.warning("outbox relay lost its database connection", error=str(error))
                    self.status.role = "starting"
                    await self._sleep(self.poll_interval)
        finally:
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
            self.status.role = "stopped"

    async def _run_once(self) -> None:
        connection: asyncpg.Connection = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                if await connection.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                    break
                self.status.role = "standby"
                await self._sleep(self.poll_interval)
            else:
                return
            log.info("outbox relay is the leader", service=self.service)
            self.status.role = "leader"
            await connection.add_listener(NOTIFY_CHANNEL, self._notified)
            await self._relay(connection)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)

    def _notified(self, *_args: object) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _relay(self, connection: asyncpg.Connection) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            await self._housekeeping(connection)
            if backoff:
                await self._sleep(backoff)
            # Cleared before the read, not after the batch: a NOTIFY that arrives while the batch
            # is read, sent and marked (a commit the read did not see) must wake the wait below.
            self._wake.clear()
            try:
                published = await self._publish_batch(connection)
            except CONNECTION_ERRORS:
                raise
            except Exception as error:  # the broker: unreachable, timing out, refusing
                if self.status.failing_since is None:
                    self.status.failing_since = time.monotonic()
                    log.warning("outbox relay cannot publish", error=repr(error))
                self.status.last_error = f"{type(error).__name__}: {error}"[:300]
                # Recorded whatever the sampling (decision 50): one span per failed batch.
                record_failure(
                    "outbox relay publish failed", error, attributes={"service": self.service}
                )
                backoff = min(max(backoff * 2, 0.2), 5.0)
                continue
            if self.status.failing_since is not None:
                log.info(
                    "outbox relay publishes again",
                    after_s=time.monotonic() - self.status.failing_since,
                )
            self.status.failing_since = None
            self.status.last_error = None
            backoff = 0.0
            if published < self.batch_size and not self._stop.is_set():
                # Nothing more for now: wait for a NOTIFY, or poll (a NOTIFY can be missed while
                # the connection was being replaced, and rows can be written by other means).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=f"maillage-{self.service}-relay",
                acks="all",
                enable_idempotence=self.idempotent,
                linger_ms=2,
                request_timeout_ms=10_000,
            )
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _publish_batch(self, connection: asyncpg.Connection) -> int:
        rows = await connection.fetch(
            """
            SELECT id, event_id, topic, key, type, headers::text AS headers, payload, created_at
            FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1
            """,
            self.batch_size,
        )
        if not rows:
            return 0
        producer = await self._producer_started()
        spans = []
        sends = []
        try:
            for row in rows:
                stored: dict[str, str] = json.loads(row["headers"])
                span = tracer.start_span(
                    f"{row['topic']} publish",
                    context=propagate.extract(stored),
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": "kafka",
                        "messaging.operation.type": "publish",
                        "messaging.destination.name": row["topic"],
                        "messaging.message.id": str(row["event_id"]),
                        "messaging.kafka.message.key": row["key"],
                        "cloudevents.event_type": row["type"],
                    },
                )
                spans.append(span)
                headers = {k: v for k, v in stored.items() if k not in TRACE_HEADERS}
                propagate.inject(headers, context=trace.set_span_in_context(span))
                sends.append(
                    await producer.send(
                        row["topic"],
                        value=row["payload"].encode(),
                        key=row["key"].encode(),
                        headers=encode_headers(headers),
                    )
                )
            results = await asyncio.gather(*sends, return_exceptions=True)
        except BaseException as error:
            for span in spans:
                span.set_status(Status(StatusCode.ERROR, str(error)))
                span.end()
            raise
        acked: list[int] = []
        failure: BaseException | None = None
        now = datetime.now(UTC)
        for row, span, result in zip(rows, spans, results, strict=False):
            if isinstance(result, BaseException):
                failure = failure or result
                span.set_status(Status(StatusCode.ERROR, str(result)))
            elif failure is None:  # only the acknowledged prefix: the rest is sent again
                acked.append(row["id"])
                _publish_latency.record(
                    (now - row["created_at"]).total_seconds(), {"topic": row["topic"]}
                )
            span.end()
        for span in spans[len(results) :]:
            span.end()
        if acked:
            await self._mark_published(connection, acked)
            _published.add(len(acked), {"service": self.service})
        if failure is not None:
            raise failure
        return len(rows)

    async def _mark_published(self, connection: asyncpg.Connection, ids: list[int]) -> None:
        await connection.execute(
            "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[])", ids
        )

    async def _housekeeping(self, connection: asyncpg.Connection) -> None:
        now = time.monotonic()
        if now - self._last_stats >= 1.0:
            self._last_stats = now
            row = await connection.fetchrow(
                """
                SELECT count(*) AS backlog,
                       coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS age
                FROM outbox WHERE published_at IS NULL
                """
            )
            assert row is not None
            self.status.backlog = row["backlog"]
            self.status.oldest_age_s = float(row["age"])
        if now - self._last_prune >= self.prune_interval:
            self._last_prune = now
            await connection.execute(
                """
                DELETE FROM outbox WHERE id IN (
                    SELECT id FROM outbox
                    WHERE published_at < clock_timestamp() - $1::float8 * interval '1 hour'
                    LIMIT 10000)
                """,
                self.retention_hours,
            )
            await connection.execute(
                """
                DELETE FROM inbox WHERE ctid IN (
                    SELECT ctid FROM inbox
                    WHERE processed_at < now() - $1::float8 * interval '1 day' LIMIT 10000)
                """,
                self.inbox_retention_days,
            )
