"""Whatever a producer puts in a record, a consumer never skips, loses or stalls on records.

Real broker, real PostgreSQL, one consumer group for the whole file. Records are produced with a
raw aiokafka producer (headers of any bytes, null values, names given twice, no key, a binary
key, values that are not JSON), all to partition 0 so that their order is known; each batch ends
with a clean sentinel, so once it is applied everything before it was handled. The claim, from
inbox.py: every valid event is applied exactly once, every other record is on the dead-letter
topic (found by its original offset), and a valid event of a type the group does not handle is
neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from backbone_world import World, new_world, recording_consumer, wait_until
from faststream.kafka import KafkaBroker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import drop_database, ensure_database
from maillage.common.db import create_pool, migrate_service
from maillage.common.events import Envelope
from maillage.common.inbox import DeadLetterProducer
from maillage.common.topics import ensure_topics

Headers = list[tuple[str, bytes | None]]


@dataclass
class Setting:
    """One world, one running consumer group, a producer and what reached the dead letters."""

    world: World
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    dead_letter_topic: str
    dead: dict[int, ConsumerRecord] = field(default_factory=dict)  # original offset → letter

    async def produce(self, key: bytes | None, value: bytes | None, headers: Headers) -> int:
        topic = self.world.topic.name
        if key is None and value is None:  # send() refuses it; another client may not
            batch = self.producer.create_batch()
            batch.append(key=None, value=None, timestamp=None, headers=headers)
            batch.close()
            sent = await (await self.producer.send_batch(batch, topic, partition=0))
        else:
            sent = await self.producer.send_and_wait(
                topic, value=value, key=key, headers=headers, partition=0
            )
        return int(sent.offset)

    async def applied(self, event_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        rows = await self.pool.fetch(
            "SELECT event_id, count(*) AS n FROM effects WHERE event_id = ANY($1) GROUP BY 1",
            event_ids,
        )
        return {row["event_id"]: row["n"] for row in rows}


def valid_headers(world: World, event_id: uuid.UUID, subject: str = "k") -> Headers:
    envelope = Envelope(
        event_id, world.event_type, f"/maillage/{world.service}", subject, datetime.now(UTC)
    )
    return [(name, value.encode()) for name, value in envelope.headers().items()]


@pytest.fixture(scope="module")
async def setting(
    postgres_server_url: str,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Setting]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    await ensure_database(postgres_server_url, name)
    database_url = database_url_for(postgres_server_url, name)
    world = new_world(
        database_url,
        kafka_bootstrap_servers,
        kafka_idempotent_producer,
        Path(tmp_path_factory.mktemp("hostile")),
    )
    await migrate_service(database_url, world.migrations)
    consumer = recording_consumer(world)
    await ensure_topics(
        kafka_bootstrap_servers,
        [(world.topic.name, world.topic.partitions), (consumer.dead_letter_topic, 1)],
    )
    pool = await create_pool(database_url, max_size=5)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    setting = Setting(world, pool, producer, consumer.dead_letter_topic)
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap_servers, enable_auto_commit=False)
    await reader.start()
    reader.assign([TopicPartition(consumer.dead_letter_topic, 0)])
    await reader.seek_to_beginning()

    async def collect() -> None:
        while True:
            for records in (await reader.getmany(timeout_ms=200)).values():
                for letter in records:
                    offset = int(dict(letter.headers)["dlq-original-offset"] or b"-1")
                    setting.dead[offset] = letter

    collecting = asyncio.create_task(collect())
    broker = KafkaBroker(world.bootstrap, logger=None)
    # A small limit, so that a record too large to copy whole is easy to make.
    dead_letters = DeadLetterProducer(
        world.bootstrap, client_id="test", idempotent=world.idempotent, max_request_size=64_000
    )
    consumer.attach(broker, lambda: pool, dead_letters, max_attempts=3)
    await broker.start()
    try:
        yield setting
    finally:
        collecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collecting
        await broker.stop()
        await dead_letters.stop()
        await reader.stop()
        await producer.stop()
        await pool.close()
        await drop_database(postgres_server_url, name)


async def test_a_header_that_is_not_utf8_dead_letters_its_record_and_no_other(
    setting: Setting,
) -> None:
    """The issue's input: three valid events in one batch, the second with ``x-legacy:
    b"\\xc3\\x28"``. FastStream's parser raised on it, and the three were lost."""
    world = setting.world
    ids = [uuid.uuid4() for _ in range(4)]
    offsets = []
    for index, event_id in enumerate(ids[:3]):
        headers = valid_headers(world, event_id)
        if index == 1:
            headers.append(("x-legacy", b"\xc3\x28"))
        value = f'{{"thing_id": "k", "seq": {index}}}'.encode()
        offsets.append(await setting.produce(b"k", value, headers))

    async def settled() -> bool:
        return len(await setting.applied(ids[:3])) == 2 and offsets[1] in setting.dead

    assert await wait_until(settled)
    assert await setting.applied(ids[:3]) == {ids[0]: 1, ids[2]: 1}
    letter = setting.dead[offsets[1]]
    # The dead letter keeps the record byte for byte: the bad header too.
    assert ("x-legacy", b"\xc3\x28") in letter.headers
    assert letter.value == b'{"thing_id": "k", "seq": 1}'
    assert letter.key == b"k"
    reason = dict(letter.headers)["dlq-error-message"].decode()
    assert "'x-legacy' is not UTF-8 (byte 0xc3 at 0)" in reason
    # The partition flows: a later event is applied too.
    await setting.produce(b"k", b'{"thing_id": "k", "seq": 3}', valid_headers(world, ids[3]))
    assert await wait_until(lambda: _applied_once(setting, ids[3]))


async def test_a_record_too_large_to_copy_is_dead_lettered_without_its_value(
    setting: Setting,
) -> None:
    world = setting.world
    huge = b"\xff" * 100_000  # over the dead-letter producer's limit here (64 kB)
    offset = await setting.produce(b"big", huge, valid_headers(world, uuid.uuid4()))
    after = uuid.uuid4()
    await setting.produce(b"k", b'{"thing_id": "k", "seq": 1}', valid_headers(world, after))
    assert await wait_until(lambda: _applied_once(setting, after))
    assert await wait_until(lambda: _true(offset in setting.dead))
    letter = setting.dead[offset]
    assert letter.value is None
    assert letter.key == b"big"
    headers = dict(letter.headers)
    assert headers["dlq-value-dropped"] == b"100000 bytes, too large to copy"
    assert headers["dlq-original-topic"] == world.topic.name.encode()


async def _true(value: bool) -> bool:
    return value


async def _applied_once(setting: Setting, event_id: uuid.UUID) -> bool:
    return await setting.applied([event_id]) == {event_id: 1}


# --- The property: arbitrary records among valid ones -------------------------------------------

KNOWN_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "dataschema")
text_values = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Co", "Cn")), max_size=30
)
not_utf8 = st.binary(max_size=20).map(lambda tail: b"\xff" + tail)  # 0xFF starts no UTF-8
other_names = st.text(max_size=15).filter(
    lambda name: not name.startswith(("ce_", "dlq-")) and name != "content-type"
)


@dataclass
class Planned:
    """A record to produce and what must become of it: applied, dead or skipped."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    outcome: str
    event_id: uuid.UUID
    why: str


def _rfc3339(draw: st.DrawFn) -> str:
    """A valid RFC 3339 date-time in one of its many spellings."""
    if draw(st.booleans()):
        day = draw(st.dates(min_value=datetime(1972, 1, 1).date()))
        return f"{day.isoformat()}T23:59:60Z"  # a leap second
    minutes = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    zone = timezone(timedelta(minutes=minutes))
    moment = draw(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)))
    text = moment.replace(tzinfo=zone).isoformat(
        timespec=draw(st.sampled_from(("seconds", "microseconds")))
    )
    if minutes == 0 and draw(st.booleans()):
        text = text.replace("+00:00", draw(st.sampled_from(("Z", "z", "-00:00"))))
    return text.replace("T", draw(st.sampled_from(("T", "t"))))


INVALID_TIMES = (
    "2026-11-21T10:00:00",  # no offset
    "2026-02-30T10:00:00Z",  # no such day
    "2026-11-21T24:00:00Z",
    "2026-11-21T10:60:00Z",
    "2026-11-21T12:59:60Z",  # a leap second not at 23:59 UTC
    "2026-11-21",
    "2026-11-21 10:00:00Z",
    "2026-11-21T10:00:00+24:00",
    "0000-01-01T00:00:00Z",
)


@st.composite
def planned(draw: st.DrawFn, world: World) -> Planned:
    event_id = uuid.uuid4()  # unique: hypothesis repeats its own draws across examples
    headers = valid_headers(world, event_id, draw(text_values.filter(bool)))
    value: bytes | None = f'{{"thing_id": "t", "seq": {draw(st.integers(0, 9))}}}'.encode()
    key = draw(st.one_of(st.none(), st.binary(max_size=12)))
    index = {name: position for position, (name, _) in enumerate(headers)}

    def put(name: str, text: bytes | None) -> None:
        headers[index[name]] = (name, text)

    mutation = draw(
        st.sampled_from(
            (
                "none",
                "extra header",
                "extension",
                "time spelling",
                "content-type spelling",
                "no content-type",
                "dataschema",
                "unknown type",
                "header not utf-8",
                "null header",
                "required missing",
                "attribute twice",
                "specversion",
                "id not a uuid",
                "source",
                "empty subject",
                "time",
                "extension name",
                "content-type",
                "control character",
                "value",
                "empty value",
                "wrong schema",
            )
        )
    )
    outcome = "applied"
    if mutation == "extra header":
        headers.insert(
            draw(st.integers(0, len(headers))), (draw(other_names), draw(text_values).encode())
        )
    elif mutation == "extension":
        name = draw(
            st.from_regex(r"[a-z0-9]{1,25}", fullmatch=True).filter(
                lambda n: n not in KNOWN_ATTRIBUTES
            )
        )
        headers.append((f"ce_{name}", draw(text_values).encode()))
    elif mutation == "time spelling":
        put("ce_time", _rfc3339(draw).encode())
    elif mutation == "content-type spelling":
        put(
            "content-type",
            draw(st.sampled_from((b"application/json; charset=utf-8", b"Application/JSON"))),
        )
    elif mutation == "no content-type":
        headers.pop(index["content-type"])
    elif mutation == "dataschema":
        headers.append(("ce_dataschema", b"https://schemas.example.org/thing.json"))
    elif mutation == "unknown type":
        put("ce_type", f"fr.maillage.{world.service}.thing.vanished.v1".encode())
        outcome = "skipped"
    else:
        outcome = "dead"
        if mutation in ("header not utf-8", "null header"):
            bad = draw(not_utf8) if mutation == "header not utf-8" else None
            if draw(st.booleans()):
                put(draw(st.sampled_from(sorted(index))), bad)
            else:
                headers.append((draw(other_names), bad))
        elif mutation == "required missing":
            headers.pop(
                index[
                    draw(
                        st.sampled_from(
                            ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time")
                        )
                    )
                ]
            )
        elif mutation == "attribute twice":
            name = draw(st.sampled_from(sorted(index)))
            headers.append((name, draw(st.sampled_from((dict(headers)[name], b"other")))))
        elif mutation == "specversion":
            put("ce_specversion", draw(st.sampled_from((b"0.3", b"1", b"1.0 ", b"2.0"))))
        elif mutation == "id not a uuid":
            put("ce_id", draw(text_values.filter(lambda t: len(t) != 36)).encode())
        elif mutation == "source":
            put("ce_source", draw(st.sampled_from((b"", b"/maillage/other", b"a b", b"%zz"))))
        elif mutation == "empty subject":
            put("ce_subject", b"")
        elif mutation == "time":
            put("ce_time", draw(st.sampled_from(INVALID_TIMES)).encode())
        elif mutation == "extension name":
            name = draw(st.sampled_from(("", "traceId", "x-y", "a_b", "É")))
            headers.append((f"ce_{name}", b"v"))
        elif mutation == "content-type":
            put(
                "content-type",
                draw(st.sampled_from((b"text/plain", b"application/cloudevents+json", b"json"))),
            )
        elif mutation == "control character":
            put("ce_subject", draw(st.sampled_from(("a\x00b", "\x1f", "\x85"))).encode())
        elif mutation == "value":
            value = draw(not_utf8)
        elif mutation == "empty value":
            value = draw(st.sampled_from((None, b"")))
        else:
            value = draw(
                st.sampled_from(
                    (b'{"thing_id": "t"}', b"[]", b"null", b'{"thing_id": 1, "seq": 1}')
                )
            )
    return Planned(key, value, headers, outcome, event_id, mutation)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_every_valid_event_is_applied_once_and_every_other_record_dead_lettered(
    setting: Setting, data: st.DataObject
) -> None:
    world = setting.world
    plans = data.draw(st.lists(planned(world), min_size=1, max_size=12), label="records")
    sentinel = uuid.uuid4()
    offsets = [await setting.produce(p.key, p.value, p.headers) for p in plans]
    await setting.produce(b"s", b'{"thing_id": "s", "seq": 0}', valid_headers(world, sentinel))
    dead = {offset for offset, plan in zip(offsets, plans, strict=True) if plan.outcome == "dead"}

    async def settled() -> bool:
        return await _applied_once(setting, sentinel) and dead <= set(setting.dead)

    assert await wait_until(settled, timeout=60)
    applied = await setting.applied([plan.event_id for plan in plans])
    for offset, plan in zip(offsets, plans, strict=True):
        assert applied.get(plan.event_id, 0) == (plan.outcome == "applied"), plan
        assert (offset in setting.dead) == (plan.outcome == "dead"), plan
