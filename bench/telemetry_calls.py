"""CPU per event of the tracing calls the backbone makes, by sampling setting: pure CPU, no I/O.

Run from the repository root::

    .venv/bin/python bench/telemetry_calls.py [--events 20000]

One event through the backbone, as ``bench/backbone.py --telemetry`` runs it, makes these calls: a
SERVER span for the request that writes it; the statements of ``publish``'s transaction (BEGIN, the
INSERT, COMMIT, the pool's reset); ``propagate.inject`` into the outbox headers; the relay's
PRODUCER span (extract, start, inject, end), or for an unsampled trace only the check that passes
its ``traceparent`` on (decision 68); the consumer's CONSUMER span, made current three times (read,
handler, "handled" line) as the inbox does; the statements of the inbox transaction (BEGIN, the
inbox INSERT, the handler's INSERT, COMMIT, the reset); and the two histograms recorded per event
(the relay's publish latency, the consumer's handler duration), which are not sampled, with one
metric reader as a service has. Here the statements go through the real asyncpg instrumentation
(``StatementInstrumentor``, or asyncpg's own with ``every statement``) around a coroutine that does
nothing, and finished spans go through the real batch span processor to an exporter that encodes
them as OTLP protobuf (what the OTLP exporter does before it sends) and drops the bytes. Each
setting runs in a process of its own (the global tracer provider is set once per process); the
figure is CPU time per event.

This prices the tracing alone, where ``bench/backbone.py`` measures it inside the whole backbone,
whose throughput on a shared machine moves with the load; CPU time in a tight loop moves less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

SETTINGS: dict[str, dict[str, Any]] = {
    "no SDK (API no-op)": {"sdk": False},
    "ratio 0": {"sdk": True, "ratio": 0.0},
    "ratio 0.01": {"sdk": True, "ratio": 0.01},
    "ratio 0.1": {"sdk": True, "ratio": 0.1},
    "ratio 1": {"sdk": True, "ratio": 1.0},
    "ratio 1, every statement (before)": {"sdk": True, "ratio": 1.0, "every_statement": True},
}
RESET = "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;"
PUBLISH = ["BEGIN;", "WITH locked AS MATERIALIZED (SELECT 1) INSERT INTO outbox", "COMMIT;", RESET]
APPLY = ["BEGIN;", "INSERT INTO inbox", "INSERT INTO effects", "COMMIT;", RESET]


def measure(setting: dict[str, Any], events: int) -> dict[str, float]:
    """In this process: CPU microseconds per event, and spans exported per event."""
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.trace import SpanKind

    exported = [0]
    execute: Any

    async def statement(*_args: Any, **_kwargs: Any) -> None:
        return None

    if setting["sdk"]:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from maillage.common.telemetry import StatementInstrumentor, configure_telemetry

        # One metric reader, as a service exporting over OTLP has: the SDK records a histogram
        # measurement for its readers only, and with none it costs a third (4.6 against 15 us).
        # Installed first, it is the provider configure_telemetry finds (and keeps).
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))

        class Encoding(SpanExporter):
            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                encode_spans(spans).SerializeToString()
                exported[0] += len(spans)
                return SpanExportResult.SUCCESS

        provider = configure_telemetry("calls", sample_ratio=setting["ratio"])
        processor = BatchSpanProcessor(Encoding(), max_queue_size=8192, max_export_batch_size=1024)
        provider.add_span_processor(processor)
        instrumentor: Any = StatementInstrumentor()
        if setting.get("every_statement"):
            instrumentor.uninstrument()
            instrumentor = AsyncPGInstrumentor()
            instrumentor.instrument()

        async def execute(query: str) -> None:
            await instrumentor._do_execute(statement, None, (query,), {})

    else:

        async def execute(query: str) -> None:
            await statement(query)

    from maillage.common.telemetry import in_span, is_unsampled, start_child_span

    tracer = trace.get_tracer("calls")
    meter = metrics.get_meter("calls")
    publish_latency = meter.create_histogram("calls.publish.latency", unit="s")
    handler_duration = meter.create_histogram("calls.handler.duration", unit="s")

    async def one(seq: int) -> None:
        with tracer.start_as_current_span("POST /things", kind=SpanKind.SERVER):
            headers = {"ce_id": str(seq), "ce_type": "fr.maillage.bench.thing.changed.v1"}
            for query in PUBLISH:
                await execute(query)
            propagate.inject(headers)
        # The relay: an unsampled traceparent goes on as it is (decision 68).
        if is_unsampled(headers):
            record = headers
        else:
            span = start_child_span(
                tracer,
                "things publish",
                propagate.extract(headers),
                SpanKind.PRODUCER,
                lambda: {"messaging.system": "kafka", "messaging.message.id": str(seq)},
            )
            record = {k: v for k, v in headers.items() if k not in ("traceparent", "tracestate")}
            propagate.inject(record, context=trace.set_span_in_context(span))
            span.end()
        publish_latency.record(0.004, {"topic": "things"})
        # The consumer: its span, current around the read, the handler and the "handled" line.
        span = start_child_span(
            tracer,
            "things process",
            propagate.extract(record),
            SpanKind.CONSUMER,
            lambda: {"messaging.system": "kafka", "messaging.message.id": str(seq)},
        )
        with in_span(span):
            pass  # the record read
        with in_span(span, record_exception=False, set_status_on_exception=False):
            for query in APPLY:
                await execute(query)
        with in_span(span, end_on_exit=True):
            handler_duration.record(
                0.002, {"group": "bench.effects", "type": headers["ce_type"], "outcome": "applied"}
            )

    async def run() -> float:
        for seq in range(2_000):  # warm-up
            await one(seq)
        if setting["sdk"]:
            processor.force_flush()
        exported[0] = 0
        started = time.process_time()
        for seq in range(events):
            await one(seq)
        if setting["sdk"]:
            processor.force_flush()  # the export of these events' spans is part of their cost
        return time.process_time() - started

    seconds = asyncio.run(run())
    return {"us_per_event": seconds * 1e6 / events, "spans_per_event": exported[0] / events}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per setting")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one setting, JSON out
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(SETTINGS[args.one], args.events)))
        return 0
    print(f"{args.events} events per setting, each in a process of its own; CPU time per event")
    baseline: float | None = None
    for name in SETTINGS:
        out = subprocess.run(  # noqa: S603 - this very script, one setting
            [sys.executable, __file__, "--events", str(args.events), "--one", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        baseline = baseline if baseline is not None else result["us_per_event"]
        extra = result["us_per_event"] - baseline
        print(
            f"{name:36} {result['us_per_event']:7.1f} us/event "
            f"(+{extra:6.1f} over no SDK), {result['spans_per_event']:5.2f} spans exported/event"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
