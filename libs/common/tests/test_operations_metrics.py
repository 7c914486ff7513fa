"""maillage.common.metrics on the real broker and database: lag values, readiness, domain gauges.

The OTLP export of the same metrics from running services is tests/test_metrics_export.py; here
the values themselves are checked, through the readings the collection callbacks report.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from maillage.common.db import create_pool
from maillage.common.metrics import Gauge, Reading, ServiceMetrics, consumer_lag, readings
from maillage.common.topics import ensure_topics


@dataclass
class _Group:
    """What consumer_lag reads of an EventConsumer: its group name and its running consumer."""

    group: str
    kafka_consumer: AIOKafkaConsumer | None


async def test_lag_is_end_offset_minus_committed_offset_per_partition(
    kafka_bootstrap_servers: str,
) -> None:
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap_servers, [(topic, 2)])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers)
    await producer.start()
    try:
        for partition, count in ((0, 3), (1, 2)):
            for _ in range(count):
                await producer.send_and_wait(topic, b"x", partition=partition)
    finally:
        await producer.stop()
    group = f"lagtest.{uuid.uuid4().hex[:8]}"
    kafka = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await kafka.start()
    try:
        first, second = TopicPartition(topic, 0), TopicPartition(topic, 1)
        kafka.assign([first, second])
        await kafka.commit({first: 1})  # one of three read; the second partition never committed
        lag = await consumer_lag(_Group(group, kafka))  # type: ignore[arg-type]
        await kafka.commit({first: 3, second: 2})
        caught_up = await consumer_lag(_Group(group, kafka))  # type: ignore[arg-type]
    finally:
        await kafka.stop()
    labels = {"group": group, "topic": topic}
    assert lag == [(2.0, {**labels, "partition": "0"}), (2.0, {**labels, "partition": "1"})]
    assert [value for value, _ in caught_up] == [0.0, 0.0]
    assert await consumer_lag(_Group(group, None)) == []  # type: ignore[arg-type]


def mine(name: str) -> list[Reading]:
    return [reading for reading in readings.latest(name) if reading[1].get("service") == "probe"]


async def test_readiness_and_gauges_are_sampled_and_failures_keep_the_last_values(
    database_url: str,
) -> None:
    pool = await create_pool(database_url)
    answers: list[float] = [3.0]

    async def measure(connection: asyncpg.Connection) -> list[Reading]:
        value = await connection.fetchval("SELECT $1::float8", answers[-1])
        if value < 0:
            raise RuntimeError("the query failed")
        return [(value, {"kind": "test"})]

    async def ok() -> None:
        return None

    async def broken() -> Any:
        raise RuntimeError("down")

    name = f"maillage.test.gauge_{uuid.uuid4().hex[:6]}"
    sampler = ServiceMetrics(
        "probe",
        pool,
        readiness_checks={"database": ok, "broker": broken},
        gauges=[Gauge(name, "{thing}", "A test gauge", measure)],
    )
    try:
        await sampler.sample_readiness()
        await sampler.sample_gauges()
        assert sorted(mine("maillage.service.ready"), key=str) == [
            (0.0, {"service": "probe", "check": "broker"}),
            (1.0, {"service": "probe", "check": "database"}),
        ]
        assert readings.latest(name) == [(3.0, {"service": "probe", "kind": "test"})]
        answers.append(-1.0)  # the next sample fails: the last values stay
        await sampler.sample_gauges()
        assert readings.latest(name) == [(3.0, {"service": "probe", "kind": "test"})]
        # run() forgets the service's readings when it stops
        sampler.stop()
        await sampler.run()
        assert mine("maillage.service.ready") == []
        assert readings.latest(name) == []
    finally:
        await pool.close()
