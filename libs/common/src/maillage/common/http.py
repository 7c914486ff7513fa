"""The HTTP app factory: one FastAPI application per service, all built the same way.

``create_app`` wires problem documents, the request id, the request body limit, ``/livez`` and
``/readyz``, the OpenAPI and AsyncAPI documents, OpenTelemetry, the dead-letter admin routes, and a
lifespan that migrates the database, opens the pool, creates the topics, starts the Kafka broker
(with the service's event consumers) and the outbox relay, settles the garbage collector once
started (decision 68), then stops them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol, cast

import asyncpg
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI, get_asyncapi_html
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.asgi import (
    OpenTelemetryMiddleware,
    asgi_getter,
    asgi_setter,
    get_host_port_url_tuple,
)
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.propagators import get_global_response_propagator
from opentelemetry.instrumentation.utils import (
    http_status_to_status_code,
    is_http_instrumentation_enabled,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.url_attributes import URL_SCHEME
from opentelemetry.trace import SpanKind, StatusCode, TraceFlags
from opentelemetry.util.http import sanitize_method
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maillage.common import db, dlq, outbox
from maillage.common.auth import JWKSCache, TokenVerifier, require_role
from maillage.common.bodies import check_json_body
from maillage.common.catalog import catalog as default_catalog
from maillage.common.events import Catalog
from maillage.common.inbox import DeadLetterProducer, EventConsumer
from maillage.common.logging import configure_logging, get_logger
from maillage.common.metrics import Gauge, ServiceMetrics, consumer_lag
from maillage.common.outbox import OutboxRelay
from maillage.common.problems import (
    Problem,
    document_problems,
    handle_http_error,
    handle_problem,
    handle_unexpected_error,
    handle_validation_error,
)
from maillage.common.ratelimit import parse_proxies
from maillage.common.settings import ServiceSettings
from maillage.common.telemetry import (
    DrawnTraceIds,
    configure_telemetry,
    forget_drawn_trace_id,
    shutdown_telemetry,
    use_drawn_trace_id,
)
from maillage.common.topics import DEAD_LETTER_PARTITIONS, ensure_topics

log = get_logger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
READINESS_TIMEOUT_S = 2.0


AFTER_RESPONSE = "maillage.after_response"
"""The request state's list of callbacks that ``RequestContextMiddleware`` awaits once the
response is sent (a read connection's release)."""

REQUEST_ID_ATTRIBUTE = "maillage.request_id"
"""The server span's attribute holding the request id, so that a trace is found from the id a
log line or an ``X-Request-ID`` answer gives (the console's "follow a request", decision 54)."""


class RequestContextMiddleware:
    """Gives every request an id (``X-Request-ID``, kept when the caller sends a sane one),
    binds it to the log context, puts it on the server span (``REQUEST_ID_ATTRIBUTE``) and logs
    one line per request.

    An unexpected exception is answered here (500 problem, traceback logged) and goes no
    further: Starlette's outermost middleware would answer, then raise it again to the server,
    and uvicorn closes the keep-alive connection of a request whose app raised."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        after_response: list[Callable[[], Awaitable[object]]] = []
        state[AFTER_RESPONSE] = after_response
        # The instrumentation's server span is the current one here (its middleware is outside).
        trace.get_current_span().set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        status = 500
        started = time.perf_counter()

        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as error:
                if response_started:  # too late for an answer of ours
                    raise
                response = await handle_unexpected_error(Request(scope, receive), error)
                await response(scope, receive, send_with_id)
            finally:
                if scope["path"] not in ("/livez", "/readyz"):
                    log.info(
                        "request",
                        method=scope["method"],
                        path=scope["path"],
                        status=status,
                        duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    )
                for callback in after_response:  # the answer has been sent (or never will be)
                    try:
                        await callback()
                    except Exception as error:  # the next callbacks still run
                        log.error("after the response", error=repr(error)[:300])


class BodySizeLimitMiddleware:
    """Refuses request bodies larger than ``limit`` bytes with 413, whether the client declares
    the length up front or streams it chunked."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise StarletteHTTPException(413, self._detail())
            return message

        await self.app(scope, counting_receive, send)

    def _detail(self) -> str:
        return f"Le corps de la requête dépasse {self.limit} octets."

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await handle_http_error(request, StarletteHTTPException(413, self._detail()))
        await response(scope, receive, send)


ReadinessCheck = Callable[[], Awaitable[object]]


class BackgroundWorker(Protocol):
    """A service's long-running loop beside HTTP and Kafka (the webhook delivery worker…)."""

    async def run(self) -> None:
        """Work until :meth:`stop`."""

    def stop(self) -> None:
        """Ask :meth:`run` to return soon, once the work under way is done."""


WorkerFactory = Callable[[asyncpg.Pool], BackgroundWorker]
"""Builds a worker on the open pool, at start-up (``create_app(workers=[...])``)."""


@dataclass
class ServiceRuntime:
    """What a running service holds: reachable from routes as ``request.app.state.runtime``."""

    settings: ServiceSettings
    broker: KafkaBroker
    relay: OutboxRelay
    dead_letters: DeadLetterProducer
    pool: asyncpg.Pool | None = None
    readiness_checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    workers: list[BackgroundWorker] = field(default_factory=list)


def runtime_of(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def pool_or_fail(runtime: ServiceRuntime) -> asyncpg.Pool:
    if runtime.pool is None:  # only between process start and the end of the lifespan start-up
        raise Problem(503, "unavailable", "Service en démarrage")
    return runtime.pool


async def pool_of(request: Request) -> asyncpg.Pool:
    # async although it never waits: FastAPI runs a plain ``def`` dependency in a worker thread,
    # a thread hop on every request.
    return pool_or_fail(runtime_of(request))


Pool = Annotated[asyncpg.Pool, Depends(pool_of)]
"""Route parameter type: the service's database pool."""


async def read_connection_of(request: Request) -> asyncpg.Connection:
    # Released by RequestContextMiddleware once the response is sent: the pool's reset of the
    # connection (a round trip) is off the answer's path. A plain dependency rather than one
    # with ``yield``, whose exit FastAPI runs through an exit stack and a shielded cancel
    # scope (about 30 µs of CPU a request more: docs/performance.md, "Third pass").
    after_response = request.scope.get("state", {}).get(AFTER_RESPONSE)
    if after_response is None:
        raise RuntimeError("ReadConnection needs create_app's RequestContextMiddleware")
    pool = pool_or_fail(runtime_of(request))
    connection: asyncpg.Connection = await pool.acquire()
    after_response.append(lambda: pool.release(connection))
    return connection


ReadConnection = Annotated[asyncpg.Connection, Depends(read_connection_of)]
"""Route parameter type: a pooled connection for reads (no transaction), released to the pool
after the response is sent."""


def create_broker(settings: ServiceSettings) -> KafkaBroker:
    """The service's FastStream Kafka broker.

    Without FastStream's telemetry middleware (decision 50): for a batch subscriber it starts a
    trace of its own per batch, linked to the records, beside the inbox's CONSUMER span per record
    that continues each event's trace; and parsing every record's baggage was half of the
    tracing's CPU left in the backbone (docs/performance.md, "Tracing cost").
    """
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"maillage-{settings.service_name}",
        logger=get_logger(f"maillage.{settings.service_name}.broker"),
        # "Received"/"Processed" are per batch, whose records belong to many traces: the inbox
        # writes one line per record in its span instead ("event handled").
        log_level=logging.DEBUG,
    )


GC_YOUNG_THRESHOLD = 10_000
"""Net allocations between two collections of the youngest generation, once a service is
started (CPython's default is 700, which the relay's and the consumer's batches in flight reach
many times a second; decision 68)."""


def settle_garbage_collector() -> Callable[[], None]:
    """For a service once started: freeze what start-up allocated (modules, routes, settings,
    pools: alive as long as the process), so that the collector's full passes no longer walk
    it, and collect the youngest generation every :data:`GC_YOUNG_THRESHOLD` allocations.
    Returns what puts the collector back as it was (the lifespan's end; tests start many apps in
    one process). Decision 68; figures in docs/performance.md."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *previous[1:])

    def restore() -> None:
        gc.set_threshold(*previous)
        gc.unfreeze()

    return restore


def create_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str,
    version: str = "0.1.0",
    routers: Sequence[APIRouter] = (),
    consumers: Sequence[EventConsumer] = (),
    migrations: Path | None = None,
    catalog: Catalog = default_catalog,
    workers: Sequence[WorkerFactory] = (),
    gauges: Sequence[Gauge] = (),
) -> FastAPI:
    """Build a service's ASGI application. See the module docstring for what it wires.

    ``routers`` are the service's HTTP routes (``api.router``), ``consumers`` its event consumer
    groups (``consumers.CONSUMERS``), ``migrations`` its folder of numbered SQL files,
    ``workers`` its background loops, started after the broker and stopped before it,
    ``gauges`` its domain gauges (read every ``metrics_gauge_seconds``, see
    :mod:`maillage.common.metrics`, which also samples consumer lag and readiness).
    """
    configure_logging(settings.service_name, fmt=settings.log_format, level=settings.log_level)
    configure_telemetry(
        settings.service_name,
        version,
        sample_ratio=settings.trace_ratio(),
        span_queue_size=settings.trace_span_queue_size,
        span_export_batch_size=settings.trace_span_export_batch_size,
    )
    outbox.set_max_message_bytes(settings.kafka_max_message_bytes)
    dsn = settings.database_url.get_secret_value()
    runtime = ServiceRuntime(
        settings=settings,
        broker=create_broker(settings),
        relay=OutboxRelay(
            dsn,
            settings.kafka_bootstrap_servers,
            service=settings.service_name,
            idempotent=settings.kafka_idempotent_producer,
            max_message_bytes=settings.kafka_max_message_bytes,
            batch_size=settings.outbox_batch_size,
            retention_hours=settings.outbox_retention_hours,
            inbox_retention_days=settings.inbox_retention_days,
        ),
        dead_letters=DeadLetterProducer(
            settings.kafka_bootstrap_servers,
            client_id=f"maillage-{settings.service_name}-dead-letters",
            idempotent=settings.kafka_idempotent_producer,
            max_request_size=settings.kafka_max_message_bytes,
        ),
    )
    # The AsyncAPI document lists what this service publishes (through its outbox, not through
    # these publisher objects, which exist for the documentation only).
    for spec in catalog.events.values():
        if spec.service == settings.service_name:
            runtime.broker.publisher(
                spec.topic.name,
                title=spec.event_type,
                description=f"{spec.model.__doc__ or spec.model.__name__} Key: {spec.key_field}.",
                schema=spec.model,
            )
    for consumer in consumers:
        consumer.attach(
            runtime.broker,
            lambda: pool_or_fail(runtime),
            runtime.dead_letters,
            max_attempts=settings.consumer_max_attempts,
            fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
            batch_timeout_ms=settings.consumer_batch_timeout_ms,
        )
    topics = [(topic.name, topic.partitions) for topic in catalog.topics.values()]
    topics += [(consumer.dead_letter_topic, DEAD_LETTER_PARTITIONS) for consumer in consumers]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("starting", **settings.loggable())
        if migrations is not None and settings.migrate_on_start:
            await db.migrate_service(dsn, migrations)
        runtime.pool = await db.create_pool(
            dsn, min_size=settings.database_pool_min, max_size=settings.database_pool_max
        )
        relay_task: asyncio.Task[None] | None = None
        restore_gc: Callable[[], None] | None = None
        worker_tasks: list[asyncio.Task[None]] = []
        sampler: ServiceMetrics | None = None
        metrics_task: asyncio.Task[None] | None = None
        try:
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                topics,
                replication_factor=settings.kafka_replication_factor,
            )
            await runtime.broker.start()
            relay_task = asyncio.create_task(runtime.relay.run(), name="outbox-relay")
            runtime.workers = [factory(runtime.pool) for factory in workers]
            sampler = ServiceMetrics(
                settings.service_name,
                runtime.pool,
                consumers=consumers,
                readiness_checks=runtime.readiness_checks,
                gauges=gauges,
                lag_interval=settings.metrics_lag_seconds,
                gauge_interval=settings.metrics_gauge_seconds,
                check_timeout=READINESS_TIMEOUT_S,
            )
            metrics_task = asyncio.create_task(sampler.run(), name="service-metrics")
            worker_tasks = [
                asyncio.create_task(worker.run(), name=type(worker).__name__)
                for worker in runtime.workers
            ]
            for task in worker_tasks:
                task.add_done_callback(_report_stopped_worker)
            if worker_tasks:

                async def workers_ready() -> None:
                    stopped = [task.get_name() for task in worker_tasks if task.done()]
                    if stopped:
                        raise RuntimeError(f"stopped: {', '.join(stopped)}")

                runtime.readiness_checks["workers"] = workers_ready
            restore_gc = settle_garbage_collector()
            log.info("ready")
            yield
        finally:
            if restore_gc is not None:
                restore_gc()
            if sampler is not None and metrics_task is not None:
                sampler.stop()
                await asyncio.gather(metrics_task, return_exceptions=True)
            for worker in runtime.workers:
                worker.stop()
            await asyncio.gather(*worker_tasks, return_exceptions=True)  # failures are logged
            runtime.workers = []
            runtime.relay.stop()
            if relay_task is not None:
                await relay_task
            await runtime.broker.stop()
            await runtime.dead_letters.stop()
            await runtime.pool.close()
            runtime.pool = None
            shutdown_telemetry()
            log.info("stopped")

    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        # 415 for a body in another media type, no lone surrogate or NUL: maillage.common.bodies
        dependencies=[Depends(check_json_body)],
        license_info={"name": "EUPL-1.2", "identifier": "EUPL-1.2"},
        contact={"name": "Maillage", "url": "https://github.com/maillage"},
        # Traces and HTTP metrics come from opentelemetry-instrumentation-fastapi (decision 50,
        # the dashboards' metric names); FastAPI's native telemetry would be a second layer
        # per request, checked on every one.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        responses={
            422: {"description": "Validation failed (problem+json)"},
            500: {"description": "Unexpected error (problem+json)"},
        },
    )
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.runtime = runtime
    app.state.trusted_proxies = parse_proxies(settings.trusted_proxies)
    app.state.token_verifier = TokenVerifier(
        JWKSCache(settings.jwks_url), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    app.add_exception_handler(Problem, handle_problem)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected_error)
    app.add_middleware(BodySizeLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(RequestContextMiddleware)

    async def database_ready() -> None:
        pool = runtime.pool
        if pool is None:
            raise RuntimeError("pool not open")
        await pool.fetchval("SELECT 1")

    async def broker_ready() -> None:
        if not await runtime.broker.ping(timeout=READINESS_TIMEOUT_S):
            raise RuntimeError("broker unreachable")

    async def outbox_ready() -> None:
        problem = runtime.relay.status.problem()
        if problem:
            raise RuntimeError(problem)

    runtime.readiness_checks.update(
        database=database_ready, broker=broker_ready, outbox=outbox_ready
    )
    app.include_router(_health_router(runtime))
    app.include_router(_asyncapi_router(runtime.broker, title, description, version))
    app.include_router(dlq.admin_router(settings.service_name))
    app.include_router(_backlog_router(runtime, consumers))
    for router in routers:
        app.include_router(router)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="livez,readyz")
    _remember_routes(app)
    return app


HTTP_ROUTE = "http.route"

SpanDetails = Callable[[Any], tuple[str, dict[str, Any]]]
"""``OpenTelemetryMiddleware``'s ``default_span_details``: the scope to the span's name and
attributes."""


class RouteMemo:
    """The server span's name and ``http.route``, found once per method and path of a route
    without path parameters (``GET /offers``), then remembered.

    The FastAPI instrumentation finds them by matching the path against every route of the app,
    on every request, before the app routes it again (37 µs of CPU a search, 0.3 µs remembered;
    docs/performance.md).
    The answer depends only on the method, the root path and the path (the routes are fixed once
    the app serves), so a static route's is kept; a path with parameters (``/offers/{id}``'s
    values are many) or that matches no route is looked up every time, as before, and the memo
    holds at most :attr:`LIMIT` entries, whatever clients send."""

    LIMIT = 512

    def __init__(self, find: SpanDetails) -> None:
        self._find = find
        self._known: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}

    def __call__(self, scope: Scope) -> tuple[str, dict[str, Any]]:
        key = (scope.get("method", ""), scope.get("root_path", ""), scope["path"])
        known = self._known.get(key)
        if known is not None:
            return known[0], dict(known[1])
        name, attributes = self._find(scope)
        if attributes.get(HTTP_ROUTE) == scope["path"] and len(self._known) < self.LIMIT:
            self._known[key] = (name, dict(attributes))
        return name, attributes


class UnsampledRequests:
    """The server side of OpenTelemetry for a request whose trace is not recorded (99 in 100 at
    the production ratio), without the instrumentation's work for a span nobody exports.

    The instrumentation's ASGI middleware (``traced``) collects the request's attributes
    (decoding every header several times), starts the server span through the sampler, starts
    two more spans for the answer's two messages, and records the HTTP metrics, whether the
    trace is recorded or not. Here the sampling is decided first, by the tracer provider's own
    sampler, on the trace id the span would have (the parent's, or one drawn now that the SDK
    then uses: :class:`~maillage.common.telemetry.DrawnTraceIds`):

    - recorded (sampled by the ratio, or a sampled ``traceparent``): ``traced`` serves the
      request as before, span, attributes and metrics;
    - not recorded: the request runs under the non-recording span the SDK would have made (same
      trace id and flags, a span id of its own, the parent's baggage), so logs, the
      ``traceparent`` sent on and a failure's linked span are as before; and the same metrics
      are recorded with the same attributes (``http.server.request.duration``,
      ``http.server.active_requests``, request and response body sizes), computed from the
      scope alone.

    Anything else (another semantic convention mode, a provider without :class:`DrawnTraceIds`,
    a request inside a span already, instrumentation suppressed, a websocket) goes to
    ``traced`` unchanged. libs/common/tests/test_unsampled_requests.py checks the metrics
    against the instrumentation's own."""

    def __init__(
        self, traced: OpenTelemetryMiddleware, tracer_provider: trace.TracerProvider | None = None
    ) -> None:
        self.traced = traced
        # ``app`` is the instrumentation, as for any middleware: a walk down the stack (FastAPI's
        # own check for this instrumentation) finds it.
        self.app = traced
        self._inner = traced.app
        provider = tracer_provider or trace.get_tracer_provider()
        self._provider = (
            provider
            if isinstance(provider, TracerProvider)
            and isinstance(provider.id_generator, DrawnTraceIds)
            # the stable HTTP conventions alone (configure_telemetry's), as computed below
            and traced.duration_histogram_old is None
            and traced.duration_histogram_new is not None
            else None
        )
        self._fields = frozenset(
            name.encode("latin-1") for name in propagate.get_global_textmap().fields
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        provider = self._provider
        if (
            provider is None
            or scope["type"] != "http"
            or trace.get_current_span() is not trace.INVALID_SPAN
            or not is_http_instrumentation_enabled()
        ):
            await self.traced(scope, receive, send)
            return
        start = time.perf_counter()
        carrier = cast(dict[str, Any], scope)  # the instrumentation's helpers are typed so
        excluded = self.traced.excluded_urls
        url = get_host_port_url_tuple(carrier)[2]  # type: ignore[no-untyped-call]
        if excluded and excluded.url_disabled(url):
            await self._inner(scope, receive, send)  # as the instrumentation: no span, no metric
            return
        headers = scope["headers"]
        parent = (
            propagate.extract(carrier, getter=asgi_getter)
            if any(name in self._fields for name, _ in headers)
            else otel_context.Context()
        )
        parent_span = trace.get_current_span(parent).get_span_context()
        ids = provider.id_generator
        trace_id = parent_span.trace_id if parent_span.is_valid else ids.generate_trace_id()
        name, details = self.traced.default_span_details(carrier)
        decided = provider.sampler.should_sample(parent, trace_id, name, SpanKind.SERVER, details)
        if decided.decision.is_recording():  # type: ignore[no-untyped-call]
            token = None if parent_span.is_valid else use_drawn_trace_id(trace_id)
            try:
                await self.traced(scope, receive, send)
            finally:
                if token is not None:
                    forget_drawn_trace_id(token)
            return
        random_id = (
            parent_span.trace_flags.random_trace_id
            if parent_span.is_valid
            else ids.is_trace_id_random()
        )
        span = trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id,
                ids.generate_span_id(),
                is_remote=False,
                trace_flags=TraceFlags(
                    TraceFlags.RANDOM_TRACE_ID if random_id else TraceFlags.DEFAULT
                ),
                trace_state=decided.trace_state,
            )
        )
        await self._unrecorded(scope, receive, send, span, parent, details, start)

    async def _unrecorded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        span: trace.Span,
        parent: otel_context.Context,
        details: dict[str, Any],
        start: float,
    ) -> None:
        # The attributes the instrumentation keeps for its metrics: collect_request_attributes
        # then its duration and active-requests filters (new conventions), set_status_code.
        attributes: dict[str, Any] = {}
        method = sanitize_method(scope.get("method", "")).strip()
        if method:
            attributes[HTTP_REQUEST_METHOD] = method
        scheme = scope.get("scheme")
        if scheme:
            attributes[URL_SCHEME] = scheme
        active = dict(attributes)
        version = scope.get("http_version")
        if version:
            attributes[NETWORK_PROTOCOL_VERSION] = version
        if details.get(HTTP_ROUTE):
            attributes[HTTP_ROUTE] = details[HTTP_ROUTE]
        response_length = 0
        propagator = get_global_response_propagator()  # type: ignore[no-untyped-call]

        async def unrecorded_send(message: Message) -> None:
            nonlocal response_length
            if message["type"] == "http.response.start":
                status = message["status"]
                attributes[HTTP_RESPONSE_STATUS_CODE] = status
                if http_status_to_status_code(status, server_span=True) is StatusCode.ERROR:
                    attributes[ERROR_TYPE] = str(status)
            if propagator:
                propagator.inject(
                    message,
                    context=trace.set_span_in_context(span, otel_context.Context()),
                    setter=asgi_setter,
                )
            length = asgi_getter.get(cast(dict[str, Any], message), "content-length")
            if length:
                with contextlib.suppress(ValueError):
                    response_length = int(length[0])
            await send(message)

        traced = self.traced
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        traced.active_requests_counter.add(1, active)
        try:
            await self._inner(scope, receive, unrecorded_send)
        finally:
            assert traced.duration_histogram_new is not None  # see __init__
            traced.duration_histogram_new.record(max(time.perf_counter() - start, 0), attributes)
            traced.active_requests_counter.add(-1, active)
            if response_length and traced.server_response_body_size_histogram:
                traced.server_response_body_size_histogram.record(response_length, attributes)
            request_length = asgi_getter.get(cast(dict[str, Any], scope), "content-length")
            if request_length and traced.server_request_body_size_histogram:
                with contextlib.suppress(ValueError):
                    traced.server_request_body_size_histogram.record(
                        int(request_length[0]), attributes
                    )
            otel_context.detach(token)


def _remember_routes(app: FastAPI) -> None:
    """Puts a :class:`RouteMemo` before the instrumentation's own route lookup, through the
    ``default_span_details`` of its ASGI middleware (a public attribute of
    ``OpenTelemetryMiddleware``; ``FastAPIInstrumentor.instrument_app`` takes no such
    argument), and :class:`UnsampledRequests` around that middleware. The instrumented stack is
    ``ServerErrorMiddleware(OpenTelemetryMiddleware(…))``
    (opentelemetry-instrumentation-fastapi 0.66b1); if that ever changes, the instrumentation
    stays the library's and a warning says so (libs/common/tests/test_route_memo.py fails)."""
    instrumented = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        stack = instrumented()
        middleware = getattr(stack, "app", None)
        if isinstance(middleware, OpenTelemetryMiddleware):
            middleware.default_span_details = RouteMemo(middleware.default_span_details)
            stack.app = UnsampledRequests(middleware)  # type: ignore[attr-defined]
        else:
            log.warning("route memo not installed", stack=type(stack).__name__)
        return stack

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _report_stopped_worker(task: asyncio.Task[None]) -> None:
    """A worker's run() returns only when asked to; anything else is said at once (and
    /readyz turns red: see the "workers" check)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("background worker stopped", worker=task.get_name(), error=repr(task.exception()))


def _health_router(runtime: ServiceRuntime) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/livez", summary="The process is alive")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @router.get(
        "/readyz",
        summary="The service can serve: its database and the broker answer",
        responses={503: {"description": "Not ready (problem+json naming the failed checks)"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        names = list(runtime.readiness_checks)
        results = await asyncio.gather(
            *(
                asyncio.wait_for(check(), READINESS_TIMEOUT_S)
                for check in runtime.readiness_checks.values()
            ),
            return_exceptions=True,
        )
        checks = {
            name: "ok" if not isinstance(result, BaseException) else _describe(result)
            for name, result in zip(names, results, strict=True)
        }
        if all(value == "ok" for value in checks.values()):
            ready: dict[str, Any] = {"status": "ready", "checks": checks}
            attention = await _attention(runtime)
            if attention:
                ready["attention"] = attention
            return JSONResponse(ready)
        failed = ", ".join(name for name, value in checks.items() if value != "ok")
        raise Problem(503, "not_ready", "Pas prêt", detail=f"En échec : {failed}.", checks=checks)

    return router


async def _attention(runtime: ServiceRuntime) -> dict[str, str]:
    """What an operator must look at although the service serves: events set aside by the
    outbox relay (decision 35). Not a reason to take the replica out of service, which would
    stop every other request for one refused event."""
    pool = runtime.pool
    if pool is None:
        return {}
    try:
        found = await asyncio.wait_for(
            pool.fetch("SELECT event_id FROM outbox_dead_letters ORDER BY outbox_id LIMIT 6"),
            READINESS_TIMEOUT_S,
        )
    except (TimeoutError, asyncpg.PostgresError, OSError):
        return {}
    if not found:
        return {}
    named = ", ".join(str(row["event_id"]) for row in found[:5])
    more = " and more" if len(found) > 5 else ""
    service = runtime.settings.service_name
    return {
        "outbox_dead_letters": f"events the broker refused for good, set aside: {named}{more}; "
        f"see `maillage dlq list --service {service}`"
    }


def _backlog_router(runtime: ServiceRuntime, consumers: Sequence[EventConsumer]) -> APIRouter:
    """``/admin/backlog``: what waits in this service, for operators (the console's health)."""
    router = APIRouter(
        prefix="/admin",
        tags=["operations"],
        dependencies=[require_role("operator")],
        responses={403: {"description": "Operators only"}},
    )

    @router.get(
        "/backlog",
        summary="The outbox's backlog and each consumer group's lag",
        description="`outbox`: `unpublished` events not yet on the broker and the age in seconds"
        " of the oldest (`oldest_age_seconds`, null when none waits). `consumers`: per consumer"
        " group, `lag` = records not yet consumed (end offset minus committed offset, summed over"
        " the partitions this replica holds, as the `maillage.consumer.lag` metric), or `error`"
        " when the broker did not answer in 2 s.",
    )
    async def backlog() -> dict[str, Any]:
        pool = pool_or_fail(runtime)
        row = await pool.fetchrow(
            "SELECT count(*) AS unpublished,"
            " EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))::float8 AS oldest"
            " FROM outbox WHERE published_at IS NULL"
        )
        groups: list[dict[str, Any]] = []
        for consumer in consumers:
            try:
                lag = await asyncio.wait_for(consumer_lag(consumer), READINESS_TIMEOUT_S)
            except Exception as error:  # the broker's errors are many: say which, go on
                groups.append({"group": consumer.group, "lag": None, "error": _describe(error)})
                continue
            groups.append(
                {
                    "group": consumer.group,
                    "lag": int(sum(v for v, _ in lag)),
                    "partitions": len(lag),
                }
            )
        oldest = row["oldest"] if row else None
        return {
            "outbox": {
                "unpublished": row["unpublished"] if row else 0,
                "oldest_age_seconds": round(oldest, 1) if oldest is not None else None,
            },
            "consumers": groups,
        }

    return router


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    return f"{type(error).__name__}: {error}"[:200]


def _asyncapi_router(broker: KafkaBroker, title: str, description: str, version: str) -> APIRouter:
    router = APIRouter(tags=["asyncapi"], include_in_schema=False)

    def specification() -> Any:
        return AsyncAPI(broker, title=title, description=description, version=version)

    @router.get("/asyncapi")
    async def asyncapi_html() -> HTMLResponse:
        return HTMLResponse(
            get_asyncapi_html(specification().to_specification(), try_it_out_path=None)
        )

    @router.get("/asyncapi.json")
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(specification().to_specification().to_jsonable())

    return router
