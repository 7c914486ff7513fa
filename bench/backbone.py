"""Event backbone benchmark: throughput against raw baselines, then steady-rate latency.

Run from the repository root::

    .venv/bin/python bench/backbone.py [--events N] [--rate 200] [--seconds 20]

It starts its own embedded broker (tansu, in memory) and PostgreSQL (in a temporary directory, on
free loopback ports) unless ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` name existing ones (the
URL is a server URL: the benchmark creates and drops its own databases there). Then, on that one
broker and that one server, with the same 100-byte ``ThingChanged`` JSON payloads keyed over 50
aggregates (``thing-00`` … ``thing-49``), it measures three pipelines:

(a) raw aiokafka: N records produced (acks=all, pipelined sends, then awaited) and consumed by a
    consumer group that commits after each fetched batch; from the first send to the last record
    received.
(b) raw asyncpg: ``--writers`` tasks insert the N events, one transaction each, into a table of a
    "producer" database; a naive poller reads that table in id order and hands each row to one of
    ``--partitions`` lanes (the Kafka partition of its key, so the lanes see the topic's key skew)
    which, per row, runs one transaction inserting an inbox row and an effects row in a
    "consumer" database; from the first insert to the last effects commit.
(c) the backbone: the same writers commit each event through ``publish`` (outbox), one
    ``OutboxRelay`` sends it to Kafka, one ``EventConsumer`` (FastStream batch subscriber) applies
    it with the inbox and a handler inserting the effects row; from the first publish to the last
    effects commit.

Each pipeline is set up, its consumer group joined and its path warmed up with one event per key
before any clock starts; then ``--rounds`` rounds run (a), (b), (c) in turn and the best round of
each counts (the machine may be shared). Then the latency phase: ``--rate`` events/s for
``--seconds`` through the backbone (the same relay and consumer), each event's latency being its
handler's ``clock_timestamp()`` in the effects row minus the wall-clock time at which the producer
saw its commit return. Each throughput figure comes with the CPU time per event of this process,
of PostgreSQL and of the broker (from /proc, when they are the embedded ones).

With ``--telemetry``, (c) runs as the services run: the OpenTelemetry SDK configured by
``configure_telemetry`` with the services' settings (sampling ratio, batch span processor, the
asyncpg instrumentation; FastStream's middleware only with ``--faststream-telemetry``, as before
decision 50), each write inside a SERVER span as an HTTP request's
would be, and every span exported over OTLP/HTTP to a sink on loopback (a process of its own,
``--serve-otlp-sink``, that decodes and counts what it receives, as a collector would). The raw
baselines (a) and (b) run with no instrumentation at all (asyncpg's is removed while they run):
they stay the ceiling. The script counts the spans the SDK finished and the spans the sink
received (the difference was dropped by a full queue).

Everything runs in this one process, on one event loop (uvloop, as uvicorn picks it, unless
``--no-uvloop``), like one service that publishes, relays and consumes. It is not a test: it
prints figures, and every wait is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    drop_database,
    ensure_database,
    free_port,
    wait_for_tcp,
)
from maillage.common.db import create_pool, migrate_service, transaction
from maillage.common.events import Catalog, Event, Level
from maillage.common.http import settle_garbage_collector
from maillage.common.inbox import DeadLetterProducer, Delivery, EventConsumer
from maillage.common.logging import configure_logging
from maillage.common.outbox import OutboxRelay, publish
from maillage.common.settings import ServiceSettings
from maillage.common.telemetry import StatementInstrumentor, configure_telemetry
from maillage.common.topics import ensure_topics

T = TypeVar("T")
write_tracer = trace.get_tracer("bench.writer")

AGGREGATES = 50  # keys: thing-00 … thing-49
NOTE = "n" * 55  # pads the event JSON to 100 bytes
WARM_UP = AGGREGATES  # one event per key before the clocks start: every partition delivers
RAW_EVENT_TYPE = "bench.thing.changed"

# Every benchmark database gets these tables after the backbone's outbox and inbox: ``source`` is
# (b)'s outbox-shaped producer table, ``effects`` what the consumers apply; ``done_at`` is the
# time the handler ran, inside its transaction.
BENCH_SQL = """
CREATE TABLE source (
    id          bigserial PRIMARY KEY,
    event_id    uuid NOT NULL UNIQUE,
    key         text NOT NULL,
    payload     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE effects (
    id        bigserial PRIMARY KEY,
    event_id  uuid NOT NULL,
    thing_id  text NOT NULL,
    seq       integer NOT NULL,
    done_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX effects_seq_idx ON effects (seq);
"""


class ThingChanged(Event):
    thing_id: Annotated[str, Level.PUBLIC]
    seq: Annotated[int, Level.PARTNERS]
    note: Annotated[str, Level.PUBLIC] = ""


def thing_of(seq: int) -> str:
    return f"thing-{seq % AGGREGATES:02d}"


def event_of(seq: int) -> ThingChanged:
    return ThingChanged(thing_id=thing_of(seq), seq=seq, note=NOTE)


def payload_of(seq: int) -> str:
    """The JSON ``publish`` puts on the wire for ``event_of(seq)``, built without pydantic."""
    return json.dumps({"thing_id": thing_of(seq), "seq": seq, "note": NOTE}, separators=(",", ":"))


@dataclass
class Settings:
    events: int
    rounds: int
    writers: int
    partitions: int
    rate: float
    seconds: float
    telemetry: bool
    uvloop: bool
    timeout: float
    max_records: int | None = None  # EventConsumer(max_records=...): None its default, 0 no limit
    apply_batch: int | None = None  # EventConsumer(apply_batch=...): None its default
    # Telemetry (with --telemetry): None = what a production service uses.
    sample_ratio: float | None = None
    span_queue_size: int | None = None
    span_export_batch_size: int | None = None
    all_statements: bool = False  # what-if: asyncpg's instrumentation as it was, every statement
    faststream_telemetry: bool = False  # what-if: FastStream's telemetry middleware, as it was
    # (c) on a fresh topic (and databases) each round: tansu's fetch cost grows with the topic.
    fresh_topics: bool = True
    settle_gc: bool = True  # the garbage collector as in a service once started (decision 68)
    # What-if options for the backbone's FastStream subscriber, which attach() does not expose.
    subscriber: dict[str, int] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: "b" + uuid.uuid4().hex[:9])


@dataclass
class Stack:
    bootstrap: str
    server_url: str
    migrations: Path
    external_kafka: bool
    cpu: CpuMeter
    databases: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    async def database(self, name: str) -> str:
        """A new database with the backbone's tables and the benchmark's; returns its URL."""
        await ensure_database(self.server_url, name)
        self.databases.append(name)
        url: str = database_url_for(self.server_url, name)
        await migrate_service(url, self.migrations)
        return url

    async def topic(self, name: str, partitions: int) -> str:
        await ensure_topics(self.bootstrap, [(name, partitions)])
        self.topics.append(name)
        return name

    async def clean_up(self) -> None:
        for name in self.databases:
            with contextlib.suppress(Exception):
                await drop_database(self.server_url, name)
        if self.external_kafka and self.topics:  # the embedded broker forgets them anyway
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            with contextlib.suppress(Exception):
                await admin.start()
                await admin.delete_topics(self.topics)
            with contextlib.suppress(Exception):
                await admin.close()


class CpuMeter:
    """CPU seconds used by this process and by the embedded servers' process trees (Linux /proc;
    servers given as URLs from outside are not measured). CPU per event does not depend on what
    else the machine runs as much as events per second do."""

    def __init__(self, servers: dict[str, int | None]) -> None:
        self.servers = {name: pid for name, pid in servers.items() if pid is not None}
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _stats(self) -> dict[int, tuple[int, float]]:
        """pid -> (parent pid, CPU seconds of it and of its reaped children)."""
        stats: dict[int, tuple[int, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # After the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15).
            ticks = sum(int(value) for value in fields[11:15])
            stats[int(entry.name)] = (int(fields[1]), ticks / self.tick)
        return stats

    def sample(self) -> dict[str, float]:
        usage = {"bench": time.process_time()}
        if not self.servers or not Path("/proc/self/stat").exists():
            return usage
        stats = self._stats()
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in stats.items():
            children.setdefault(parent, []).append(pid)
        for name, root in self.servers.items():
            total, todo = 0.0, [root]
            while todo:
                pid = todo.pop()
                total += stats.get(pid, (0, 0.0))[1]
                todo.extend(children.get(pid, []))
            usage[name] = total
        return usage

    @contextlib.asynccontextmanager
    async def per_event(self, events: int, into: dict[str, float]) -> AsyncIterator[None]:
        """Fill ``into`` with milliseconds of CPU per event, by process, over the block, and
        ``gc`` with the milliseconds of it this process spent collecting garbage."""
        before, (_, gc_before) = self.sample(), GC.sample()
        yield
        after, (_, gc_after) = self.sample(), GC.sample()
        into.update({name: (after[name] - before[name]) * 1000 / events for name in after})
        into["gc"] = (gc_after - gc_before) * 1000 / events


class GcMeter:
    """Garbage collections in this process (``gc.callbacks``): count and CPU time."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.collections[info["generation"]] += 1
            self.seconds += time.process_time() - self._started

    def sample(self) -> tuple[list[int], float]:
        return list(self.collections), self.seconds


GC = GcMeter()


def cpu_text(cpu: dict[str, float]) -> str:
    processes = {name: ms for name, ms in cpu.items() if name != "gc"}
    parts = " + ".join(f"{name} {ms:.2f}" for name, ms in processes.items())
    collecting = f" (bench's garbage collections {cpu['gc'] * 1000:.0f} us)" if "gc" in cpu else ""
    return f"CPU/event {sum(processes.values()):.2f} ms = {parts}{collecting}"


def rate(events: int, seconds: float) -> float:
    return events / seconds if seconds > 0 else math.inf


async def wait_for(
    what: str, predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout:.0f} s")
        await asyncio.sleep(interval)


async def run_writers(writers: int, seqs: range, write: Callable[[int], Awaitable[None]]) -> None:
    """``writers`` tasks, each taking the next sequence number until none is left."""
    pending = iter(seqs)

    async def writer() -> None:
        for seq in pending:  # a shared iterator: each number is taken once
            await write(seq)

    await asyncio.gather(*(writer() for _ in range(writers)))


# --- the two database pipelines, (b) and (c) --------------------------------------------------


@dataclass
class Throughput:
    events_per_s: float  # first write to last effect
    writes_per_s: float  # first write to last commit of the producer side (consumer running)
    cpu: dict[str, float]  # milliseconds of CPU per event, by process

    def __str__(self) -> str:
        return (
            f"{self.events_per_s:6.0f} events/s "
            f"(producer side {self.writes_per_s:4.0f} commits/s; {cpu_text(self.cpu)})"
        )


@dataclass
class Pipeline:
    """Writers commit events in ``source``; something applies them in ``sink``'s effects."""

    settings: Settings
    stack: Stack
    source: asyncpg.Pool
    sink: asyncpg.Pool

    async def write(self, seq: int) -> None:
        raise NotImplementedError

    async def effects(self, low: int, high: int) -> tuple[int, float | None]:
        """How many effects rows have ``low <= seq < high``, and the last one's ``done_at``."""
        row = await self.sink.fetchrow(
            "SELECT count(*) AS n, extract(epoch FROM max(done_at))::float8 AS last"
            " FROM effects WHERE seq >= $1 AND seq < $2",
            low,
            high,
        )
        assert row is not None
        return row["n"], row["last"]

    async def wait_applied(self, what: str, seqs: range) -> float:
        """Wait until every event of ``seqs`` has its effect; the last one's ``done_at``."""
        last: float | None = None

        async def all_there() -> bool:
            nonlocal last
            count, last = await self.effects(seqs.start, seqs.stop)
            if count > len(seqs):
                raise RuntimeError(f"{what}: {count} effects for {len(seqs)} events")
            return count == len(seqs)

        await wait_for(what, all_there, self.settings.timeout, 0.05)
        assert last is not None
        return last

    async def warm_up(self) -> None:
        seqs = range(-WARM_UP, 0)
        await run_writers(self.settings.writers, seqs, self.write)
        await self.wait_applied("warm-up", seqs)

    async def measure(self, first: int) -> Throughput:
        seqs = range(first, first + self.settings.events)
        cpu: dict[str, float] = {}
        async with self.stack.cpu.per_event(len(seqs), cpu):
            started = time.time()
            await run_writers(self.settings.writers, seqs, self.write)
            written = time.time()
            last = await self.wait_applied("throughput", seqs)
        return Throughput(rate(len(seqs), last - started), rate(len(seqs), written - started), cpu)


# --- (a) raw aiokafka -------------------------------------------------------------------------


@dataclass
class RawKafka:
    settings: Settings
    stack: Stack
    topic: str
    producer: AIOKafkaProducer
    consumer: AIOKafkaConsumer
    received: int = 0
    last_at: float = 0.0

    async def consume(self, until: int) -> None:
        while self.received < until:
            batches = await self.consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    json.loads(record.value or b"")  # what a consumer does at the least
                self.received += len(records)
            if batches:
                self.last_at = time.time()
                await self.consumer.commit()

    async def produce(self, seqs: range) -> None:
        sends = [
            await self.producer.send(
                self.topic, value=payload_of(seq).encode(), key=thing_of(seq).encode()
            )
            for seq in seqs
        ]
        await asyncio.gather(*sends)

    async def measure(self) -> tuple[float, dict[str, float]]:
        n = self.settings.events
        cpu: dict[str, float] = {}
        async with self.stack.cpu.per_event(n, cpu):
            consuming = asyncio.create_task(self.consume(self.received + n))
            started = time.time()
            await self.produce(range(n))
            await asyncio.wait_for(consuming, self.settings.timeout)
        return rate(n, self.last_at - started), cpu


@contextlib.asynccontextmanager
async def raw_kafka(settings: Settings, stack: Stack) -> AsyncIterator[RawKafka]:
    topic = await stack.topic(f"{settings.prefix}.raw-kafka", settings.partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap, acks="all", enable_idempotence=False, linger_ms=2
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.bootstrap,
        group_id=f"{settings.prefix}.raw-kafka",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await producer.start()
    await consumer.start()
    try:
        raw = RawKafka(settings, stack, topic, producer, consumer)
        # Warm-up: the group is joined (~5 s on tansu) and every partition delivers once.
        await raw.produce(range(-WARM_UP, 0))
        await asyncio.wait_for(raw.consume(WARM_UP), settings.timeout)
        yield raw
    finally:
        await consumer.stop()
        await producer.stop()


# --- (b) raw asyncpg --------------------------------------------------------------------------


class RawPostgres(Pipeline):
    """Per-event transactions on both sides, a naive id-order poller in between, no Kafka."""

    def __init__(
        self,
        settings: Settings,
        stack: Stack,
        source: asyncpg.Pool,
        sink: asyncpg.Pool,
        poller: asyncpg.Connection,
    ) -> None:
        super().__init__(settings, stack, source, sink)
        self.poller = poller
        self.group = f"{settings.prefix}.raw-postgres"
        self.lanes: list[asyncio.Queue[asyncpg.Record]] = [
            asyncio.Queue() for _ in range(settings.partitions)
        ]
        self.partitioner = DefaultPartitioner()
        self.below = 0  # every id <= below was dispatched
        self.dispatched: set[int] = set()  # ids > below dispatched (a commit may come late)

    async def write(self, seq: int) -> None:
        async with self.source.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO source (event_id, key, payload) VALUES ($1, $2, $3)",
                uuid.uuid4(),
                thing_of(seq),
                payload_of(seq),
            )

    def lane_of(self, key: str) -> asyncio.Queue[asyncpg.Record]:
        """The lane of the Kafka partition the key would go to."""
        every = list(range(len(self.lanes)))
        partition: int = self.partitioner(key.encode(), every, every)
        return self.lanes[partition]

    async def poll(self) -> None:
        while True:
            rows = await self.poller.fetch(
                "SELECT id, event_id, key, payload FROM source WHERE id > $1 ORDER BY id LIMIT 500",
                self.below,
            )
            fresh = [row for row in rows if row["id"] not in self.dispatched]
            for row in fresh:
                self.dispatched.add(row["id"])
                self.lane_of(row["key"]).put_nowait(row)
            while self.below + 1 in self.dispatched:
                self.below += 1
                self.dispatched.remove(self.below)
            if not fresh:
                await asyncio.sleep(0.002)

    async def apply(self, lane: asyncio.Queue[asyncpg.Record]) -> None:
        while True:
            row = await lane.get()
            data = json.loads(row["payload"])
            async with self.sink.acquire() as connection, connection.transaction():
                fresh = await connection.fetchval(
                    """
                    INSERT INTO inbox (consumer_group, event_id, event_type)
                    VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true
                    """,
                    self.group,
                    row["event_id"],
                    RAW_EVENT_TYPE,
                )
                if fresh:
                    await connection.execute(
                        "INSERT INTO effects (event_id, thing_id, seq) VALUES ($1, $2, $3)",
                        row["event_id"],
                        data["thing_id"],
                        data["seq"],
                    )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The poller and the lanes, only while measured (the poller would spin meanwhile)."""
        tasks = [asyncio.create_task(self.poll())]
        tasks += [asyncio.create_task(self.apply(lane)) for lane in self.lanes]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def warm_up(self) -> None:
        async with self.running():
            await super().warm_up()

    async def measure(self, first: int) -> Throughput:
        async with self.running():
            return await super().measure(first)


@contextlib.asynccontextmanager
async def raw_postgres(settings: Settings, stack: Stack) -> AsyncIterator[RawPostgres]:
    source_url = await stack.database(f"{settings.prefix}_raw_producer")
    sink_url = await stack.database(f"{settings.prefix}_raw_consumer")
    source = await create_pool(source_url, min_size=settings.writers, max_size=settings.writers)
    sink = await create_pool(sink_url, min_size=settings.partitions, max_size=settings.partitions)
    poller: asyncpg.Connection = await asyncpg.connect(source_url)
    try:
        raw = RawPostgres(settings, stack, source, sink, poller)
        await raw.warm_up()
        yield raw
    finally:
        await poller.close()
        await source.close()
        await sink.close()


# --- (c) the backbone -------------------------------------------------------------------------


@dataclass
class Batches:
    """What the consumer got from each fetch: records, and partitions they came from."""

    batches: int = 0
    records: int = 0
    partitions: int = 0

    def reset(self) -> None:
        self.batches = self.records = self.partitions = 0

    def add(self, records: Sequence[Any]) -> None:
        self.batches += 1
        self.records += len(records)
        self.partitions += len({(record.topic, record.partition) for record in records})

    def text(self) -> str:
        batches = max(self.batches, 1)
        return (
            f"consumer batches: {self.batches}, {self.records / batches:.1f} records and "
            f"{self.partitions / batches:.1f} partitions per batch"
        )


class Backbone(Pipeline):
    """One producing service (outbox + relay) and one consuming service (inbox + handler)."""

    def __init__(
        self,
        settings: Settings,
        stack: Stack,
        source: asyncpg.Pool,
        sink: asyncpg.Pool,
        catalog: Catalog,
        batches: Batches,
    ) -> None:
        super().__init__(settings, stack, source, sink)
        self.catalog = catalog
        self.batches = batches

    async def write(self, seq: int) -> None:
        if not self.settings.telemetry:
            async with transaction(self.source) as connection:
                await publish(connection, event_of(seq), catalog=self.catalog)
            return
        # As in a service: the write is a request's, under its SERVER span (the root of a trace).
        with write_tracer.start_as_current_span("POST /things", kind=SpanKind.SERVER):
            async with transaction(self.source) as connection:
                await publish(connection, event_of(seq), catalog=self.catalog)


@contextlib.asynccontextmanager
async def backbone(settings: Settings, stack: Stack, service: str) -> AsyncIterator[Backbone]:
    """The backbone named ``service``: its own topic and databases."""
    catalog = Catalog()
    topic = catalog.topic(f"{service}.things", partitions=settings.partitions)
    catalog.register(
        ThingChanged,
        event_type=f"fr.maillage.{service}.thing.changed.v1",
        topic=topic,
        key="thing_id",
    )
    await stack.topic(topic.name, topic.partitions)
    source_url = await stack.database(f"{service}_producer")
    sink_url = await stack.database(f"{service}_consumer")
    source = await create_pool(source_url, min_size=settings.writers, max_size=settings.writers)
    sink = await create_pool(sink_url, min_size=settings.partitions, max_size=settings.partitions)

    options: dict[str, Any] = {}
    if settings.max_records is not None:  # what-if; 0 means no limit
        options["max_records"] = settings.max_records or None
    if settings.apply_batch is not None:  # what-if; 1: one transaction per record, as before
        options["apply_batch"] = settings.apply_batch
    consumer = EventConsumer(f"{service}.effects", [topic], catalog=catalog, **options)

    @consumer.handler(ThingChanged)
    async def record(event: ThingChanged, delivery: Delivery) -> None:
        await delivery.connection.execute(
            "INSERT INTO effects (event_id, thing_id, seq) VALUES ($1, $2, $3)",
            delivery.envelope.id,
            event.thing_id,
            event.seq,
        )

    middlewares: list[Any] = []
    if settings.telemetry and settings.faststream_telemetry:  # what-if: as before decision 50
        from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

        middlewares.append(KafkaTelemetryMiddleware())
    broker = KafkaBroker(stack.bootstrap, logger=None, middlewares=middlewares)
    if settings.subscriber:  # what-if: attach() registers its subscriber with these options
        register = broker.subscriber

        def subscriber(*topics: str, **options: Any) -> Any:
            return register(*topics, **{**options, **settings.subscriber})

        broker.subscriber = subscriber  # type: ignore[method-assign, assignment]
    batches = Batches()
    process = consumer.process

    async def counted(records: Sequence[Any]) -> None:
        batches.add(records)
        await process(records)

    consumer.process = counted  # type: ignore[method-assign]
    dead_letters = DeadLetterProducer(stack.bootstrap, client_id="bench", idempotent=False)
    consumer.attach(broker, lambda: sink, dead_letters)
    relay = OutboxRelay(source_url, stack.bootstrap, service=service, idempotent=False)
    relaying = asyncio.create_task(relay.run())
    try:
        await broker.start()
        world = Backbone(settings, stack, source, sink, catalog, batches)
        await world.warm_up()
        yield world
    finally:
        relay.stop()
        await asyncio.wait_for(relaying, 15)
        await broker.stop()
        await dead_letters.stop()
        await source.close()
        await sink.close()


@dataclass
class Latency:
    events: int
    offered_rate: float
    total: list[float]  # commit → handler, seconds, sorted
    relay: list[float]  # commit → the relay marks it published (broker acknowledged), sorted


async def steady_latency(world: Backbone, first: int) -> Latency:
    settings = world.settings
    count = round(settings.rate * settings.seconds)
    committed_at: dict[int, float] = {}

    async def one(seq: int) -> None:
        await world.write(seq)
        committed_at[seq] = time.time()

    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    for k in range(count):
        delay = started + k / settings.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(first + k)))
    await asyncio.gather(*tasks)
    offered = rate(count, time.monotonic() - started)
    seqs = range(first, first + count)
    await world.wait_applied("latency", seqs)
    done = await world.sink.fetch(
        "SELECT seq, extract(epoch FROM done_at)::float8 AS at FROM effects"
        " WHERE seq >= $1 AND seq < $2",
        seqs.start,
        seqs.stop,
    )
    published = await world.source.fetch(
        "SELECT seq, extract(epoch FROM published_at)::float8 AS at"
        " FROM (SELECT (payload::jsonb ->> 'seq')::int AS seq, published_at FROM outbox) AS o"
        " WHERE seq >= $1 AND seq < $2",
        seqs.start,
        seqs.stop,
    )
    return Latency(
        events=count,
        offered_rate=offered,
        total=sorted(row["at"] - committed_at[row["seq"]] for row in done),
        relay=sorted(row["at"] - committed_at[row["seq"]] for row in published),
    )


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    rank = max(1, math.ceil(fraction * len(values)))
    return values[rank - 1]


def milliseconds(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.50) * 1000:6.1f} ms   "
        f"p99 {percentile(values, 0.99) * 1000:6.1f} ms   "
        f"max {values[-1] * 1000:6.1f} ms"
    )


# --- telemetry, as in a service (--telemetry) ---------------------------------------------------


class SpanCounter(SpanProcessor):
    """Counts the spans the SDK finished (recorded ones: sampled out spans never end here)."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


@dataclass
class Telemetry:
    """The SDK as a service configures it, the OTLP sink process, and the switch that takes
    asyncpg's instrumentation away while the raw baselines run."""

    provider: TracerProvider
    counter: SpanCounter
    instrumentor: BaseInstrumentor
    sink_url: str
    sample_ratio: float
    queue_size: int
    batch_size: int
    on: bool = True

    def instrumented(self, on: bool) -> None:
        if on != self.on:
            if on:
                self.instrumentor.instrument()
            else:
                self.instrumentor.uninstrument()
            self.on = on

    async def received(self) -> int:
        """Spans the sink has received so far."""

        def get() -> int:
            url = f"{self.sink_url}/count"  # http://127.0.0.1:<port>, ours
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
                return int(json.load(response)["spans"])

        return await asyncio.to_thread(get)

    async def counted(self) -> tuple[int, int]:
        """(spans finished, spans received by the sink), after a flush."""
        await asyncio.to_thread(self.provider.force_flush)
        return self.counter.ended, await self.received()


@dataclass
class Spans:
    finished: int
    received: int

    def text(self, events: int) -> str:
        dropped = self.finished - self.received
        return (
            f"spans/event: {self.finished / events:.2f} finished, "
            f"{self.received / events:.2f} exported to the sink ({dropped} dropped)"
        )


def serve_otlp_sink(port: int) -> None:
    """The OTLP/HTTP sink (a process of its own, as a collector is): decodes every export
    request and counts its spans; ``GET /count`` answers the counts as JSON."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    counts = {"spans": 0, "requests": 0, "other_requests": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/v1/traces":
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                spans = sum(
                    len(scope.spans)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                )
                with lock:
                    counts["spans"] += spans
                    counts["requests"] += 1
            else:
                with lock:
                    counts["other_requests"] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


@contextlib.asynccontextmanager
async def telemetry(settings: Settings) -> AsyncIterator[tuple[Telemetry | None, int | None]]:
    """With ``--telemetry``: the sink process, then the SDK configured as ``create_app`` does
    (the settings' defaults of a production service unless a what-if option says otherwise).
    Yields the telemetry and the sink's pid (for the CPU meter)."""
    if not settings.telemetry:
        yield None, None
        return
    port = free_port()
    sink = subprocess.Popen(  # noqa: S603, ASYNC220 - this very script, as the sink; started once
        [sys.executable, __file__, "--serve-otlp-sink", str(port)]
    )
    try:
        if not await wait_for_tcp("127.0.0.1", port, timeout=30):
            raise RuntimeError("the OTLP sink did not start")
        sink_url = f"http://127.0.0.1:{port}"
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink_url
        service = ServiceSettings(service_name="bench", database_url="postgresql://unused/bench")
        ratio = service.trace_ratio() if settings.sample_ratio is None else settings.sample_ratio
        queue = settings.span_queue_size or service.trace_span_queue_size
        batch = settings.span_export_batch_size or service.trace_span_export_batch_size
        provider = configure_telemetry(
            "bench", sample_ratio=ratio, span_queue_size=queue, span_export_batch_size=batch
        )
        counter = SpanCounter()
        provider.add_span_processor(counter)
        instrumentor: BaseInstrumentor = StatementInstrumentor()  # type: ignore[no-untyped-call]
        if settings.all_statements:  # what-if: a span for every statement, as before
            instrumentor.uninstrument()
            instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
            instrumentor.instrument()
        yield Telemetry(provider, counter, instrumentor, sink_url, ratio, queue, batch), sink.pid
        provider.shutdown()  # while the sink still listens
        meter_provider = metrics.get_meter_provider()
        if isinstance(meter_provider, MeterProvider):
            meter_provider.shutdown()
    finally:
        sink.terminate()
        try:
            sink.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()


# --- the run ----------------------------------------------------------------------------------


class ServerThread:
    """A thread running a standard asyncio loop for the embedded servers' processes: uvloop's
    subprocesses lack the ``user=`` PostgreSQL needs when we are root. The benchmark's own loop
    only talks to the servers over TCP."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="servers", daemon=True)
        self.thread.start()

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


@contextlib.asynccontextmanager
async def the_stack(workdir: Path, sink_pid: int | None = None) -> AsyncIterator[Stack]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    server_url = os.environ.get("DATABASE_URL")
    broker = None if bootstrap else EmbeddedBroker(free_port())
    postgres = None if server_url else EmbeddedPostgres(workdir / "postgres", free_port())
    servers = ServerThread()
    try:
        if broker is not None:
            await servers.call(broker.start())
            bootstrap = broker.bootstrap_servers
        if postgres is not None:
            await servers.call(postgres.start())
            server_url = postgres.url
        assert bootstrap is not None
        assert server_url is not None
        migrations = workdir / "migrations"
        migrations.mkdir()
        (migrations / "0001_bench.sql").write_text(BENCH_SQL)
        cpu = CpuMeter(
            {
                "postgres": postgres.process.pid if postgres and postgres.process else None,
                "broker": broker.process.pid if broker else None,
                "otlp-sink": sink_pid,
            }
        )
        stack = Stack(bootstrap, server_url, migrations, external_kafka=broker is None, cpu=cpu)
        try:
            yield stack
        finally:
            await stack.clean_up()
    finally:
        if postgres is not None:
            await servers.call(postgres.stop())
        if broker is not None:
            await servers.call(broker.stop())
        servers.close()


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


async def main(settings: Settings) -> int:
    configure_logging("bench", fmt="console", level="WARNING")
    async with telemetry(settings) as (tel, sink_pid):
        return await run(settings, tel, sink_pid)


async def run(settings: Settings, tel: Telemetry | None, sink_pid: int | None) -> int:
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{'uvloop' if settings.uvloop else 'asyncio'} event loop, {load()}"
    )
    print(
        f"settings: {settings.events} events x {settings.rounds} rounds, "
        f"{settings.writers} writers, {settings.partitions} partitions, "
        f"telemetry {'on' if settings.telemetry else 'off'}"
    )
    if tel is not None:
        print(
            f"telemetry: SDK as a service, sampling ratio {tel.sample_ratio:g} (parent-based), "
            f"span queue {tel.queue_size}, export batch {tel.batch_size}, "
            f"{'every statement' if settings.all_statements else 'statements filtered'}, "
            f"OTLP/HTTP to {tel.sink_url}; (a) and (b) uninstrumented"
        )
    if settings.max_records is not None or settings.apply_batch is not None or settings.subscriber:
        what_if = {} if settings.max_records is None else {"max_records": settings.max_records}
        if settings.apply_batch is not None:
            what_if["apply_batch"] = settings.apply_batch
        print(f"what-if consumer options: {what_if | settings.subscriber}")

    def instrumented(on: bool) -> None:
        if tel is not None:
            tel.instrumented(on)

    overall = time.monotonic()
    kafka: list[tuple[float, dict[str, float]]] = []
    postgres: list[Throughput] = []
    ours: list[Throughput] = []
    spans: list[Spans] = []
    with tempfile.TemporaryDirectory(prefix="maillage-bench-") as workdir:
        async with (
            the_stack(Path(workdir), sink_pid) as stack,
            raw_kafka(settings, stack) as a,
            raw_postgres(settings, stack) as b,
            contextlib.AsyncExitStack() as backbones,
        ):
            c = await backbones.enter_async_context(backbone(settings, stack, settings.prefix))
            print(f"broker {stack.bootstrap}, PostgreSQL {stack.server_url}")
            print(f"set up and warmed up in {time.monotonic() - overall:.0f} s")
            if settings.settle_gc:  # as a service does once started (create_app, decision 68)
                settle_garbage_collector()
            for round_ in range(settings.rounds):
                first = round_ * settings.events
                instrumented(False)
                kafka.append(await a.measure())
                postgres.append(await b.measure(first))
                instrumented(True)
                if (
                    round_ and settings.fresh_topics
                ):  # a new topic: tansu's fetches cost more as one grows
                    await backbones.aclose()
                    name = f"{settings.prefix}r{round_}"
                    c = await backbones.enter_async_context(backbone(settings, stack, name))
                before = await tel.counted() if tel else (0, 0)
                c.batches.reset()
                ours.append(await c.measure(first))
                after = await tel.counted() if tel else (0, 0)
                spans.append(Spans(after[0] - before[0], after[1] - before[1]))
                print(f"round {round_ + 1}:")
                print(f"  (a) {kafka[-1][0]:6.0f} events/s ({cpu_text(kafka[-1][1])})")
                print(f"  (b) {postgres[-1]}")
                print(f"  (c) {ours[-1]}")
                print(f"      {c.batches.text()}")
                if tel is not None:
                    print(f"      {spans[-1].text(settings.events)}")
            if settings.fresh_topics:
                await backbones.aclose()
                name = f"{settings.prefix}lat"
                c = await backbones.enter_async_context(backbone(settings, stack, name))
            before = await tel.counted() if tel else (0, 0)
            latency = await steady_latency(c, first=settings.rounds * settings.events)
            after = await tel.counted() if tel else (0, 0)
            latency_spans = Spans(after[0] - before[0], after[1] - before[1])
    best_a, best_a_cpu = max(kafka, key=lambda result: result[0])
    best_b = max(postgres, key=lambda result: result.events_per_s)
    best_c = max(ours, key=lambda result: result.events_per_s)
    ratio = best_c.events_per_s / min(best_a, best_b.events_per_s)
    to_b = best_c.events_per_s / best_b.events_per_s
    to_a = best_c.events_per_s / best_a
    target = 0.8 if settings.telemetry else 0.5
    p99 = percentile(latency.total, 0.99)
    print()
    print(f"best of {settings.rounds}:")
    print(f"(a) raw aiokafka    {best_a:6.0f} events/s ({cpu_text(best_a_cpu)})")
    print(f"(b) raw asyncpg     {best_b}")
    print(f"(c) backbone        {best_c}")
    if tel is not None:
        print(f"    {spans[ours.index(best_c)].text(settings.events)}")
    print(f"c / a (raw aiokafka{', uninstrumented' if tel else ''}) = {to_a:.2f}")
    print(f"c / b (raw asyncpg{', uninstrumented' if tel else ''}) = {to_b:.2f}")
    per_round = [c.events_per_s / b.events_per_s for b, c in zip(postgres, ours, strict=True)]
    print(
        f"c / b round by round = {', '.join(f'{r:.2f}' for r in per_round)}; "
        f"median {statistics.median(per_round):.2f}"
    )
    print(
        f"c / min(a, b) = {ratio:.2f}   "
        f"(target >= {target}{' with telemetry' if tel else ''}: "
        f"{'met' if ratio >= target else 'MISSED'})"
    )
    print()
    print(
        f"latency at {settings.rate:.0f} events/s for {settings.seconds:.0f} s "
        f"({latency.events} events, offered at {latency.offered_rate:.0f} events/s):"
    )
    print(f"    commit -> handler       {milliseconds(latency.total)}")
    print(f"    commit -> relay acked   {milliseconds(latency.relay)}")
    print(f"    target p99 <= 100 ms: {'met' if p99 <= 0.1 else 'MISSED'}")
    if tel is not None:
        print(f"    {latency_spans.text(latency.events)}")
    print()
    print(f"total run time {time.monotonic() - overall:.0f} s, {load()}")
    return 0


def parse(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="N, per throughput round")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds; best counts")
    parser.add_argument("--writers", type=int, default=8, help="producer tasks, (b) and (c)")
    parser.add_argument("--partitions", type=int, default=6, help="topic partitions; (b) lanes")
    parser.add_argument("--rate", type=float, default=200.0, help="latency phase, events/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency phase duration")
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="(c) with the OpenTelemetry SDK and exporter as in a service, to an OTLP sink",
    )
    traces = parser.add_argument_group(
        "telemetry what-if", "with --telemetry (default: a production service's settings)"
    )
    traces.add_argument("--sample-ratio", type=float, help="root traces kept, 0 to 1")
    traces.add_argument("--span-queue-size", type=int, help="batch span processor queue")
    traces.add_argument("--span-export-batch-size", type=int, help="spans per OTLP request")
    traces.add_argument(
        "--all-statements",
        action="store_true",
        help="asyncpg's own instrumentation: a span per statement, in a trace or not",
    )
    traces.add_argument(
        "--faststream-telemetry",
        action="store_true",
        help="FastStream's telemetry middleware on the consumer, as before decision 50",
    )
    parser.add_argument("--serve-otlp-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--one-topic",
        action="store_true",
        help="(c) on one topic for every round, as before (default: a fresh topic and databases "
        "per round, tansu's fetch cost growing with the topic)",
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="CPython's garbage collector as it starts, as before decision 68 (a service once "
        "started freezes what start-up allocated and collects its young generation less often)",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="the default asyncio loop")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of each wait, s")
    what_if = parser.add_argument_group(
        "what-if", "backbone consumer options (default: what the backbone sets)"
    )
    what_if.add_argument(
        "--max-records", type=int, help="EventConsumer max_records (default: no limit; 0: no limit)"
    )
    what_if.add_argument(
        "--apply-batch",
        type=int,
        help="EventConsumer apply_batch: records per transaction (default 100; 1: each alone)",
    )
    what_if.add_argument(
        "--fetch-max-wait-ms", type=int, help="aiokafka fetch_max_wait_ms (backbone: 100)"
    )
    what_if.add_argument(
        "--batch-timeout-ms",
        type=int,
        help="FastStream getmany timeout, also its sleep after an empty poll (200)",
    )
    args = parser.parse_args(argv)
    subscriber = {
        name: value
        for name, value in (
            ("fetch_max_wait_ms", args.fetch_max_wait_ms),
            ("batch_timeout_ms", args.batch_timeout_ms),
        )
        if value is not None
    }
    return Settings(
        events=args.events,
        rounds=args.rounds,
        writers=args.writers,
        partitions=args.partitions,
        rate=args.rate,
        seconds=args.seconds,
        telemetry=args.telemetry,
        uvloop=not args.no_uvloop,
        timeout=args.timeout,
        max_records=args.max_records,
        apply_batch=args.apply_batch,
        subscriber=subscriber,
        sample_ratio=args.sample_ratio,
        span_queue_size=args.span_queue_size,
        span_export_batch_size=args.span_export_batch_size,
        all_statements=args.all_statements,
        faststream_telemetry=args.faststream_telemetry,
        fresh_topics=not args.one_topic,
        settle_gc=not args.default_gc,
    )


if __name__ == "__main__":
    if "--serve-otlp-sink" in sys.argv:
        serve_otlp_sink(int(sys.argv[sys.argv.index("--serve-otlp-sink") + 1]))
        sys.exit(0)
    settings = parse(sys.argv[1:])
    if settings.uvloop:
        import uvloop

        sys.exit(uvloop.run(main(settings)))
    sys.exit(asyncio.run(main(settings)))
