"""A request whose trace is not recorded skips the instrumentation's span work
(``UnsampledRequests``, decision 70), and nothing an operator sees changes: the same HTTP metrics
with the same attributes as the instrumentation's own, the sampling ratio kept, the trace
context of each request (trace id and flags, a ``traceparent``'s), a failure's linked span."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import APIRouter
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from maillage.common.http import REQUEST_ID_ATTRIBUTE, UnsampledRequests, create_app
from maillage.common.settings import ServiceSettings
from maillage.common.telemetry import FORCED, DrawnTraceIds, sampler_for

router = APIRouter()


class Thing(BaseModel):
    name: str


@router.get("/things")
async def things() -> dict[str, Any]:
    context = trace.get_current_span().get_span_context()
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "flags": int(context.trace_flags),
    }


@router.get("/things/{thing_id}")
async def thing(thing_id: int) -> dict[str, int]:
    return {"id": thing_id}


@router.post("/things", status_code=201)
async def add_thing(thing: Thing) -> dict[str, str]:
    return {"name": thing.name}


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


@dataclass
class Answer:
    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


class Stack:
    """create_app's middleware stack, its instrumentation on providers of the test's own."""

    def __init__(self, ratio: float, lean: bool) -> None:
        settings = ServiceSettings(
            service_name="unsampled", database_url="postgresql://maillage@127.0.0.1/unsampled"
        )
        self.app = create_app(settings, title="t", description="t", routers=[router])
        self.tracer_provider = TracerProvider(
            sampler=sampler_for(ratio), id_generator=DrawnTraceIds()
        )
        self.spans = InMemorySpanExporter()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        stack = self.app.build_middleware_stack()
        unsampled = stack.app  # type: ignore[attr-defined]
        assert isinstance(unsampled, UnsampledRequests)
        library = unsampled.traced
        traced = OpenTelemetryMiddleware(
            library.app,
            excluded_urls=library.excluded_urls,
            default_span_details=library.default_span_details,
            tracer_provider=self.tracer_provider,
            meter_provider=MeterProvider(metric_readers=[self.metrics]),
        )
        if lean:
            wrapper = UnsampledRequests(traced, self.tracer_provider)
            assert wrapper._provider is not None  # the lean path is on
            stack.app = wrapper  # type: ignore[attr-defined]
        else:
            stack.app = traced  # type: ignore[attr-defined]
        self.app.middleware_stack = stack

    async def send(self, requests: list[tuple[str, str, dict[str, Any]]]) -> list[Answer]:
        """Each request straight to the ASGI app, as uvicorn calls it (an instrumented httpx
        client would make its own span the current one)."""
        return [await self.call(method, path, **options) for method, path, options in requests]

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Answer:
        raw_headers = [(b"host", b"test")] + [
            (name.encode(), value.encode()) for name, value in (headers or {}).items()
        ]
        if body:
            raw_headers.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        return Answer(sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]))

    def points(self) -> dict[tuple[str, frozenset[tuple[str, Any]]], tuple[Any, ...]]:
        """Every metric point, by name and attributes: count and sum (the duration's count
        only), or the counter's value."""
        found: dict[tuple[str, frozenset[tuple[str, Any]]], tuple[Any, ...]] = {}
        data = self.metrics.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, frozenset((point.attributes or {}).items()))
                        if isinstance(point, HistogramDataPoint):
                            exact = metric.name != "http.server.request.duration"
                            found[key] = (point.count, point.sum if exact else None)
                        else:
                            found[key] = (point.value,)  # type: ignore[attr-defined]
        return found


UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

JSON = {"content-type": "application/json"}

REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/things", {}),
    ("GET", "/things", {"headers": {"user-agent": "curl/8", "x-request-id": "abc"}}),
    ("GET", "/things", {"headers": {"host": "example.org:8443"}}),
    ("GET", "/things/7", {}),
    ("GET", "/things/8", {}),
    ("GET", "/things/x", {}),  # 422
    ("POST", "/things", {"body": b'{"name": "chaise"}', "headers": JSON}),
    ("POST", "/things", {"body": b"{", "headers": JSON}),
    ("DELETE", "/things", {}),  # 405
    ("FOO", "/things", {}),  # an unknown method: _OTHER
    ("GET", "/nowhere", {}),  # 404
    ("GET", "/boom", {}),  # 500, answered by the chassis
    ("GET", "/livez", {}),  # excluded: no metric
    ("GET", "/things", {"headers": {"traceparent": UNSAMPLED}}),
]


@pytest.fixture
def forced() -> Iterator[InMemorySpanExporter]:
    """The spans of the process's own provider (failure spans are recorded there)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.clear()


async def test_unsampled_requests_record_the_instrumentations_metrics() -> None:
    library, lean = Stack(0.0, lean=False), Stack(0.0, lean=True)
    expected = await library.send(REQUESTS)
    answers = await lean.send(REQUESTS)
    assert [a.status_code for a in answers] == [e.status_code for e in expected]
    assert [a.status_code for a in answers][5:12] == [422, 201, 400, 405, 405, 404, 500]
    points = lean.points()
    assert points == library.points()
    assert not library.spans.get_finished_spans()
    assert not lean.spans.get_finished_spans()
    names = {name for name, _ in points}
    assert names == {
        "http.server.request.duration",
        "http.server.active_requests",
        "http.server.request.body.size",
        "http.server.response.body.size",
    }
    routes = {
        dict(attributes).get("http.route")
        for name, attributes in points
        if name == "http.server.request.duration"
    }
    assert routes == {"/things", "/things/{thing_id}", "/boom", None}


async def test_recorded_requests_are_the_instrumentations_own() -> None:
    library, lean = Stack(1.0, lean=False), Stack(1.0, lean=True)
    await library.send(REQUESTS)
    await lean.send(REQUESTS)

    def shapes(spans: InMemorySpanExporter) -> list[tuple[Any, ...]]:
        """Each span but its ids, times and the request id (a new one for each request)."""
        return [
            (
                s.name,
                s.kind,
                {k: v for k, v in (s.attributes or {}).items() if k != REQUEST_ID_ATTRIBUTE},
                REQUEST_ID_ATTRIBUTE in (s.attributes or {}),
                s.status.status_code,
                s.parent is None,
            )
            for s in spans.get_finished_spans()
        ]

    assert shapes(lean.spans) == shapes(library.spans)
    assert len([s for s in lean.spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER])
    assert lean.points().keys() == library.points().keys()


async def test_the_ratio_is_kept_and_every_request_has_its_trace() -> None:
    lean = Stack(0.5, lean=True)
    answers = await lean.send([("GET", "/things", {})] * 300)
    server = {
        f"{s.context.trace_id:032x}": s
        for s in lean.spans.get_finished_spans()
        if s.kind == trace.SpanKind.SERVER
    }
    seen = [answer.json() for answer in answers]
    sampled = [one for one in seen if one["flags"] & 1]
    # Deciding twice (here, then the tracer on a trace id of its own) would keep about 75.
    assert 110 <= len(sampled) <= 190
    assert {one["trace_id"] for one in sampled} == set(server)
    for one in seen:
        assert int(one["trace_id"], 16)
        assert int(one["span_id"], 16)
        # the random trace id flag (W3C level 2), as the SDK sets it on its own spans
        assert one["flags"] & 2
    assert len({one["trace_id"] for one in seen}) == 300


async def test_a_traceparent_is_continued_whether_sampled_or_not() -> None:
    lean = Stack(0.0, lean=True)
    unsampled, sampled = await lean.send(
        [
            ("GET", "/things", {"headers": {"traceparent": UNSAMPLED}}),
            ("GET", "/things", {"headers": {"traceparent": SAMPLED}}),
        ]
    )
    for answer, flags in ((unsampled, 0), (sampled, 1)):
        seen = answer.json()
        assert seen["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert seen["span_id"] != "b7ad6b7169203331"
        assert seen["flags"] & 1 == flags
    (server,) = [s for s in lean.spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    assert server.parent is not None
    assert server.parent.span_id == 0xB7AD6B7169203331


async def test_a_failure_in_an_unsampled_request_is_recorded_and_linked(
    forced: InMemorySpanExporter,
) -> None:
    lean = Stack(0.0, lean=True)
    (answer,) = await lean.send([("GET", "/boom", {"headers": {"traceparent": UNSAMPLED}})])
    assert answer.status_code == 500
    failures = [s for s in forced.get_finished_spans() if (s.attributes or {}).get(FORCED)]
    assert failures, "no failure span"
    (link,) = failures[-1].links
    assert f"{link.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert not link.context.trace_flags.sampled
