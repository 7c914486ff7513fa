"""Every log line written while handling an event carries the trace and span it belongs to
(issue 15 §4), on the JSON logs: the consumer's one line per record ("event handled", which
replaces FastStream's per-batch "Received"/"Processed"), the handler's own lines, and the dead
letter's. (Requests: test_observability.py; webhook attempts and mails: the notifications
tests.)"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import ConsumerRecord
from backbone_world import ThingChanged, World
from opentelemetry import propagate, trace

from maillage.common.events import Envelope, encode_headers
from maillage.common.inbox import DeadLetterProducer, Delivery, EventConsumer
from maillage.common.logging import configure_logging, get_logger
from maillage.common.topics import ensure_topics


def record(world: World, offset: int, note: str) -> tuple[ConsumerRecord[bytes, bytes], str]:
    """A record of a ThingChanged written in a trace of its own; and that trace's id."""
    with trace.get_tracer("test").start_as_current_span("the writer") as span:
        envelope = Envelope(
            uuid.uuid4(), world.event_type, f"/maillage/{world.service}", "k", datetime.now(UTC)
        )
        headers = envelope.headers()
        propagate.inject(headers)
        trace_id = format(span.get_span_context().trace_id, "032x")
    value = ThingChanged(thing_id="k", seq=offset, note=note).model_dump_json().encode()
    raw = ConsumerRecord(
        world.topic.name, 0, offset, 0, 0, b"k", value, None, 1, len(value),
        tuple(encode_headers(headers)),
    )  # fmt: skip
    return raw, trace_id


async def test_event_log_lines_carry_the_event_trace(
    world: World, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(world.service, fmt="json")
    consumer = EventConsumer(f"{world.service}.traced", [world.topic], catalog=world.catalog)

    @consumer.handler(ThingChanged)
    async def handle(event: ThingChanged, delivery: Delivery) -> None:
        get_logger("handler").info("applying", seq=event.seq)
        if event.note == "poison":
            raise ValueError("poison")

    await ensure_topics(world.bootstrap, [(consumer.dead_letter_topic, 1)])
    dead_letters = DeadLetterProducer(world.bootstrap, client_id="t", idempotent=world.idempotent)
    consumer.bind(lambda: pool, dead_letters)
    good, good_trace = record(world, 1, "")
    poison, poison_trace = record(world, 2, "poison")
    try:
        await consumer.process([good, good, poison])  # the first one twice: a duplicate
    finally:
        await dead_letters.stop()

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    handled = [line for line in lines if line["event"] == "event handled"]
    assert [(line["offset"], line["outcome"]) for line in handled] == [
        (1, "applied"),
        (1, "duplicate"),
        (2, "failed"),
    ]
    applying = [line for line in lines if line["event"] == "applying"]
    dead = [line for line in lines if line["event"] == "event sent to the dead letters"]
    # The batch ran both handlers and rolled back on the poison; then the good one was applied
    # again, and the poison alone (decision 57).
    assert [line["seq"] for line in applying] == [1, 2, 1, 2]
    assert len(dead) == 1
    for line, trace_id in [
        *zip(handled, (good_trace, good_trace, poison_trace), strict=True),
        *zip(applying, (good_trace, poison_trace, good_trace, poison_trace), strict=True),
        (dead[0], poison_trace),
    ]:
        assert line["trace_id"] == trace_id, line
        assert line["span_id"], line
