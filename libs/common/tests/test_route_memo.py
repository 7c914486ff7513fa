"""The server span's name and ``http.route`` are remembered for static routes (RouteMemo), and
are the instrumentation's own for every kind of request: static, with parameters, wrong
method, no route."""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import Scope

from maillage.common.http import RouteMemo, create_app
from maillage.common.settings import ServiceSettings

router = APIRouter()


@router.get("/things")
async def things() -> dict[str, str]:
    return {"ok": "yes"}


@router.get("/things/{thing_id}")
async def thing(thing_id: int) -> dict[str, int]:
    return {"id": thing_id}


async def test_span_names_and_routes_as_the_instrumentation_gives_them() -> None:
    settings = ServiceSettings(
        service_name="memo", database_url="postgresql://maillage@127.0.0.1/memo"
    )
    app = create_app(settings, title="t", description="t", routers=[router])
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    requests = [
        ("GET", "/things", 200, "GET /things", "/things"),
        ("GET", "/things", 200, "GET /things", "/things"),  # remembered
        ("GET", "/things/7", 200, "GET /things/{thing_id}", "/things/{thing_id}"),
        ("GET", "/things/8", 200, "GET /things/{thing_id}", "/things/{thing_id}"),
        ("DELETE", "/things", 405, "DELETE /things", "/things"),
        ("DELETE", "/things", 405, "DELETE /things", "/things"),
        ("GET", "/nowhere", 404, "GET", None),
        ("GET", "/nowhere", 404, "GET", None),
    ]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for method, path, status, name, route in requests:
            spans.clear()
            response = await client.request(method, path)
            assert response.status_code == status
            server = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
            assert [s.name for s in server] == [name], (method, path)
            assert server[0].attributes is not None
            assert server[0].attributes.get("http.route") == route, (method, path)
    memo = app.middleware_stack.app.traced.default_span_details  # type: ignore[union-attr]
    assert isinstance(memo, RouteMemo)  # the instrumented stack is still as expected
    assert set(memo._known) == {("GET", "", "/things"), ("DELETE", "", "/things")}


def test_the_memo_is_bounded_and_keeps_only_static_routes() -> None:
    calls: list[str] = []

    def find(scope: Scope) -> tuple[str, dict[str, str]]:
        calls.append(scope["path"])
        path = scope["path"]
        return f"GET {path}", {"http.route": path if path.startswith("/s") else "/p/{x}"}

    memo = RouteMemo(find)
    for n in range(RouteMemo.LIMIT + 50):
        memo({"type": "http", "method": "GET", "path": f"/s{n}"})
        memo({"type": "http", "method": "GET", "path": f"/p/{n}"})
    assert len(memo._known) == RouteMemo.LIMIT
    calls.clear()
    name, attributes = memo({"type": "http", "method": "GET", "path": "/s1"})
    assert (name, attributes, calls) == ("GET /s1", {"http.route": "/s1"}, [])
    attributes["http.route"] = "changed by a caller"
    assert memo({"type": "http", "method": "GET", "path": "/s1"})[1] == {"http.route": "/s1"}
    memo({"type": "http", "method": "GET", "path": "/p/1"})
    assert calls == ["/p/1"]
