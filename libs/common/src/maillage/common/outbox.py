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

Size: no single event may stall the relay. ``publish`` refuses, inside the business transaction,
an event whose record would exceed the producer's limit (:class:`EventTooLarge`, a 422 problem:
the transaction rolls back, nothing is committed). A row the broker (or the producer) still
refuses for good, because the broker's limit is lower than the service was told or the row was
written before, is tried once alone, then set aside in ``outbox_dead_letters`` (counted in
``maillage.outbox.dead_letters``, named by ``/readyz``, listed and moved back by ``maillage dlq``)
while the rows behind it flow. Any other failure (broker unreachable, timing out) is retried
with backoff, in order, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from maillage.common.catalog import catalog as default_catalog
from maillage.common.db import CONNECTION_ERRORS
from maillage.common.events import Catalog, Envelope, Event, encode_headers
from maillage.common.logging import get_logger
from maillage.common.problems import Problem
from maillage.common.telemetry import (
    failure_span,
    is_unsampled,
    record_failure,
    start_child_span,
)

log = get_logger(__name__)
tracer = trace.get_tracer("maillage.outbox")
meter = metrics.get_meter("maillage.outbox")

NOTIFY_CHANNEL = "maillage_outbox"
RELAY_LOCK_KEY = 0x6F75_7462_6F78  # "outbox"
TRACE_HEADERS = ("traceparent", "tracestate")

DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
"""Kafka's default ``message.max.bytes`` and aiokafka's default ``max_request_size``."""
RELAY_HEADROOM_BYTES = 512
"""Kept free under the limit when an event is written: the relay replaces the writer's trace
headers with its own span's, which may be longer (``tracestate``)."""
REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
"""What the broker or the producer answers for a record it will never take, however often sent."""

_limits = {"max_message_bytes": DEFAULT_MAX_MESSAGE_BYTES}


def set_max_message_bytes(limit: int) -> None:
    """The producer's limit (``<SERVICE>_KAFKA_MAX_MESSAGE_BYTES``), set by the app factory:
    :func:`publish` refuses events over it."""
    _limits["max_message_bytes"] = limit


def max_event_bytes() -> int:
    """The largest record :func:`publish` accepts, in bytes (key, value and headers)."""
    return _limits["max_message_bytes"] - RELAY_HEADROOM_BYTES


def record_bytes(key: str, payload: str, headers: dict[str, str]) -> int:
    """The size of the Kafka record as the producer counts it (aiokafka's own estimate)."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        key.encode(), payload.encode(), encode_headers(headers)
    )
    return size


class EventTooLarge(Problem):
    """An event larger than the bus takes: 422 ``event_too_large``, raised inside the business
    transaction, which therefore commits nothing. Fields' documented maximum lengths keep valid
    requests far below the limit; this is the last guard."""

    def __init__(self, event_type: str, size: int, limit: int) -> None:
        super().__init__(
            422,
            "event_too_large",
            "Données trop volumineuses",
            detail=f"Ces données feraient un événement de {size} octets, au-delà des {limit} "
            "octets que le bus d'événements accepte ; rien n'a été enregistré.",
            event_type=event_type,
            size=size,
            limit=limit,
        )


def _check_size(event_type: str, key: str, payload: str, headers: dict[str, str]) -> None:
    size = record_bytes(key, payload, headers)
    if size > max_event_bytes():
        log.warning("event refused: too large", event_type=event_type, size=size)
        raise EventTooLarge(event_type, size, max_event_bytes())


_published = meter.create_counter(
    "maillage.outbox.published", unit="{event}", description="Events published to Kafka"
)
_set_aside = meter.create_counter(
    "maillage.outbox.dead_letters",
    unit="{event}",
    description="Events the broker refused for good, set aside (outbox_dead_letters)",
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
    """Record ``event`` in the outbox, inside the caller's transaction. Returns the event id.

    Raises :class:`EventTooLarge` (422) when its record would exceed the producer's limit."""
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
    payload = event.model_dump_json()
    _check_size(spec.event_type, key, payload, headers)
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
        payload,
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
    Raises :class:`EventTooLarge` (422) when any of them is over the producer's limit.

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
        record_headers = envelope.headers() | trace_context
        payload = event.model_dump_json()
        _check_size(spec.event_type, key, payload, record_headers)
        ids.append(envelope.id)
        keys.append(key)
        types.append(spec.event_type)
        headers.append(json.dumps(record_headers))
        payloads.append(payload)
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
    dead_letters: int = 0  # rows set aside in outbox_dead_letters, waiting for an operator

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
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
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
        self.max_message_bytes = max_message_bytes
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
        meter.create_observable_gauge(
            "maillage.outbox.dead_letters.waiting",
            callbacks=[self._observe_dead_letters],
            unit="{event}",
            description="Events set aside in outbox_dead_letters, not yet moved back",
        )

    def _observe_dead_letters(self, _options: Any) -> list[metrics.Observation]:
        return [metrics.Observation(self.status.dead_letters, {"service": self.service})]

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
                max_request_size=self.max_message_bytes,
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
        refused: tuple[asyncpg.Record, BaseException] | None = None
        try:
            for row in rows:
                stored: dict[str, str] = json.loads(row["headers"])
                if is_unsampled(stored):
                    # Nothing of this trace is recorded: the writer's traceparent goes on as it
                    # is, with no span of the relay's in between (decision 68).
                    span: trace.Span = trace.INVALID_SPAN
                    headers = stored
                else:
                    span = start_child_span(
                        tracer,
                        f"{row['topic']} publish",
                        propagate.extract(stored),
                        SpanKind.PRODUCER,
                        lambda row=row: {  # type: ignore[misc]
                            "messaging.system": "kafka",
                            "messaging.operation.type": "publish",
                            "messaging.destination.name": row["topic"],
                            "messaging.message.id": str(row["event_id"]),
                            "messaging.kafka.message.key": row["key"],
                            "cloudevents.event_type": row["type"],
                        },
                    )
                    headers = {k: v for k, v in stored.items() if k not in TRACE_HEADERS}
                    propagate.inject(headers, context=trace.set_span_in_context(span))
                spans.append(span)
                try:
                    sends.append(
                        await producer.send(
                            row["topic"],
                            value=row["payload"].encode(),
                            key=row["key"].encode(),
                            headers=encode_headers(headers),
                        )
                    )
                except REFUSED_FOR_GOOD as error:  # the producer's own check, for this record
                    refused = (row, error)
                    span.set_status(Status(StatusCode.ERROR, str(error)))
                    break
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
        if isinstance(failure, REFUSED_FOR_GOOD):
            # The broker refused a batch: perhaps for this record, perhaps for its neighbours
            # (a batch holds several). Alone, it is refused for its own sake or goes through.
            await self._send_alone_or_set_aside(connection, producer, rows[len(acked)])
            return len(acked) + 1
        if failure is not None:
            raise failure
        if refused is not None:
            await self._set_aside(connection, *refused)
            return len(acked) + 1
        return len(rows)

    async def _send_alone_or_set_aside(
        self, connection: asyncpg.Connection, producer: AIOKafkaProducer, row: asyncpg.Record
    ) -> None:
        stored: dict[str, str] = json.loads(row["headers"])
        try:
            await producer.send_and_wait(
                row["topic"],
                value=row["payload"].encode(),
                key=row["key"].encode(),
                headers=encode_headers(stored),
            )
        except REFUSED_FOR_GOOD as error:
            await self._set_aside(connection, row, error)
            return
        await self._mark_published(connection, [row["id"]])
        _published.add(1, {"service": self.service})

    async def _set_aside(
        self, connection: asyncpg.Connection, row: asyncpg.Record, error: BaseException
    ) -> None:
        """Move a row the broker refused for good to ``outbox_dead_letters``, so the rows behind
        it flow (and wake the loop at once: they are already due)."""
        reason = f"{type(error).__name__}: {error}"[:2000]
        # Recorded whatever the sampling (decision 50), in the writer's trace when it is sampled.
        with failure_span(
            f"{row['topic']} set aside",
            parent=propagate.extract(json.loads(row["headers"])),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": row["topic"],
                "messaging.message.id": str(row["event_id"]),
                "cloudevents.event_type": row["type"],
            },
        ) as span:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, reason[:300]))
        await connection.execute(
            """
            WITH moved AS (DELETE FROM outbox WHERE id = $1 RETURNING *)
            INSERT INTO outbox_dead_letters
                   (event_id, outbox_id, topic, key, type, headers, payload, created_at, error)
            SELECT event_id, id, topic, key, type, headers, payload, created_at, $2 FROM moved
            ON CONFLICT (event_id) DO UPDATE
               SET outbox_id = excluded.outbox_id, error = excluded.error,
                   set_aside_at = clock_timestamp()
            """,
            row["id"],
            reason,
        )
        _set_aside.add(1, {"service": self.service, "topic": row["topic"]})
        log.error(
            "event set aside: the broker refuses it for good",
            event_id=str(row["event_id"]),
            event_type=row["type"],
            topic=row["topic"],
            size=len(row["payload"].encode()),
            error=reason[:300],
        )
        self._wake.set()

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
                       coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS age,
                       (SELECT count(*) FROM outbox_dead_letters) AS dead_letters
                FROM outbox WHERE published_at IS NULL
                """
            )
            assert row is not None
            self.status.backlog = row["backlog"]
            self.status.oldest_age_s = float(row["age"])
            self.status.dead_letters = row["dead_letters"]
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


@dataclass(frozen=True)
class OutboxDeadLetter:
    """An event the broker refused for good, set aside by the relay (``outbox_dead_letters``)."""

    event_id: str
    event_type: str
    topic: str
    key: str
    size: int  # the payload's bytes
    set_aside_at: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _dead_letter(row: asyncpg.Record) -> OutboxDeadLetter:
    return OutboxDeadLetter(
        event_id=str(row["event_id"]),
        event_type=row["type"],
        topic=row["topic"],
        key=row["key"],
        size=row["size"],
        set_aside_at=row["set_aside_at"].isoformat(),
        error=row["error"],
    )


async def outbox_dead_letters(connection: asyncpg.Connection) -> list[OutboxDeadLetter]:
    """The events set aside, in their original outbox order."""
    rows = await connection.fetch(
        """
        SELECT event_id, type, topic, key, octet_length(payload) AS size, set_aside_at, error
          FROM outbox_dead_letters ORDER BY outbox_id
        """
    )
    return [_dead_letter(row) for row in rows]


async def replay_outbox_dead_letters(
    connection: asyncpg.Connection, event_id: UUID | None = None
) -> list[OutboxDeadLetter]:
    """Move one set-aside event (or all, ``event_id=None``) back to the outbox, same event id,
    at the end of the queue: once the broker's limit is raised, the relay publishes them. One
    the broker still refuses is set aside again. Returns those moved."""
    async with connection.transaction():
        rows = await connection.fetch(
            """
            WITH moved AS (
                DELETE FROM outbox_dead_letters WHERE $1::uuid IS NULL OR event_id = $1
                RETURNING *)
            INSERT INTO outbox (event_id, topic, key, type, headers, payload)
            SELECT event_id, topic, key, type, headers, payload FROM moved ORDER BY outbox_id
            RETURNING event_id, type, topic, key, octet_length(payload) AS size,
                      clock_timestamp() AS set_aside_at, '' AS error
            """,
            event_id,
        )
        await connection.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    moved = [_dead_letter(row) for row in rows]
    log.info("outbox dead letters moved back to the outbox", count=len(moved))
    return moved
