"""Consuming events exactly once in effect: the idempotent inbox around FastStream subscribers.

An :class:`EventConsumer` is one consumer group on one or more topics, with one handler per
event type it cares about::

    partners = EventConsumer("cordees.partners", [PARTNERS])

    @partners.handler(PartnerVerified)
    async def partner_verified(event: PartnerVerified, delivery: Delivery) -> None:
        await store.mark_verified(delivery.connection, event.partner_id)

A batch is what one fetch brings; its partitions are applied in parallel, each in order. For
each record: the CloudEvents headers are read from the raw record (``kafka_envelope``: never
FastStream's parsing, which raises on a header that is not UTF-8) and the data validated against
the catalog. Then up to ``apply_batch`` (100) readable records of a partition are applied in one
transaction (decision 57): one INSERT puts their ``(group, event id)`` rows into ``inbox``, and
the handler of each fresh one runs, in order, on the same connection. A duplicate (the id is
already there, or earlier in the batch) is skipped. If a handler fails, the transaction rolls
back; the records before it are applied again together, the failing one alone (in its own
transaction, with the failures below), and those after it the same way. A handler may therefore
run more than once for an event applied once: it must have no effect outside its connection.
Kafka offsets are committed only after the whole batch is done, so a crash replays at most the
batch, and the inbox makes the replay harmless.

Failures of a record applied alone:

- the database unreachable: retried with backoff for up to a minute, then the batch is
  handed back to Kafka (redelivered); nothing goes to the dead letters for an outage;
- a conflict (serialization failure, deadlock, :class:`TransientError`): retried with
  exponential backoff, up to ``max_attempts``, then dead-lettered;
- anything else (headers that are not a valid envelope, invalid JSON, a schema mismatch, a
  handler bug): dead-lettered at once.

A dead letter is the original record, byte for byte (key, value, headers), on ``dlq.<group>``
with headers saying where it came from and why (a record too large to copy keeps its key and
headers, and says where its value is); the partition keeps flowing. Valid events of types the
group does not handle are skipped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import pydantic
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from maillage.common.catalog import catalog as default_catalog
from maillage.common.events import Catalog, Envelope, Event, EventSpec, Topic, encode_headers
from maillage.common.kafka_envelope import EnvelopeError, read_attributes
from maillage.common.logging import get_logger
from maillage.common.telemetry import failure_span, in_span, start_child_span

log = get_logger(__name__)
tracer = trace.get_tracer("maillage.inbox")
meter = metrics.get_meter("maillage.inbox")

_GROUP = re.compile(r"^[a-z0-9]+\.[a-z][a-z0-9-]*$")
DEAD_LETTER_PREFIX = "dlq."
DEAD_LETTER_HEADER = "dlq-"  # headers a dead letter adds; a replay removes them
UNAVAILABLE_RETRY_S = 60.0
APPLY_BATCH = 100
"""Records of one partition applied in one transaction at most (decision 57); 1: each alone."""
_NOT_A_HANDLER = -1  # a batch failed in the inbox INSERT, the commit or the connection

_handler_duration = meter.create_histogram(
    "maillage.consumer.handler.duration", unit="s", description="Inbox transaction and handler"
)
_duplicates = meter.create_counter(
    "maillage.consumer.duplicates", unit="{event}", description="Events already applied, skipped"
)
_skipped = meter.create_counter(
    "maillage.consumer.skipped", unit="{event}", description="Event types this group ignores"
)
_dead_letters = meter.create_counter(
    "maillage.consumer.dead_letters",
    unit="{event}",
    description="Events sent to a dead-letter topic",
)

# The database (or the network to it) is down: wait, do not blame the message.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,
)


class TransientError(Exception):
    """Raise from a handler when trying again later may succeed (a conflict, a busy resource)."""


_CONFLICTS: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,
    TransientError,
)


@dataclass(frozen=True)
class Delivery:
    """What a handler gets besides the event: the transaction's connection and the envelope."""

    connection: asyncpg.Connection
    envelope: Envelope
    topic: str
    partition: int
    offset: int


EventT = TypeVar("EventT", bound=Event)
Handler = Callable[[Any, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class _Pending:
    """A record read and valid, waiting to be applied, with its open CONSUMER span."""

    record: ConsumerRecord[bytes, bytes]
    envelope: Envelope
    event: Event
    handler: Handler
    span: trace.Span


class _DeadLetter(Exception):
    def __init__(self, error: BaseException, attempts: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


def dead_letter_topic(group: str) -> str:
    return f"{DEAD_LETTER_PREFIX}{group}"


class EventConsumer:
    """One consumer group: its topics, its handlers, its dead-letter topic."""

    def __init__(
        self,
        group: str,
        topics: Sequence[Topic],
        *,
        catalog: Catalog = default_catalog,
        description: str = "",
        max_records: int | None = None,
        apply_batch: int = APPLY_BATCH,
    ) -> None:
        if not _GROUP.match(group):
            raise ValueError(f"consumer group {group!r}: groups are named <service>.<purpose>")
        self.group = group
        self.topics = list(topics)
        self.catalog = catalog
        self.description = description
        self.max_records = max_records
        if apply_batch < 1:
            raise ValueError("apply_batch: at least 1 record per transaction")
        self.apply_batch = apply_batch
        self.handlers: dict[str, tuple[EventSpec, Handler]] = {}
        self.max_attempts = 5
        self._pool: Callable[[], asyncpg.Pool] | None = None
        self._dead_letters: DeadLetterProducer | None = None
        self._subscriber: Any = None  # FastStream's, once attached

    @property
    def kafka_consumer(self) -> AIOKafkaConsumer | None:
        """The group's aiokafka consumer in this process while it runs (for its lag), else None."""
        consumer: AIOKafkaConsumer | None = getattr(self._subscriber, "consumer", None)
        return consumer

    @property
    def dead_letter_topic(self) -> str:
        return dead_letter_topic(self.group)

    def handler(
        self, model: type[EventT]
    ) -> Callable[[Callable[[EventT, Delivery], Awaitable[None]]], Handler]:
        spec = self.catalog.spec_of(model)
        if spec.topic not in self.topics:
            raise ValueError(f"{self.group} does not subscribe to {spec.topic.name}")

        def register(function: Callable[[EventT, Delivery], Awaitable[None]]) -> Handler:
            self.handlers[spec.event_type] = (spec, function)
            return function

        return register

    def bind(
        self,
        pool: Callable[[], asyncpg.Pool],
        dead_letters: DeadLetterProducer,
        *,
        max_attempts: int = 5,
    ) -> None:
        """Give the runner its database pool and dead-letter producer."""
        self._pool = pool
        self._dead_letters = dead_letters
        self.max_attempts = max_attempts

    def attach(
        self,
        broker: KafkaBroker,
        pool: Callable[[], asyncpg.Pool],
        dead_letters: DeadLetterProducer,
        *,
        max_attempts: int = 5,
        fetch_max_wait_ms: int = 100,
        batch_timeout_ms: int = 20,
    ) -> None:
        """Bind, and register this group as a FastStream batch subscriber on ``broker``.

        ``max_records`` (None: what one fetch brings) lets a batch span partitions, which then run
        in parallel; a cap fills a batch from one partition at a time. The short waits keep the
        commit-to-handler latency low: tansu answers a fetch only after about half of
        ``fetch_max_wait_ms`` even when data waits, and FastStream sleeps ``batch_timeout_ms``
        after an empty poll.
        """
        self.bind(pool, dead_letters, max_attempts=max_attempts)

        async def keep_raw(_message: Any) -> None:
            return None  # the runner reads the raw records itself: invalid JSON is its business

        async def parse_nothing(
            records: tuple[ConsumerRecord[bytes, bytes], ...],
            faststream_parser: Callable[[Any], Awaitable[Any]],
        ) -> Any:
            # FastStream's own parser decodes every header as UTF-8 and raises on one that is
            # not, before any decoder: the batch was then neither applied nor handed back, and
            # the next commit moved past it. Give it the first and last records (its message id
            # is made of their offsets; nothing reads the others' headers since its telemetry
            # middleware went, decision 50), stripped to the headers it can read, then hand the
            # untouched records to the runner.
            ends = (records[0], records[-1]) if len(records) > 1 else records
            message = await faststream_parser(tuple(_readable_copy(r) for r in ends))
            message.raw_message = records
            return message

        handled = ", ".join(sorted(self.handlers)) or "nothing yet"

        subscriber = broker.subscriber(
            *(topic.name for topic in self.topics),
            group_id=self.group,
            batch=True,
            max_records=self.max_records,
            fetch_max_wait_ms=fetch_max_wait_ms,
            batch_timeout_ms=batch_timeout_ms,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            parser=parse_nothing,
            decoder=keep_raw,
            title=f"{self.group}:consume",
            description=f"{self.description} Handles: {handled}.".strip(),
        )

        async def consume(message: KafkaMessage) -> None:
            raw = message.raw_message
            records = raw if isinstance(raw, tuple) else (raw,)
            await self.process(records)

        subscriber(consume)
        self._subscriber = subscriber

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply a batch: partitions in parallel, each in order. Raises to have it redelivered."""
        by_partition: dict[tuple[str, int], list[ConsumerRecord[bytes, bytes]]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        results = await asyncio.gather(
            *(self._process_partition(batch) for batch in by_partition.values()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _process_partition(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply one partition's records in order. Each is read in its span (an unreadable one
        is dead-lettered there); the readable ones are applied ``apply_batch`` at a time in one
        transaction, and a batch that fails is applied again one record at a time, so that only
        a bad record is retried or dead-lettered."""
        pending: list[_Pending] = []
        for record in records:
            try:
                read = self._read_in_span(record)
            except _DeadLetter as dead:
                await self._dead_letter(record, dead)
                continue
            if read is not None:
                pending.append(read)
        try:
            for start in range(0, len(pending), self.apply_batch):
                await self._apply_in_order(pending[start : start + self.apply_batch])
        finally:  # the batch handed back to Kafka: the spans of the records not reached
            for item in pending:
                if item.span.is_recording():
                    item.span.end()

    def _read_in_span(self, record: ConsumerRecord[bytes, bytes]) -> _Pending | None:
        """The record read, with its CONSUMER span (a child of the producer's) left open for the
        apply; None for a type this group skips. Raises :class:`_DeadLetter` for an unreadable
        record. The span is ended unless the record is returned."""
        text = text_headers(record.headers)
        span = start_child_span(
            tracer,
            f"{record.topic} process",
            propagate.extract(text),
            SpanKind.CONSUMER,
            lambda: {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.consumer.group.name": self.group,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.message.id": text.get("ce_id", ""),
                "cloudevents.event_type": text.get("ce_type", ""),
            },
        )
        try:
            with in_span(span):
                read = self._read(record)
        except BaseException:
            span.end()
            raise
        if read is None:
            span.end()
            return None
        envelope, event, handler = read
        return _Pending(record, envelope, event, handler, span)

    async def _apply_in_order(self, batch: list[_Pending]) -> None:
        """Apply ``batch`` in one transaction. When a handler fails, the transaction rolls back
        and: the records before it go again together, the failing one alone (retried or
        dead-lettered as always), and the rest the same way; when the failure is no handler's
        (the inbox INSERT, the commit, the connection), every record goes alone."""
        while len(batch) > 1:
            failed_at = await self._apply_together(batch)
            if failed_at is None:
                return
            if failed_at == _NOT_A_HANDLER:
                for item in batch:
                    await self._apply_alone(item)
                return
            await self._apply_in_order(batch[:failed_at])
            await self._apply_alone(batch[failed_at])
            batch = batch[failed_at + 1 :]
        for item in batch:
            await self._apply_alone(item)

    async def _apply_alone(self, item: _Pending) -> None:
        """One record in its own transaction, retried; dead-lettered when it cannot be applied."""
        try:
            with in_span(item.span, end_on_exit=True):
                await self._apply(item.record, item.envelope, item.event, item.handler, item.span)
        except _DeadLetter as dead:
            await self._dead_letter(item.record, dead)

    async def _apply_together(self, batch: list[_Pending]) -> int | None:
        """Apply ``batch`` (records of one partition, in order) in one transaction: one INSERT
        of their inbox rows, then each fresh event's handler, in its span, on that connection.
        None when committed (the spans are then ended). When anything failed, the transaction
        rolled back, nothing of the batch is applied and the spans stay open: returns the index
        of the record whose handler failed, or ``_NOT_A_HANDLER``."""
        assert self._pool is not None, "bind() or attach() the consumer before processing"
        started = time.perf_counter()
        handled: list[tuple[_Pending, str, float]] = []  # (record, outcome, handler seconds)
        failed_at = _NOT_A_HANDLER
        try:
            async with self._pool().acquire() as connection, connection.transaction():
                rows = await connection.fetch(
                    """
                    INSERT INTO inbox (consumer_group, event_id, event_type)
                    SELECT $1, event_id, event_type
                    FROM unnest($2::uuid[], $3::text[]) AS batch (event_id, event_type)
                    ON CONFLICT DO NOTHING RETURNING event_id
                    """,
                    self.group,
                    [item.envelope.id for item in batch],
                    [item.envelope.type for item in batch],
                )
                fresh = {row["event_id"] for row in rows}
                for item in batch:
                    if item.envelope.id not in fresh:  # applied before, or earlier in the batch
                        handled.append((item, "duplicate", 0.0))
                        continue
                    fresh.discard(item.envelope.id)
                    record = item.record
                    delivery = Delivery(
                        connection, item.envelope, record.topic, record.partition, record.offset
                    )
                    handler_started = time.perf_counter()
                    failed_at = len(handled)
                    with in_span(item.span, record_exception=False, set_status_on_exception=False):
                        await item.handler(item.event, delivery)
                    handled.append((item, "applied", time.perf_counter() - handler_started))
                    failed_at = _NOT_A_HANDLER
        except Exception as error:  # the records again, the failing one alone
            log.info(
                "batch of events rolled back",
                group=self.group,
                events=len(batch),
                failed_offset=None if failed_at < 0 else batch[failed_at].record.offset,
                error=f"{type(error).__name__}: {error}"[:300],
            )
            return failed_at
        # The inbox INSERT and the commit, shared out between the records.
        shared = (time.perf_counter() - started - sum(s for _, _, s in handled)) / len(batch)
        for item, outcome, seconds in handled:
            if outcome == "duplicate":
                _duplicates.add(1, {"group": self.group, "type": item.envelope.type})
                item.span.set_attribute("maillage.duplicate", True)
            item.span.set_attribute("maillage.batch.events", len(batch))
            with in_span(item.span, end_on_exit=True):
                self._handled(item.record, item.envelope, 1, outcome, seconds + shared)
        return None

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], dead: _DeadLetter) -> None:
        # In the producer's trace, so the dead letter's log line joins it.
        token = otel_context.attach(propagate.extract(text_headers(record.headers)))
        try:
            await self._send_to_dead_letters(record, dead.error, dead.attempts)
        finally:
            otel_context.detach(token)

    def _read(self, record: ConsumerRecord[bytes, bytes]) -> tuple[Envelope, Event, Handler] | None:
        """The record's envelope, event and handler; None for a type this group skips.

        Everything a producer controls is read here, from the raw record, and anything wrong
        with it (or anything unexpected while reading it) sends the record to the dead letters.
        """
        try:
            attributes, _ = read_attributes(record.headers)
            envelope = Envelope.from_attributes(attributes)
            handled = self.handlers.get(envelope.type)
            if handled is None:
                reason = "not_handled" if envelope.type in self.catalog.events else "unknown_type"
                _skipped.add(1, {"group": self.group, "type": envelope.type, "reason": reason})
                trace.get_current_span().set_attribute("maillage.skipped", reason)
                return None
            spec, handler = handled
            event = spec.model.model_validate_json(record.value or b"")
        except (EnvelopeError, pydantic.ValidationError) as error:
            raise _DeadLetter(error, attempts=1) from error
        except Exception as error:  # a bug in reading must not stall the partition either
            log.exception("unexpected error reading a record", group=self.group)
            raise _DeadLetter(error, attempts=1) from error
        return envelope, event, handler

    async def _apply(
        self,
        record: ConsumerRecord[bytes, bytes],
        envelope: Envelope,
        event: Event,
        handler: Handler,
        span: trace.Span,
    ) -> None:
        assert self._pool is not None, "bind() or attach() the consumer before processing"
        attempts = 0
        unavailable_since: float | None = None
        while True:
            attempts += 1
            started = time.perf_counter()
            outcome = "applied"
            try:
                async with self._pool().acquire() as connection, connection.transaction():
                    fresh = await connection.fetchval(
                        """
                        INSERT INTO inbox (consumer_group, event_id, event_type)
                        VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true
                        """,
                        self.group,
                        envelope.id,
                        envelope.type,
                    )
                    if not fresh:
                        outcome = "duplicate"
                        _duplicates.add(1, {"group": self.group, "type": envelope.type})
                        span.set_attribute("maillage.duplicate", True)
                        return
                    delivery = Delivery(
                        connection, envelope, record.topic, record.partition, record.offset
                    )
                    await handler(event, delivery)
                return
            except _UNAVAILABLE as error:
                outcome = "unavailable"
                attempts -= 1  # an outage is not the message's fault
                now = time.monotonic()
                unavailable_since = unavailable_since or now
                if now - unavailable_since > UNAVAILABLE_RETRY_S:
                    raise  # hand the batch back to Kafka; it comes again
                log.warning("database unavailable; retrying", group=self.group, error=repr(error))
                await asyncio.sleep(min(0.2 * 2 ** min(int(now - unavailable_since), 5), 5.0))
            except _CONFLICTS as error:
                outcome = "conflict"
                if attempts >= self.max_attempts:
                    raise _DeadLetter(error, attempts) from error
                await asyncio.sleep(min(0.05 * 2 ** (attempts - 1), 2.0))
            except Exception as error:
                outcome = "failed"
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)))
                raise _DeadLetter(error, attempts) from error
            finally:
                self._handled(record, envelope, attempts, outcome, time.perf_counter() - started)

    def _handled(
        self,
        record: ConsumerRecord[bytes, bytes],
        envelope: Envelope,
        attempts: int,
        outcome: str,
        duration: float,
    ) -> None:
        """The handler duration metric and the "event handled" line, in the record's span: the
        line carries its trace_id and span_id (FastStream's own "Received"/"Processed" lines are
        per batch, of many traces: at DEBUG)."""
        _handler_duration.record(
            duration, {"group": self.group, "type": envelope.type, "outcome": outcome}
        )
        log.info(
            "event handled",
            group=self.group,
            event_type=envelope.type,
            event_id=str(envelope.id),
            partition=record.partition,
            offset=record.offset,
            attempt=attempts,
            outcome=outcome,
            duration_ms=round(duration * 1000, 2),
        )

    async def _send_to_dead_letters(
        self, record: ConsumerRecord[bytes, bytes], error: BaseException, attempts: int
    ) -> None:
        """Put the record, byte for byte (key, value, every header), on the dead-letter topic
        with ``dlq-*`` headers saying where it came from and why."""
        assert self._dead_letters is not None
        text = text_headers(record.headers)
        log.error(
            "event sent to the dead letters",
            group=self.group,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=text.get("ce_id"),
            event_type=text.get("ce_type"),
            error=f"{type(error).__name__}: {error}"[:500],
            attempts=attempts,
        )
        why = {
            "dlq-consumer-group": self.group,
            "dlq-original-topic": record.topic,
            "dlq-original-partition": str(record.partition),
            "dlq-original-offset": str(record.offset),
            "dlq-error-class": f"{type(error).__module__}.{type(error).__qualname__}",
            "dlq-error-message": str(error)[:2000],
            "dlq-attempts": str(attempts),
            "dlq-failed-at": datetime.now(UTC).isoformat(),
        }
        original = [(n, v) for n, v in record.headers if not n.startswith(DEAD_LETTER_HEADER)]
        # Recorded even when the event's trace is not sampled (decision 50).
        with failure_span(
            f"{self.dead_letter_topic} publish",
            parent=propagate.extract(text),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "publish",
                "messaging.destination.name": self.dead_letter_topic,
                "messaging.consumer.group.name": self.group,
                "messaging.message.id": text.get("ce_id", ""),
                "cloudevents.event_type": text.get("ce_type", ""),
                "maillage.dead_letter.original_topic": record.topic,
                "maillage.dead_letter.original_partition": record.partition,
                "maillage.dead_letter.original_offset": record.offset,
                "maillage.dead_letter.attempts": attempts,
            },
        ) as span:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:300]))
            try:
                await self._dead_letters.send(
                    self.dead_letter_topic,
                    record.key,
                    record.value,
                    [*original, *encode_headers(why)],
                )
            except (MessageSizeTooLargeError, RecordListTooLargeError):
                # The original plus our headers is over the limit: keep where it is instead (its
                # topic, partition and offset), rather than stall the partition on it.
                why["dlq-value-dropped"] = f"{len(record.value or b'')} bytes, too large to copy"
                span.set_attribute("maillage.dead_letter.value_dropped", True)
                await self._dead_letters.send(
                    self.dead_letter_topic, record.key, None, encode_headers(why)
                )
        _dead_letters.add(1, {"group": self.group})


def text_headers(raw: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """The headers that are UTF-8 text (the first of a name given twice), for trace context
    and logs; the others are left out, never guessed."""
    text: dict[str, str] = {}
    for name, value in raw:
        if value is not None and name not in text:
            with contextlib.suppress(UnicodeDecodeError):
                text[name] = value.decode("utf-8")
    return text


def _readable_copy(record: ConsumerRecord[bytes, bytes]) -> ConsumerRecord[bytes, bytes]:
    """The record with only the headers FastStream's parser can decode."""
    readable: list[tuple[str, bytes]] = []
    for name, value in record.headers:
        if value is not None:
            with contextlib.suppress(UnicodeDecodeError):
                value.decode("utf-8")
                readable.append((name, value))
    return dataclasses.replace(record, headers=tuple(readable))


class DeadLetterProducer:
    """The producer dead letters and replays go through (acks=all, started on first use)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        idempotent: bool,
        max_request_size: int = 1_048_576,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.idempotent = idempotent
        self.max_request_size = max_request_size  # aiokafka's default: 1 MiB
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, str] | Sequence[tuple[str, bytes | None]],
    ) -> None:
        """Send one record; ``headers`` as text, or as raw pairs kept byte for byte."""
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=self.idempotent,
                    max_request_size=self.max_request_size,
                )
                await producer.start()
                self._producer = producer
        raw = encode_headers(headers) if isinstance(headers, Mapping) else list(headers)
        if key is None and value is None:
            # No key and no value (another client may produce one): send() refuses such a
            # record, a batch of one does not.
            batch = self._producer.create_batch()
            batch.append(key=None, value=None, timestamp=None, headers=raw)
            batch.close()
            await (await self._producer.send_batch(batch, topic, partition=0))
            return
        await self._producer.send_and_wait(topic, value=value, key=key, headers=raw)

    async def stop(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
