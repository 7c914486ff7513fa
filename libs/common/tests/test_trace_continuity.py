"""One trace from an HTTP request in one service to the event handler in another, when the trace
is sampled; no span at all when it is not (its decision travels in ``traceparent`` through the
outbox and Kafka), except the failures, which are always recorded (decision 50)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from backbone_world import ThingChanged, World, new_world, wait_until
from fastapi import APIRouter, Request
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import drop_database, ensure_database
from maillage.common.db import transaction
from maillage.common.http import Pool, create_app
from maillage.common.inbox import Delivery, EventConsumer
from maillage.common.logging import get_logger
from maillage.common.outbox import publish
from maillage.common.settings import ServiceSettings
from maillage.common.telemetry import FORCED, is_bookkeeping

SAMPLED_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
UNSAMPLED_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def traceparent(trace_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-00f067aa0ba902b7-{'01' if sampled else '00'}"


async def test_one_trace_from_the_http_request_to_the_handler_and_none_when_unsampled(
    database_url: str,
    postgres_server_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world: World = new_world(
        database_url, kafka_bootstrap_servers, kafka_idempotent_producer, tmp_path
    )
    consumer_database = f"test_{uuid.uuid4().hex[:12]}"
    await ensure_database(postgres_server_url, consumer_database)
    spans = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(spans))

    # The producing service: an HTTP route that changes state and publishes in one transaction.
    routes = APIRouter()

    @routes.post("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @routes.post("/things/{thing_id}", status_code=202)
    async def change_thing(thing_id: str, pool: Pool, request: Request) -> dict[str, str]:
        async with transaction(pool) as connection:
            await connection.execute("INSERT INTO things VALUES ($1, 1)", thing_id)
            event_id = await publish(
                connection, ThingChanged(thing_id=thing_id, seq=1), catalog=world.catalog
            )
        return {"event_id": str(event_id)}

    # The consuming service, with its own database.
    consumer = EventConsumer(f"{world.service}.watcher", [world.topic], catalog=world.catalog)
    handled: list[str] = []

    @consumer.handler(ThingChanged)
    async def watch(event: ThingChanged, delivery: Delivery) -> None:
        get_logger("watcher").info("thing changed", thing_id=event.thing_id)
        if event.thing_id == "t-poison":
            handled.append(str(delivery.envelope.id))
            raise ValueError("a poison event")
        await delivery.connection.execute(
            "INSERT INTO effects (event_id, thing_id, seq, consumer) VALUES ($1, $2, $3, 'w')",
            delivery.envelope.id,
            event.thing_id,
            event.seq,
        )
        handled.append(str(delivery.envelope.id))

    def settings(name: str, dsn: str) -> ServiceSettings:
        return ServiceSettings(
            service_name=name,
            environment="test",
            database_url=dsn,
            kafka_bootstrap_servers=kafka_bootstrap_servers,
            kafka_idempotent_producer=kafka_idempotent_producer,
            log_format="json",
        )

    producer_app = create_app(
        settings("producer", database_url),
        title="producer",
        description="t",
        routers=[routes],
        migrations=world.migrations,
        catalog=world.catalog,
    )
    consumer_app = create_app(
        settings("consumer", database_url_for(postgres_server_url, consumer_database)),
        title="consumer",
        description="t",
        consumers=[consumer],
        migrations=world.migrations,
        catalog=world.catalog,
    )
    try:
        # Starting the consumer includes joining its group: about 5 s on the embedded broker.
        async with (
            LifespanManager(consumer_app, startup_timeout=60),
            LifespanManager(producer_app, startup_timeout=60) as manager,
        ):
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://producer") as client:
                response = await client.post("/things/t-1")  # a new trace, kept (ratio 1)
                sampled = await client.post(
                    "/things/t-2", headers={"traceparent": traceparent(SAMPLED_TRACE, True)}
                )
                unsampled = await client.post(
                    "/things/t-3", headers={"traceparent": traceparent(UNSAMPLED_TRACE, False)}
                )
                poison = await client.post(
                    "/things/t-poison",
                    headers={"traceparent": traceparent(UNSAMPLED_TRACE, False)},
                )
                failed = await client.post(
                    "/boom", headers={"traceparent": traceparent(UNSAMPLED_TRACE, False)}
                )
            assert [r.status_code for r in (response, sampled, unsampled, poison)] == [202] * 4
            assert failed.status_code == 500
            event_id = response.json()["event_id"]
            event_ids = [r.json()["event_id"] for r in (response, sampled, unsampled, poison)]

            async def delivered() -> bool:
                return set(event_ids) <= set(handled)

            assert await wait_until(delivered, timeout=60)

            def dead_letter_span() -> ReadableSpan | None:
                return next(
                    (
                        s
                        for s in spans.get_finished_spans()
                        if s.name == f"{consumer.dead_letter_topic} publish"
                    ),
                    None,
                )

            async def dead_lettered() -> bool:
                return dead_letter_span() is not None

            assert await wait_until(dead_lettered, timeout=30)
    finally:
        await drop_database(postgres_server_url, consumer_database)

    finished = spans.get_finished_spans()
    server = next(
        s for s in finished if s.kind == trace.SpanKind.SERVER and s.name.startswith("POST")
    )
    trace_id = server.context.trace_id
    produce = next(
        s
        for s in finished
        if s.kind == trace.SpanKind.PRODUCER
        and s.attributes
        and s.attributes.get("messaging.message.id") == event_id
    )
    process = next(
        s
        for s in finished
        if s.kind == trace.SpanKind.CONSUMER
        and s.attributes
        and s.attributes.get("messaging.message.id") == event_id
    )
    assert produce.context.trace_id == trace_id
    assert process.context.trace_id == trace_id
    assert process.parent is not None
    assert process.parent.span_id == produce.context.span_id
    # The handler's own database work is part of the same trace, under the consumer span.
    handler_queries = [
        s
        for s in finished
        if s.parent is not None
        and s.parent.span_id == process.context.span_id
        and s.kind == trace.SpanKind.CLIENT
    ]
    assert handler_queries
    assert all(s.context.trace_id == trace_id for s in handler_queries)

    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    # t-1's own line: partitions are applied in parallel, so the first line may be another's.
    handler_line = next(
        line
        for line in lines
        if line.get("event") == "thing changed" and line.get("thing_id") == "t-1"
    )
    assert handler_line["trace_id"] == format(trace_id, "032x")
    assert handler_line["service"] == "consumer"

    # A request that arrives in a sampled trace continues it, complete, to the handler.
    in_sampled = [s for s in finished if s.context.trace_id == SAMPLED_TRACE]
    kinds = {s.kind for s in in_sampled}
    assert {trace.SpanKind.SERVER, trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER} <= kinds
    ids = {s.context.span_id for s in in_sampled}
    assert [s.parent.span_id for s in in_sampled if s.parent and s.parent.span_id not in ids] == [
        0x00F067AA0BA902B7  # the caller's span: the only parent outside the trace's spans
    ]
    # No per-statement span for transaction control, locks or the pool's reset.
    statements = [s.attributes.get("db.statement") for s in finished if s.attributes]
    assert [statement for statement in statements if is_bookkeeping(statement)] == []
    # No statement starts a trace of its own (the relay's polls, the pool's resets, ...).
    lone_statements = [
        s for s in finished if s.parent is None and s.attributes and "db.system" in s.attributes
    ]
    assert lone_statements == []
    # No orphan anywhere: every span's parent was recorded too, or is the caller's.
    every_id = {s.context.span_id for s in finished}
    orphans = [
        s
        for s in finished
        if s.parent is not None and s.parent.span_id not in every_id | {0x00F067AA0BA902B7}
    ]
    assert orphans == []

    # An unsampled request: the event is applied and its logs carry its trace id, but no span
    # of that trace exists anywhere (the relay, Kafka and the consumer followed the decision)...
    t3_line = next(
        line
        for line in lines
        if line.get("event") == "thing changed" and line.get("thing_id") == "t-3"
    )
    assert t3_line["trace_id"] == format(UNSAMPLED_TRACE, "032x")
    assert [s for s in finished if s.context.trace_id == UNSAMPLED_TRACE] == []
    # ...and its failures are recorded all the same, as roots linked to it: the dead letter
    # and the 500.
    forced = {s.name: s for s in finished if s.attributes and s.attributes.get(FORCED)}
    dead_letter = forced[f"{consumer.dead_letter_topic} publish"]
    unhandled = forced["unhandled error"]
    for span in (dead_letter, unhandled):
        assert span.parent is None
        assert [link.context.trace_id for link in span.links] == [UNSAMPLED_TRACE]
        assert span.status.status_code == StatusCode.ERROR
        assert span.events
        assert span.events[0].name == "exception"
    assert dead_letter.attributes
    assert dead_letter.attributes["messaging.message.id"] == (poison.json()["event_id"])
