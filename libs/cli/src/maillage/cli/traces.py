"""The development supervisor's trace store: `maillage dev` receives the services' OTLP/HTTP
export itself, keeps the last traces in its PostgreSQL, and answers the part of Jaeger's query
API v3 that the staff console reads (docs/architecture.md decision 54). In compose and
Kubernetes the console reads Jaeger itself; there is one code path in the console.

The flow:

1. A service exports spans (``OTEL_EXPORTER_OTLP_ENDPOINT``, protobuf, ``POST /v1/traces``).
   Each span becomes one row of ``dev_spans`` (its OTLP JSON, its service, its attributes as
   text for search); its trace gets a row of ``dev_traces`` on first sight.
2. After each export, traces beyond the newest ``keep_traces`` are deleted, with their spans
   (the store stays bounded, whatever runs).
3. ``GET /api/v3/traces/{trace_id}``, ``GET /api/v3/traces?query.service_name=…`` and
   ``GET /api/v3/services`` answer as Jaeger's HTTP gateway does: ``{"result": {"resourceSpans":
   […]}}`` in OTLP JSON (hex ids), a 404 ``{"error": …}`` for an unknown trace.
   ``query.attributes`` (a JSON object of text values) finds traces with a span holding them all.

Metrics (``POST /v1/metrics``) are accepted and dropped: development has no metrics backend.
"""

from __future__ import annotations

import gzip
import json
import re
from datetime import datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

DEFAULT_KEEP_TRACES = 2_000
MAX_EXPORT_BYTES = 16 * 1024 * 1024
MAX_SEARCH_DEPTH = 100
# A stored string's maximum length: a span attribute may hold a whole request body.
MAX_STORED_CHARS = 4_096
# What PostgreSQL's text and jsonb cannot hold: NUL, and UTF-16 surrogates (lone ones reach here
# from OTLP JSON).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

SCHEMA = """
CREATE TABLE IF NOT EXISTS dev_traces (
    trace_id text PRIMARY KEY,
    seen bigserial NOT NULL
);
CREATE INDEX IF NOT EXISTS dev_traces_seen_idx ON dev_traces (seen);
CREATE TABLE IF NOT EXISTS dev_spans (
    trace_id text NOT NULL REFERENCES dev_traces ON DELETE CASCADE,
    span_id text NOT NULL,
    service text NOT NULL,
    start_ns bigint NOT NULL,
    attributes jsonb NOT NULL,
    span jsonb NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS dev_spans_attributes_idx ON dev_spans USING gin (attributes);
CREATE INDEX IF NOT EXISTS dev_spans_service_idx ON dev_spans (service, start_ns);
"""


def _storable(value: Any) -> Any:
    """``value`` with every string made storable: NUL shown as ``\\u0000``, lone surrogates as
    U+FFFD, beyond ``MAX_STORED_CHARS`` cut with an ellipsis; dict keys alike."""
    if isinstance(value, str):
        value = _UNSTORABLE.sub(lambda m: "\\u0000" if m[0] == "\x00" else "\ufffd", value)
        return value if len(value) <= MAX_STORED_CHARS else value[: MAX_STORED_CHARS - 1] + "…"
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def _text(value: AnyValue) -> str:
    """An attribute's value as text (what a search compares)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind in ("array_value", "kvlist_value", "bytes_value"):
        return json_format.MessageToJson(value, indent=None)
    text = str(getattr(value, kind))
    return text.lower() if kind == "bool_value" else text


def rows_of(request: ExportTraceServiceRequest) -> list[tuple[str, str, str, int, str, str]]:
    """``(trace_id, span_id, service, start_ns, attributes JSON, span JSON)`` of each span, ids
    in hex as OTLP JSON writes them (protobuf's JSON mapping would give base64)."""
    rows = []
    for resource_spans in request.resource_spans:
        service = next(
            (
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            ),
            "unknown",
        )
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                document: dict[str, Any] = json_format.MessageToDict(span)
                document["traceId"] = span.trace_id.hex()
                document["spanId"] = span.span_id.hex()
                if span.parent_span_id:
                    document["parentSpanId"] = span.parent_span_id.hex()
                for link, raw in zip(document.get("links", []), span.links, strict=False):
                    link["traceId"], link["spanId"] = raw.trace_id.hex(), raw.span_id.hex()
                attributes = {a.key: _text(a.value) for a in span.attributes}
                rows.append(
                    (
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        _storable(service),
                        span.start_time_unix_nano,
                        json.dumps(_storable(attributes)),
                        json.dumps(_storable(document)),
                    )
                )
    return rows


class TraceStore:
    """The last ``keep_traces`` traces, in the supervisor's own database."""

    def __init__(self, pool: asyncpg.Pool, keep_traces: int = DEFAULT_KEEP_TRACES) -> None:
        self.pool = pool
        self.keep_traces = keep_traces

    async def setup(self) -> None:
        async with self.pool.acquire() as connection:
            await connection.execute(SCHEMA)

    async def keep(self, request: ExportTraceServiceRequest) -> int:
        """Store the export's spans (a span seen twice is kept once), then prune; the number of
        spans received."""
        rows = rows_of(request)
        if not rows:
            return 0
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.executemany(
                "INSERT INTO dev_traces (trace_id) VALUES ($1) ON CONFLICT DO NOTHING",
                sorted({(row[0],) for row in rows}),
            )
            await connection.executemany(
                "INSERT INTO dev_spans (trace_id, span_id, service, start_ns, attributes, span) "
                "VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb) ON CONFLICT DO NOTHING",
                rows,
            )
            await connection.execute(
                # Not max(seen) - N: a conflicting insert uses up a number of the sequence.
                "DELETE FROM dev_traces WHERE seen < "
                "(SELECT seen FROM dev_traces ORDER BY seen DESC OFFSET $1 LIMIT 1)",
                self.keep_traces - 1,
            )
        return len(rows)

    async def trace(self, trace_id: str) -> list[asyncpg.Record]:
        async with self.pool.acquire() as connection:
            rows: list[asyncpg.Record] = await connection.fetch(
                "SELECT service, span FROM dev_spans WHERE trace_id = $1 ORDER BY start_ns",
                trace_id,
            )
        return rows

    async def find(
        self,
        *,
        service: str | None,
        attributes: dict[str, str],
        start_min_ns: int,
        start_max_ns: int,
        depth: int,
    ) -> list[asyncpg.Record]:
        """Every span of the newest ``depth`` traces with a span matching all the filters."""
        async with self.pool.acquire() as connection:
            rows: list[asyncpg.Record] = await connection.fetch(
                """
                WITH found AS (
                    SELECT trace_id, max(start_ns) AS newest FROM dev_spans
                    WHERE ($1::text IS NULL OR service = $1)
                      AND attributes @> $2::jsonb
                      AND start_ns BETWEEN $3 AND $4
                    GROUP BY trace_id ORDER BY newest DESC LIMIT $5
                )
                SELECT s.service, s.span FROM dev_spans s JOIN found USING (trace_id)
                ORDER BY found.newest DESC, s.trace_id, s.start_ns
                """,
                service,
                json.dumps(attributes),
                start_min_ns,
                start_max_ns,
                depth,
            )
        return rows

    async def services(self) -> list[str]:
        async with self.pool.acquire() as connection:
            rows = await connection.fetch("SELECT DISTINCT service FROM dev_spans ORDER BY 1")
        return [row["service"] for row in rows]


def traces_data(rows: list[asyncpg.Record]) -> dict[str, Any]:
    """OTLP JSON ``TracesData`` of stored spans: one ``resourceSpans`` entry per service."""
    by_service: dict[str, list[Any]] = {}
    for row in rows:
        by_service.setdefault(row["service"], []).append(json.loads(row["span"]))
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeSpans": [{"scope": {"name": "maillage"}, "spans": spans}],
            }
            for service, spans in by_service.items()
        ]
    }


def _jaeger_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"httpCode": status, "message": message}}, status)


def _nanos(text: str | None, default: int) -> int:
    """RFC 3339 time as Unix nanoseconds (``default`` when absent); ValueError when unreadable."""
    if not text:
        return default
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)


def create_app(store: TraceStore) -> FastAPI:
    """The supervisor's OTLP receiver and Jaeger query API v3 subset."""
    app = FastAPI(title="maillage dev traces", openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/v1/traces")
    async def receive(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_EXPORT_BYTES:
            return Response(status_code=413)
        export = ExportTraceServiceRequest()
        try:
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if request.headers.get("content-type", "").startswith("application/json"):
                # Lone surrogates, which JSON can spell but protobuf refuses, become U+FFFD.
                json_format.ParseDict(_storable(json.loads(body)), export)
            else:
                export.ParseFromString(body)
        except (DecodeError, json_format.ParseError, ValueError, OSError, EOFError):
            return Response(status_code=400)
        await store.keep(export)
        return Response(b"", media_type="application/x-protobuf")

    @app.post("/v1/metrics")
    async def drop_metrics() -> Response:
        return Response(b"", media_type="application/x-protobuf")

    @app.get("/api/v3/traces/{trace_id}")
    async def get_trace(trace_id: str) -> JSONResponse:
        rows = await store.trace(_storable(trace_id.lower()))
        if not rows:
            return _jaeger_error(404, "trace not found")
        return JSONResponse({"result": traces_data(rows)})

    @app.get("/api/v3/traces")
    async def find_traces(request: Request) -> JSONResponse:
        query = request.query_params
        try:
            attributes = json.loads(query.get("query.attributes") or "{}")
            if not isinstance(attributes, dict):
                raise ValueError("query.attributes is not a JSON object")
            depth = int(query.get("query.search_depth") or 20)
            start_min = _nanos(query.get("query.start_time_min"), 0)
            start_max = _nanos(query.get("query.start_time_max"), 2**63 - 1)
        except ValueError as error:
            return _jaeger_error(400, str(error))
        rows = await store.find(
            service=_storable(query.get("query.service_name")) or None,
            attributes=_storable({str(k): str(v) for k, v in attributes.items()}),
            start_min_ns=start_min,
            start_max_ns=start_max,
            depth=max(1, min(depth, MAX_SEARCH_DEPTH)),
        )
        if not rows:
            return _jaeger_error(404, "trace not found")
        return JSONResponse({"result": traces_data(rows)})

    @app.get("/api/v3/services")
    async def services() -> JSONResponse:
        return JSONResponse({"services": await store.services()})

    return app
