"""Dead letters: list them, and replay them to the topic they came from.

A replay re-publishes the original record (same key, same value, same CloudEvents headers and
so the same event id) to its original topic: every consumer group on that topic sees it again,
and the inboxes of those that had already applied it skip it. ``replay_all`` remembers how far it
went in the consumer group ``<dead-letter topic>.replay``, so a dead letter is replayed once by
"all"; a single event can be replayed again by its id at any time.

The outbox has dead letters of its own: events the broker refused for good, set aside in the
service's database by the relay (``maillage.common.outbox``). They are listed and replayed here
too (moved back to the outbox, same event id), by id or with "all".
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator

from maillage.common.auth import require_role
from maillage.common.events import decode_headers
from maillage.common.inbox import DEAD_LETTER_HEADER, DEAD_LETTER_PREFIX, DeadLetterProducer
from maillage.common.kinds import Bool
from maillage.common.logging import get_logger
from maillage.common.outbox import outbox_dead_letters, replay_outbox_dead_letters
from maillage.common.problems import Problem

log = get_logger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    dead_letter_topic: str
    offset: int
    event_id: str | None
    event_type: str | None
    consumer_group: str
    original_topic: str
    original_partition: int
    original_offset: int
    error_class: str
    error_message: str
    attempts: int
    failed_at: str
    replayed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _replay_group(topic: str) -> str:
    return f"{topic}.replay"


async def dead_letter_topics(bootstrap_servers: str, service: str) -> list[str]:
    """The dead-letter topics of a service's consumer groups (``dlq.<service>.*``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        prefix = f"{DEAD_LETTER_PREFIX}{service}."
        return sorted(name for name in await admin.list_topics() if name.startswith(prefix))
    finally:
        await admin.close()


@dataclass
class _TopicRead:
    records: list[ConsumerRecord[bytes, bytes]]
    ends: dict[TopicPartition, int]
    committed: dict[TopicPartition, int]  # how far replay_all has gone
    consumer: AIOKafkaConsumer

    def replayed(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        offset: int = record.offset
        return offset < self.committed[TopicPartition(record.topic, record.partition)]


async def _read(bootstrap_servers: str, topic: str, *, from_committed: bool = False) -> _TopicRead:
    """Every record of ``topic`` up to its current end (from the replay position when asked).
    The caller stops the returned consumer (after committing, for a replay)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=_replay_group(topic),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    partitions = [
        TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    committed: dict[TopicPartition, int] = {}
    pending = set()
    for partition in partitions:
        committed[partition] = await consumer.committed(partition) or 0
        start = committed[partition] if from_committed else 0
        consumer.seek(partition, start)
        if start < ends[partition]:
            pending.add(partition)
    records: list[ConsumerRecord[bytes, bytes]] = []
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=1000)
        for received in batch.values():
            records.extend(received)
        for partition in list(pending):
            if await consumer.position(partition) >= ends[partition]:
                pending.discard(partition)
    return _TopicRead(records, ends, committed, consumer)


def _as_dead_letter(record: ConsumerRecord[bytes, bytes], *, replayed: bool) -> DeadLetter:
    headers = decode_headers(record.headers)
    return DeadLetter(
        dead_letter_topic=record.topic,
        offset=record.offset,
        event_id=headers.get("ce_id"),
        event_type=headers.get("ce_type"),
        consumer_group=headers.get("dlq-consumer-group", ""),
        original_topic=headers.get("dlq-original-topic", ""),
        original_partition=int(headers.get("dlq-original-partition", "-1")),
        original_offset=int(headers.get("dlq-original-offset", "-1")),
        error_class=headers.get("dlq-error-class", ""),
        error_message=headers.get("dlq-error-message", ""),
        attempts=int(headers.get("dlq-attempts", "0")),
        failed_at=headers.get("dlq-failed-at", ""),
        replayed=replayed,
    )


async def list_dead_letters(bootstrap_servers: str, topics: list[str]) -> list[DeadLetter]:
    found: list[DeadLetter] = []
    for topic in topics:
        read = await _read(bootstrap_servers, topic)
        await read.consumer.stop()
        found.extend(_as_dead_letter(r, replayed=read.replayed(r)) for r in read.records)
    return found


async def _republish(producer: DeadLetterProducer, record: ConsumerRecord[bytes, bytes]) -> None:
    # The original headers byte for byte (a dead letter may be one because a header was not
    # UTF-8), without those the dead-lettering added.
    headers = [(n, v) for n, v in record.headers if not n.startswith(DEAD_LETTER_HEADER)]
    original = decode_headers(record.headers).get("dlq-original-topic")
    if not original:
        raise ValueError(f"{record.topic}@{record.offset} does not say where it came from")
    await producer.send(original, record.key, record.value, headers)


async def replay_event(
    bootstrap_servers: str, topics: list[str], event_id: UUID, producer: DeadLetterProducer
) -> list[DeadLetter]:
    """Replay the dead letters of one event (normally one) found in ``topics``."""
    replayed: list[DeadLetter] = []
    for topic in topics:
        read = await _read(bootstrap_servers, topic)
        await read.consumer.stop()
        for record in read.records:
            letter = _as_dead_letter(record, replayed=read.replayed(record))
            if letter.event_id == str(event_id):
                await _republish(producer, record)
                replayed.append(letter)
    log.info("dead letters replayed", event_id=str(event_id), count=len(replayed))
    return replayed


async def replay_all(
    bootstrap_servers: str, topics: list[str], producer: DeadLetterProducer
) -> list[DeadLetter]:
    """Replay every dead letter not replayed by an earlier ``replay_all``."""
    replayed: list[DeadLetter] = []
    for topic in topics:
        read = await _read(bootstrap_servers, topic, from_committed=True)
        try:
            for record in read.records:
                await _republish(producer, record)
                replayed.append(_as_dead_letter(record, replayed=False))
            if read.ends:
                await read.consumer.commit(dict(read.ends))
        finally:
            with contextlib.suppress(Exception):
                await read.consumer.stop()
    log.info("dead letters replayed", count=len(replayed))
    return replayed


class ReplayRequest(BaseModel):
    event_id: UUID | None = Field(default=None, description="Replay this event's dead letters")
    all: Bool = Field(default=False, description="Replay every dead letter not yet replayed")

    @model_validator(mode="after")
    def one_of(self) -> ReplayRequest:
        if (self.event_id is None) == (not self.all):
            raise ValueError("Donnez soit event_id, soit all=true.")
        return self


def admin_router(service: str) -> APIRouter:
    """``/admin/dlq``: the service's dead letters, for operators."""
    router = APIRouter(
        prefix="/admin/dlq",
        tags=["operations"],
        dependencies=[require_role("operator")],
        responses={403: {"description": "Operators only"}},
    )

    def context(request: Request) -> tuple[str, DeadLetterProducer]:
        runtime = request.app.state.runtime
        return runtime.settings.kafka_bootstrap_servers, runtime.dead_letters

    @router.get(
        "",
        summary="List this service's dead letters",
        description="`items`: the consumer groups' dead letters (Kafka topics `dlq.<service>.*`);"
        " `outbox`: the events the broker refused for good, set aside by the outbox relay.",
    )
    async def list_all(request: Request) -> dict[str, Any]:
        bootstrap, _ = context(request)
        letters = await list_dead_letters(bootstrap, await dead_letter_topics(bootstrap, service))
        pool = request.app.state.runtime.pool
        set_aside = []
        if pool is not None:
            async with pool.acquire() as connection:
                set_aside = await outbox_dead_letters(connection)
        return {
            "items": [letter.as_dict() for letter in letters],
            "outbox": [letter.as_dict() for letter in set_aside],
        }

    @router.post(
        "/replay",
        summary="Replay one event, or every dead letter not yet replayed",
        responses={404: {"description": "No dead letter of this event"}},
    )
    async def replay(request: Request, body: ReplayRequest) -> dict[str, Any]:
        bootstrap, producer = context(request)
        topics = await dead_letter_topics(bootstrap, service)
        pool = request.app.state.runtime.pool
        moved = []
        if pool is not None:
            async with pool.acquire() as connection:
                moved = await replay_outbox_dead_letters(connection, body.event_id)
        outbox = {"outbox_replayed": [letter.as_dict() for letter in moved]}
        if body.event_id is not None:
            letters = await replay_event(bootstrap, topics, body.event_id, producer)
            if not letters and not moved:
                raise Problem(
                    404,
                    "dead_letter_not_found",
                    "Lettre morte introuvable",
                    detail=f"Aucune lettre morte de l'événement {body.event_id}.",
                )
        else:
            letters = await replay_all(bootstrap, topics, producer)
        return {"replayed": [letter.as_dict() for letter in letters], **outbox}

    return router
