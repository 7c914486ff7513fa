"""The webhook delivery worker: claims due deliveries in PostgreSQL and POSTs them, signed.

Every attempt, in order:

1. the URL goes through the SSRF policy again (:func:`ssrf.check_url`: the settings may have
   changed since the subscription); the pooled client connects through
   :class:`ssrf.CheckedNetworkBackend`, which resolves the name when it opens a connection and
   connects only to an address the policy accepts, so DNS rebinding cannot redirect a request
   and connections stay per host name (``Host``, SNI and certificates as usual);
2. the stored body is signed afresh (:func:`signing.webhook_headers`: ``webhook-id`` is the event
   id, stable across retries; the timestamp is this attempt's; one signature per live secret);
3. it is POSTed with httpx: connect timeout 5 s, 15 s for the whole attempt, redirects not
   followed, at most :data:`MAX_RESPONSE_BYTES` of the answer read;
4. the status is classified (:func:`domain.classify_response`), the attempt is recorded, and the
   next one scheduled (:func:`domain.next_attempt`, honouring ``Retry-After``); a 410 disables
   the endpoint, and so does an endpoint failing for :data:`domain.DEFAULT_DISABLE_AFTER`.

The queue is the ``deliveries`` table: claims use ``FOR UPDATE SKIP LOCKED`` and a lease, so
several workers share it and a restarted one resumes the attempts where they were due.
Concurrency is bounded globally and per endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import asyncpg
import httpcore
import httpx
from opentelemetry import metrics, propagate, trace

from maillage.common.db import CONNECTION_ERRORS, transaction
from maillage.common.logging import get_logger
from maillage.notifications import domain, signing, ssrf, store
from maillage.notifications.secretbox import SecretBox

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)
meter = metrics.get_meter(__name__)

# Counted once the attempt is recorded; outcome: delivered, retry (another attempt is scheduled),
# failed (the schedule is exhausted), disabled (410 Gone, or failing for too long).
_attempts = meter.create_counter(
    "maillage.webhook.deliveries", unit="{attempt}", description="Webhook attempts, by outcome"
)
_attempt_duration = meter.create_histogram(
    "maillage.webhook.attempt.duration",
    unit="s",
    description="One webhook attempt: connection, request and reading the answer",
)
_OUTCOME_OF_STATUS = {"pending": "retry"}

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 15.0
# The answer's body is read up to this, for the delivery log; the rest is dropped unread.
MAX_RESPONSE_BYTES = 4096
# A claimed delivery is the worker's for this long: far more than an attempt can take.
DEFAULT_LEASE = timedelta(seconds=60)
USER_AGENT = "Maillage-Webhooks/1.0"
# Migration 0006 notifies it when deliveries are queued: the worker wakes without waiting a poll.
DUE_CHANNEL = "notifications_deliveries_due"
# An idle connection is closed after this (httpx's default).
KEEPALIVE_EXPIRY = 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


Origin = tuple[bytes, bytes, int | None]


class PoolPerOrigin:
    """One httpcore connection pool per origin (scheme, host name, port).

    httpcore's pool scans every one of its connections, several times, for each request (its
    cost grows with the square of their number): small pools, one per host, keep the cost per
    request flat however many endpoints a fan-out reaches. Requests in flight are bounded by
    the worker, not here. Once there are ``max_pools`` pools, the least recently used pools
    whose connections are all idle are closed, so sockets and memory stay bounded too.
    """

    def __init__(
        self, new_pool: Callable[[], httpcore.AsyncConnectionPool], *, max_pools: int
    ) -> None:
        self._new_pool = new_pool
        self._max_pools = max_pools
        self._pools: OrderedDict[Origin, httpcore.AsyncConnectionPool] = OrderedDict()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        origin = (request.url.scheme, request.url.host, request.url.port)
        pool = self._pools.get(origin)
        if pool is None:
            if len(self._pools) >= self._max_pools:
                await self._close_idle_pools()
            pool = self._pools[origin] = self._new_pool()
        else:
            self._pools.move_to_end(origin)
        return await pool.handle_async_request(request)

    async def _close_idle_pools(self) -> None:
        # Down to half the bound at once, so the sweep is paid once per max_pools / 2 origins.
        for origin, pool in list(self._pools.items()):
            if len(self._pools) < self._max_pools // 2:
                break
            if all(connection.is_idle() for connection in pool.connections):
                del self._pools[origin]
                await pool.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        await self.aclose()


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on per-origin connection pools whose connections go through the SSRF
    backend."""

    def __init__(
        self,
        network_backend: httpcore.AsyncNetworkBackend,
        *,
        max_connections: int,
        max_keepalive_per_origin: int,
    ) -> None:
        super().__init__(trust_env=False)
        ssl_context = httpx.create_ssl_context(trust_env=False)

        def new_pool() -> httpcore.AsyncConnectionPool:
            return httpcore.AsyncConnectionPool(
                ssl_context=ssl_context,
                max_connections=max_connections,
                max_keepalive_connections=max_keepalive_per_origin,
                keepalive_expiry=KEEPALIVE_EXPIRY,
                network_backend=network_backend,
            )

        # httpx 0.28 takes no network backend (encode/httpx#3180), nor another pool: its pool is
        # replaced by ours, which builds httpcore pools as httpx does, with the backend.
        self._pool = PoolPerOrigin(new_pool, max_pools=max_connections)  # type: ignore[assignment]


def default_http_client(
    network_backend: httpcore.AsyncNetworkBackend, max_connections: int = 50, per_origin: int = 4
) -> httpx.AsyncClient:
    """The pooled client of the worker: no redirects, no environment proxy, bounded timeouts.

    At most ``max_connections`` origins keep connections open, each at most
    ``max(per_origin, max_connections // 4)`` idle ones, for :data:`KEEPALIVE_EXPIRY`.
    """
    transport = CheckedTransport(
        network_backend,
        max_connections=max_connections,
        max_keepalive_per_origin=max(per_origin, max_connections // 4),
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(TOTAL_TIMEOUT, connect=CONNECT_TIMEOUT),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt produced: a status code, or an error when no answer came."""

    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    retry_after: str | None = None
    span: trace.SpanContext | None = None  # the attempt's span: its log line joins the trace


@dataclass(frozen=True)
class _Finished:
    """An attempt judged, waiting to be recorded."""

    outcome: store.AttemptOutcome
    kind: domain.Outcome
    at: datetime  # when it was judged, by the worker's clock


class _EndpointLimits:
    """One semaphore per endpoint in use, dropped when unused: memory follows the activity."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[uuid.UUID, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, endpoint_id: uuid.UUID) -> AsyncIterator[None]:
        semaphore, users = self._entries.get(endpoint_id, (asyncio.Semaphore(self._size), 0))
        self._entries[endpoint_id] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._entries[endpoint_id]
            if users <= 1:
                del self._entries[endpoint_id]
            else:
                self._entries[endpoint_id] = (semaphore, users - 1)


class DeliveryWorker:
    """Delivers the due webhooks of the ``deliveries`` table; ``run()`` until ``stop()``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        secret_box: SecretBox,
        allow_http: bool = False,
        allowed_hosts: frozenset[str] = frozenset(),
        schedule: tuple[timedelta, ...] = domain.DEFAULT_RETRY_SCHEDULE,
        max_concurrency: int = 50,
        per_endpoint: int = 4,
        batch_size: int | None = None,
        poll_interval: float = 1.0,
        lease: timedelta = DEFAULT_LEASE,
        disable_after: timedelta = domain.DEFAULT_DISABLE_AFTER,
        max_retry_after: timedelta = domain.MAX_RETRY_AFTER,
        total_timeout: float = TOTAL_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        resolver: ssrf.Resolver = ssrf.system_resolver,
        clock: Callable[[], datetime] = _utcnow,
        rng: random.Random | None = None,
    ) -> None:
        if max_concurrency < 1 or per_endpoint < 1:
            raise ValueError("concurrency limits are at least 1")
        self.pool = pool
        self.secret_box = secret_box  # opens the endpoints' sealed secrets
        self._client: httpx.AsyncClient | None = None
        self.allow_http = allow_http
        self.allowed_hosts = frozenset(allowed_hosts)
        self.schedule = schedule
        self.max_concurrency = max_concurrency
        self.per_endpoint = per_endpoint
        self.batch_size = batch_size or max_concurrency
        self.poll_interval = poll_interval
        self.lease = lease
        self.disable_after = disable_after
        self.max_retry_after = max_retry_after
        self.total_timeout = total_timeout
        self.max_response_bytes = max_response_bytes
        self.resolver = resolver
        self.clock = clock
        self.rng = rng
        self._global = asyncio.Semaphore(max_concurrency)
        self._endpoints = _EndpointLimits(per_endpoint)
        self._stopping = asyncio.Event()
        self._due = asyncio.Event()
        self._unrecorded: list[tuple[_Finished, asyncio.Future[None]]] = []
        self._recording: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            backend = ssrf.CheckedNetworkBackend(
                allowed_hosts=self.allowed_hosts, resolver=self.resolver
            )
            self._client = default_http_client(backend, self.max_concurrency, self.per_endpoint)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        await self.aclose()

    def stop(self) -> None:
        """Ask :meth:`run` to return once the attempts under way are finished."""
        self._stopping.set()

    async def run(self) -> None:
        """Claim and deliver until :meth:`stop`: a pipeline, never more than the global bound.

        Woken by a NOTIFY when deliveries are queued; polls every ``poll_interval`` for retries
        come due (and in case a NOTIFY was missed).
        """
        self._stopping.clear()
        in_flight: set[asyncio.Task[None]] = set()
        stopping = asyncio.create_task(self._stopping.wait())
        listener = await self._listen()
        try:
            while not self._stopping.is_set():
                free = self.max_concurrency - len(in_flight)
                limit = min(free, self.batch_size)
                claimed: list[store.ClaimedDelivery] = []
                if limit > 0:
                    # Cleared before the claim: a NOTIFY for rows it does not see wakes the wait.
                    self._due.clear()
                    try:
                        claimed = await self._claim(limit)
                    except CONNECTION_ERRORS as exc:
                        log.warning("claiming deliveries failed", error=str(exc))
                for delivery in claimed:
                    task = asyncio.create_task(self._deliver_logged(delivery))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if claimed and len(claimed) == limit:
                    continue  # more may be due: claim again at once
                due = asyncio.create_task(self._due.wait())
                try:
                    await asyncio.wait(
                        {stopping, due, *in_flight},
                        timeout=self.poll_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    due.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        finally:
            stopping.cancel()
            if listener is not None:
                await self._unlisten(listener)
            await self.aclose()

    async def _listen(self) -> asyncpg.Connection | None:
        """A pool connection listening on :data:`DUE_CHANNEL`; None (polling only) if it fails."""
        connection: asyncpg.Connection | None = None
        try:
            connection = await self.pool.acquire()
            await connection.add_listener(DUE_CHANNEL, self._notified)
        except CONNECTION_ERRORS as exc:
            log.warning("deliveries are polled only: LISTEN failed", error=str(exc))
            if connection is not None:
                await self.pool.release(connection)
            return None
        return connection

    async def _unlisten(self, connection: asyncpg.Connection) -> None:
        with contextlib.suppress(*CONNECTION_ERRORS):
            await connection.remove_listener(DUE_CHANNEL, self._notified)
        await self.pool.release(connection)

    def _notified(self, *_args: object) -> None:
        self._due.set()

    async def deliver_due(self) -> int:
        """One pass: claim up to a batch of due deliveries and attempt each; how many."""
        claimed = await self._claim(self.batch_size)
        await asyncio.gather(*(self._deliver_logged(delivery) for delivery in claimed))
        return len(claimed)

    # --- one delivery --------------------------------------------------------------------------

    async def _claim(self, limit: int) -> list[store.ClaimedDelivery]:
        async with transaction(self.pool) as connection:
            return await store.claim_due(
                connection,
                now=self.clock(),
                limit=limit,
                per_endpoint=self.per_endpoint,
                lease=self.lease,
            )

    async def _deliver_logged(self, delivery: store.ClaimedDelivery) -> None:
        try:
            await self.deliver(delivery)
        except Exception:
            # The lease brings it back: the attempt is not lost, only late.
            log.exception("delivery failed unexpectedly", delivery_id=str(delivery.id))

    async def deliver(self, delivery: store.ClaimedDelivery) -> AttemptResult:
        """Attempt one claimed delivery (within the bounds) and record the outcome."""
        async with self._endpoints.hold(delivery.endpoint_id), self._global:
            result = await self.attempt(delivery)
        await self._record(delivery, result)
        return result

    async def attempt(self, delivery: store.ClaimedDelivery) -> AttemptResult:
        """Send one signed POST to the endpoint; never raises for the receiver's faults."""
        started_at = self.clock()
        start = time.monotonic()
        status_code: int | None = None
        retry_after: str | None = None
        error: str | None = None
        # The attempt continues the trace of the event it carries (stored when it was queued),
        # and the receiver gets that trace in its ``traceparent`` header.
        with tracer.start_as_current_span(
            "webhook attempt",
            context=propagate.extract(delivery.trace_context),
            kind=trace.SpanKind.CLIENT,
            attributes={
                "maillage.delivery.id": str(delivery.id),
                "maillage.endpoint.id": str(delivery.endpoint_id),
                "maillage.event.id": str(delivery.event_id),
                "maillage.event.type": delivery.event_type,
                "maillage.delivery.attempt": delivery.attempts + 1,
            },
        ) as span:
            try:
                async with asyncio.timeout(self.total_timeout):
                    status_code, retry_after = await self._post(delivery)
            except ssrf.UnsafeUrl as exc:
                error = f"refused ({exc.code}): {exc.message}"
            except TimeoutError:
                error = f"no answer within {self.total_timeout:g} s"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except (OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if status_code is not None:
                span.set_attribute("http.response.status_code", status_code)
            if error is not None or status_code is None or not 200 <= status_code <= 299:
                span.set_status(trace.StatusCode.ERROR, error or f"HTTP {status_code}")
        duration_ms = round((time.monotonic() - start) * 1000)
        return AttemptResult(
            started_at, duration_ms, status_code, error, retry_after, span.get_span_context()
        )

    async def _post(self, delivery: store.ClaimedDelivery) -> tuple[int, str | None]:
        parsed = ssrf.check_url(
            delivery.url, allow_http=self.allow_http, allowed_hosts=self.allowed_hosts
        )
        body = delivery.payload.encode("utf-8")
        if not delivery.secrets:
            raise ValueError("the endpoint has no live signing secret")
        secrets = [self.secret_box.open(s, delivery.endpoint_id) for s in delivery.secrets]
        headers = signing.webhook_headers(str(delivery.event_id), int(time.time()), body, secrets)
        propagate.inject(headers)  # traceparent: the receiver may join the trace
        # The client resolves and checks the name as it connects (ssrf.CheckedNetworkBackend).
        request = self.client.build_request("POST", parsed.url, content=body, headers=headers)
        response = await self.client.send(request, stream=True, follow_redirects=False)
        try:
            await self._read_capped(response)
        finally:
            await response.aclose()
        return response.status_code, response.headers.get("retry-after")

    async def _read_capped(self, response: httpx.Response) -> bytes:
        received = bytearray()
        async for chunk in response.aiter_raw():
            received += chunk[: self.max_response_bytes - len(received)]
            if len(received) >= self.max_response_bytes:
                break
        return bytes(received)

    async def _record(self, delivery: store.ClaimedDelivery, result: AttemptResult) -> None:
        """Judge the attempt, then wait until its batch is recorded (raises if that failed)."""
        finished = self._judge(delivery, result)
        recorded = asyncio.get_running_loop().create_future()
        self._unrecorded.append((finished, recorded))
        if self._recording is None or self._recording.done():
            self._recording = asyncio.create_task(self._record_batches())
        await recorded
        outcome = _OUTCOME_OF_STATUS.get(finished.outcome.status, finished.outcome.status)
        _attempts.add(1, {"outcome": outcome})
        _attempt_duration.record(result.duration_ms / 1000, {"outcome": outcome})
        attempt_span = trace.NonRecordingSpan(result.span or trace.INVALID_SPAN_CONTEXT)
        with trace.use_span(attempt_span):
            self._log_attempt(delivery, result, finished)

    def _log_attempt(
        self, delivery: store.ClaimedDelivery, result: AttemptResult, finished: _Finished
    ) -> None:
        log.info(
            "webhook attempt",
            delivery_id=str(delivery.id),
            event_id=str(delivery.event_id),
            attempt=finished.outcome.attempt.number,
            status_code=result.status_code,
            error=finished.outcome.attempt.error,
            outcome=finished.outcome.status,
            next_attempt_at=(
                finished.outcome.next_attempt_at.isoformat()
                if finished.outcome.next_attempt_at
                else None
            ),
            duration_ms=result.duration_ms,
        )

    def _judge(self, delivery: store.ClaimedDelivery, result: AttemptResult) -> _Finished:
        now = self.clock()
        number = delivery.attempts + 1
        outcome: domain.Outcome = (
            domain.classify_response(result.status_code)
            if result.status_code is not None
            else "retry"
        )
        error = result.error
        if error is None and outcome != "delivered":
            error = f"the receiver answered {result.status_code}"
        next_at: datetime | None = None
        status: store.DeliveryStatus
        if outcome == "delivered":
            status = "delivered"
        elif outcome == "disable":
            status = "disabled"
        else:
            next_at = domain.next_attempt(
                number,
                now,
                schedule=self.schedule,
                retry_after=domain.parse_retry_after(result.retry_after, now),
                max_retry_after=self.max_retry_after,
                rng=self.rng,
            )
            status = "pending" if next_at is not None else "failed"
        attempt = store.AttemptRecord(
            number=number,
            started_at=result.started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=error,
        )
        recorded = store.AttemptOutcome(delivery.id, delivery.endpoint_id, attempt, status, next_at)
        return _Finished(recorded, outcome, now)

    async def _record_batches(self) -> None:
        """Group commit: the attempts that finish while a batch is written go in the next one,
        so one transaction of a few statements records many attempts under load."""
        while self._unrecorded:
            batch, self._unrecorded = self._unrecorded, []
            try:
                await self._write([finished for finished, _ in batch])
            except Exception as exc:  # each waiting delivery reports it; leases bring them back
                for _, recorded in batch:
                    if not recorded.done():
                        recorded.set_exception(exc)
            else:
                for _, recorded in batch:
                    if not recorded.done():
                        recorded.set_result(None)

    async def _write(self, batch: list[_Finished]) -> None:
        async with transaction(self.pool) as connection:
            await store.record_attempts(
                connection, [finished.outcome for finished in batch], now=self.clock()
            )
            for finished in batch:
                endpoint_id = finished.outcome.endpoint_id
                reason: str | None = None
                if finished.kind == "disable":
                    reason = "the receiver answered 410 Gone"
                elif finished.kind == "retry":
                    first = await store.endpoint_first_failure(connection, endpoint_id)
                    if first is not None and domain.should_disable(
                        first, finished.at, after=self.disable_after
                    ):
                        reason = f"failing without a success since {signing.iso_timestamp(first)}"
                if reason is not None:
                    await store.disable_endpoint(
                        connection, endpoint_id, reason=reason, notify=True
                    )
