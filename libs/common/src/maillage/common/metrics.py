"""Operations metrics every service has, beside the backbone's own (outbox, inbox).

What is counted where it happens (the outbox relay, the inbox, the webhook worker) stays there.
This module holds what has to be *sampled*: values read periodically, then handed to
OpenTelemetry's collection callbacks, which must not wait on the network or the database:

- ``maillage.consumer.lag`` (gauge, ``{message}``; labels ``group``, ``topic``, ``partition``):
  for each partition assigned to this process's consumers, the end offset minus the group's
  committed offset, asked of the broker by the consumer itself every ``lag_interval`` seconds
  (the embedded stack has no Kafka exporter; a partition not committed yet counts from its
  beginning, as ``auto_offset_reset=earliest`` reads it);
- ``maillage.service.ready`` (gauge, no unit; labels ``service``, ``check``): 1 when the
  readiness check (the same as ``/readyz``) passes, 0 when it fails, every ``lag_interval``;
- a service's domain gauges (:class:`Gauge`), read from its database every ``gauge_interval``
  seconds, one read-only transaction for all: open offers and places, requests waiting,
  pending mail…

:class:`ServiceMetrics` is the background worker that samples all three; ``create_app`` starts
it for every service. Names follow the OpenTelemetry semantic conventions where one exists,
``maillage.*`` otherwise; docs/operations.md lists every metric with its unit and labels.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from opentelemetry import metrics

from maillage.common.inbox import EventConsumer
from maillage.common.logging import get_logger

log = get_logger(__name__)
meter = metrics.get_meter("maillage.operations")

Labels = Mapping[str, str | int]
Reading = tuple[float, Labels]
"""One sampled value and its labels."""

ReadinessCheck = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Gauge:
    """A domain gauge: ``measure`` reads the values from the service's database.

    ``measure`` runs inside a read-only transaction and returns ``(value, labels)`` pairs; it
    must be cheap (an indexed count) since it runs every minute on every replica.
    """

    name: str
    unit: str
    description: str
    measure: Callable[[asyncpg.Connection], Awaitable[Iterable[Reading]]]


class _Readings:
    """The latest sampled values, per metric and per owner (a consumer group, a service…).

    An owner's values are replaced as a whole at each sample, so a series that is no longer
    measured (a partition assigned elsewhere after a rebalance) stops being reported.
    """

    def __init__(self) -> None:
        self._values: dict[str, dict[str, list[Reading]]] = {}
        self._instruments: set[str] = set()

    def gauge(self, name: str, unit: str, description: str) -> None:
        """Create the observable gauge ``name`` once per process (OpenTelemetry keeps the first
        instrument of a name: a second service in the same process shares it)."""
        if name in self._instruments:
            return
        self._instruments.add(name)

        def observe(_options: Any) -> list[metrics.Observation]:
            owners = self._values.get(name, {})
            return [
                metrics.Observation(value, dict(labels))
                for readings in list(owners.values())
                for value, labels in readings
            ]

        meter.create_observable_gauge(name, callbacks=[observe], unit=unit, description=description)

    def replace(self, name: str, owner: str, readings: list[Reading]) -> None:
        self._values.setdefault(name, {})[owner] = readings

    def forget(self, owner: str) -> None:
        for owners in self._values.values():
            owners.pop(owner, None)

    def latest(self, name: str) -> list[Reading]:
        """Every owner's latest readings of ``name`` (for tests and the CLI)."""
        return [reading for readings in self._values.get(name, {}).values() for reading in readings]


readings = _Readings()
readings.gauge(
    "maillage.consumer.lag",
    "{message}",
    "Records not yet consumed: end offset minus the group's committed offset, per partition",
)
readings.gauge(
    "maillage.service.ready",
    "",
    "1 when the readiness check passes, 0 when it fails (the checks of /readyz)",
)


async def consumer_lag(consumer: EventConsumer) -> list[Reading]:
    """End offset − committed offset of each partition assigned to ``consumer`` in this process.

    Empty while the consumer is not started or has no partition assigned (another replica of
    the group holds them all). Raises what the broker raises (the caller keeps the last values).
    """
    kafka = consumer.kafka_consumer
    if kafka is None:
        return []
    partitions = sorted(kafka.assignment(), key=lambda tp: (tp.topic, tp.partition))
    if not partitions:
        return []
    ends: dict[TopicPartition, int] = await kafka.end_offsets(partitions)
    committed = {tp: await kafka.committed(tp) for tp in partitions}
    never = [tp for tp, offset in committed.items() if offset is None]
    starts: dict[TopicPartition, int] = await kafka.beginning_offsets(never) if never else {}
    result: list[Reading] = []
    for tp in partitions:
        position = committed[tp]
        if position is None:
            position = starts.get(tp, 0)
        labels = {"group": consumer.group, "topic": tp.topic, "partition": str(tp.partition)}
        result.append((float(max(ends.get(tp, position) - position, 0)), labels))
    return result


class ServiceMetrics:
    """Samples consumer lag, readiness and the domain gauges of one service until :meth:`stop`.

    A failed sample (broker or database unreachable) keeps the previous values and is logged
    once per kind of failure in a row; readiness then reports the failing check as 0.
    """

    def __init__(
        self,
        service: str,
        pool: asyncpg.Pool,
        *,
        consumers: Sequence[EventConsumer] = (),
        readiness_checks: Mapping[str, ReadinessCheck] | None = None,
        gauges: Sequence[Gauge] = (),
        lag_interval: float = 15.0,
        gauge_interval: float = 60.0,
        check_timeout: float = 5.0,
    ) -> None:
        self.service = service
        self.pool = pool
        self.consumers = list(consumers)
        self.readiness_checks = readiness_checks if readiness_checks is not None else {}
        self.gauges = list(gauges)
        self.lag_interval = lag_interval
        self.gauge_interval = gauge_interval
        self.check_timeout = check_timeout
        self._stop = asyncio.Event()
        self._failing: set[str] = set()
        for gauge in self.gauges:
            readings.gauge(gauge.name, gauge.unit, gauge.description)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Sample lag and readiness every ``lag_interval``, the gauges every ``gauge_interval``."""
        loop = asyncio.get_running_loop()
        next_gauges = loop.time()
        try:
            while not self._stop.is_set():
                await self.sample_lag()
                await self.sample_readiness()
                if self.gauges and loop.time() >= next_gauges:
                    await self.sample_gauges()
                    next_gauges = loop.time() + self.gauge_interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.lag_interval)
        finally:
            readings.forget(self.service)
            for consumer in self.consumers:
                readings.forget(consumer.group)

    async def sample_lag(self) -> None:
        for consumer in self.consumers:
            try:
                lag = await asyncio.wait_for(consumer_lag(consumer), self.check_timeout)
            except Exception as exc:
                self._failed(f"lag:{consumer.group}", exc)
                continue
            self._recovered(f"lag:{consumer.group}")
            readings.replace("maillage.consumer.lag", consumer.group, lag)

    async def sample_readiness(self) -> None:
        if not self.readiness_checks:
            return
        names = list(self.readiness_checks)
        results = await asyncio.gather(
            *(
                asyncio.wait_for(check(), self.check_timeout)
                for check in self.readiness_checks.values()
            ),
            return_exceptions=True,
        )
        readings.replace(
            "maillage.service.ready",
            self.service,
            [
                (
                    0.0 if isinstance(result, BaseException) else 1.0,
                    {"service": self.service, "check": name},
                )
                for name, result in zip(names, results, strict=True)
            ],
        )

    async def sample_gauges(self) -> None:
        try:
            async with self.pool.acquire() as connection, connection.transaction(readonly=True):
                measured = [(gauge, list(await gauge.measure(connection))) for gauge in self.gauges]
        except Exception as exc:
            self._failed("gauges", exc)
            return
        self._recovered("gauges")
        for gauge, values in measured:
            readings.replace(
                gauge.name,
                self.service,
                [(value, {"service": self.service, **labels}) for value, labels in values],
            )

    def _failed(self, what: str, error: BaseException) -> None:
        if what not in self._failing:
            self._failing.add(what)
            log.warning("metrics sample failed", sample=what, error=repr(error))

    def _recovered(self, what: str) -> None:
        self._failing.discard(what)


async def count_by(
    connection: asyncpg.Connection, query: str, *args: object, label: str | None = None
) -> list[Reading]:
    """Run ``query`` (``SELECT <label value>, <count>`` or ``SELECT <count>``) into readings."""
    rows = await connection.fetch(query, *args)
    if label is None:
        return [(float(rows[0][0] or 0), {})] if rows else [(0.0, {})]
    return [(float(row[1] or 0), {label: str(row[0])}) for row in rows]
