"""The development supervisor's trace store (decision 54): the OpenTelemetry SDK's own OTLP/HTTP
exporter sends spans of two services to it, on a real PostgreSQL database; it answers Jaeger's
query API v3 shapes, finds traces by attribute, and keeps only the newest N traces."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, set_span_in_context

from maillage.cli.embedded import free_port
from maillage.cli.traces import TraceStore, create_app

EVENT = "0b7c9a2e-1d5f-4f7e-9a43-7c1c1f1e2d3a"


@pytest.fixture
async def store_url(database_url: str) -> AsyncIterator[tuple[str, TraceStore]]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    store = TraceStore(pool, keep_traces=3)
    await store.setup()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        await task
        await pool.close()


def _provider(service: str) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


async def _export(url: str, spans: Sequence[ReadableSpan]) -> None:
    """Through the SDK's exporter (protobuf over HTTP), off the event loop: it blocks."""
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces")
    result = await asyncio.to_thread(exporter.export, spans)
    assert result.name == "SUCCESS"


async def _request_then_event(url: str, event_id: str) -> str:
    """A registry request that publishes an event a notifications consumer processes."""
    registry, registry_spans = _provider("maillage-registry")
    notifications, notification_spans = _provider("maillage-notifications")
    with (
        registry.get_tracer("t").start_as_current_span(
            "POST /partners", kind=SpanKind.SERVER, attributes={"http.route": "/partners"}
        ) as root,
        registry.get_tracer("t").start_as_current_span(
            "registry.partners publish",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.message.id": event_id},
        ) as publish,
    ):
        pass
    with notifications.get_tracer("t").start_as_current_span(
        "registry.partners process",
        context=set_span_in_context(publish),
        kind=SpanKind.CONSUMER,
        attributes={"messaging.message.id": event_id, "messaging.kafka.offset": 7},
    ):
        pass
    await _export(url, registry_spans.get_finished_spans())
    await _export(url, notification_spans.get_finished_spans())
    return f"{root.get_span_context().trace_id:032x}"


def _spans(document: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Span name -> (service, span) of an OTLP JSON TracesData."""
    found = {}
    for resource in document["resourceSpans"]:
        [service] = [
            a["value"]["stringValue"]
            for a in resource["resource"]["attributes"]
            if a["key"] == "service.name"
        ]
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                found[span["name"]] = (service, span)
    return found


async def test_a_trace_across_services_is_answered_as_jaegers_query_api_does(
    store_url: tuple[str, TraceStore],
) -> None:
    url, _ = store_url
    trace_id = await _request_then_event(url, EVENT)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        answer = await http.get(f"/api/v3/traces/{trace_id}")
        assert answer.status_code == 200
        spans = _spans(answer.json()["result"])
        assert set(spans) == {
            "POST /partners",
            "registry.partners publish",
            "registry.partners process",
        }
        root = spans["POST /partners"][1]
        publish = spans["registry.partners publish"][1]
        process = spans["registry.partners process"]
        assert process[0] == "maillage-notifications"
        assert root["traceId"] == trace_id
        assert "parentSpanId" not in root
        assert process[1]["parentSpanId"] == publish["spanId"]
        assert len(publish["spanId"]) == 16
        assert process[1]["kind"] == "SPAN_KIND_CONSUMER"
        assert int(process[1]["endTimeUnixNano"]) >= int(process[1]["startTimeUnixNano"])
        # Found again by the event's id, whichever service holds it.
        found = await http.get(
            "/api/v3/traces",
            params={"query.attributes": json.dumps({"messaging.message.id": EVENT})},
        )
        assert found.status_code == 200
        assert set(_spans(found.json()["result"])) == set(spans)
        by_service = await http.get(
            "/api/v3/traces", params={"query.service_name": "maillage-notifications"}
        )
        assert set(_spans(by_service.json()["result"])) == set(spans)
        services = (await http.get("/api/v3/services")).json()["services"]
        assert services == ["maillage-notifications", "maillage-registry"]
        missing = await http.get(f"/api/v3/traces/{'0' * 31}1")
        assert missing.status_code == 404
        assert missing.json()["error"]["httpCode"] == 404
        garbage = await http.post(
            "/v1/traces",
            content=b"\xff\x00garbage",
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert garbage.status_code == 400
        metrics = await http.post("/v1/metrics", content=b"")
        assert metrics.status_code == 200


async def test_only_the_newest_traces_are_kept(store_url: tuple[str, TraceStore]) -> None:
    url, store = store_url
    trace_ids = [await _request_then_event(url, f"event-{n}") for n in range(5)]
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        kept = [(await http.get(f"/api/v3/traces/{t}")).status_code for t in trace_ids]
    assert kept == [404, 404, 200, 200, 200]
    async with store.pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(DISTINCT trace_id) FROM dev_spans") == 3


async def test_spans_with_any_strings_are_stored_and_the_batch_is_kept_whole(
    store_url: tuple[str, TraceStore],
) -> None:
    """A request to ``/partners/a%00b`` puts a NUL in a span's attributes, which PostgreSQL's text
    and jsonb cannot hold; OTLP JSON can also spell lone surrogates, and an attribute may be huge.
    Every span of the batch is stored (its strings made storable, bounded), never a 500."""
    url, _ = store_url
    provider, memory = _provider("maillage-registry")
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span(
        "GET /partners/{id}", attributes={"url.path": "/partners/a\x00b", "huge": "x" * 100_000}
    ) as nul:
        pass
    with tracer.start_as_current_span("other request", attributes={"http.route": "/ok"}) as other:
        pass
    await _export(url, memory.get_finished_spans())  # protobuf, through the SDK's exporter
    surrogate_trace = "0" * 31 + "5"
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "s\x00"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "AAAAAAAAAAAAAAAAAAAABQ==",
                                "spanId": "AAAAAAAAAAU=",
                                "name": "lone \ud800 surrogate",
                                "attributes": [
                                    {"key": "k\x00", "value": {"stringValue": "a\x00\udc00b"}}
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        posted = await http.post(
            "/v1/traces",
            content=json.dumps(document).encode(),
            headers={"content-type": "application/json"},
        )
        assert posted.status_code == 200, posted.text
        for span, name in ((nul, "GET /partners/{id}"), (other, "other request")):
            answer = await http.get(f"/api/v3/traces/{span.get_span_context().trace_id:032x}")
            assert answer.status_code == 200
            assert name in _spans(answer.json()["result"])
        stored = _spans(
            (await http.get(f"/api/v3/traces/{nul.get_span_context().trace_id:032x}")).json()[
                "result"
            ]
        )["GET /partners/{id}"][1]
        values = {a["key"]: a["value"]["stringValue"] for a in stored["attributes"]}
        assert values["url.path"] == "/partners/a\\u0000b"
        assert 0 < len(values["huge"]) <= 4_096
        lone = await http.get(f"/api/v3/traces/{surrogate_trace}")
        assert lone.status_code == 200
        [(service, span)] = _spans(lone.json()["result"]).values()
        assert service == "s\\u0000"
        assert span["name"] == "lone \ufffd surrogate"
        found = await http.get(
            "/api/v3/traces", params={"query.attributes": json.dumps({"k\x00": "a\x00\ufffdb"})}
        )
        assert found.status_code == 200
        assert (await http.get("/api/v3/traces/a%00b")).status_code == 404
