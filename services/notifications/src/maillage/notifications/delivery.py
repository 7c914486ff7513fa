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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import asyncpg
import httpcore
import httpx

from maillage.common.db import transaction
from maillage.common.logging import get_logger
from maillage.notifications import domain, signing, ssrf, store
from maillage.notifications.secretbox import SecretBox

log = get_logger(__name__)

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 15.0
# The answer's body is read up to this, for the delivery log; the rest is dropped unread.
MAX_RESPONSE_BYTES = 4096
# A claimed delivery is the worker's for this long: far more than an attempt can take.
DEFAULT_LEASE = timedelta(seconds=60)
USER_AGENT = "Maillage-Webhooks/1.0"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a connection pool whose connections go through the SSRF backend."""

    def __init__(self, network_backend: httpcore.AsyncNetworkBackend, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx 0.28 takes no network backend (encode/httpx#3180): its pool is replaced by one
        # built as httpx builds it, with the backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=network_backend,
        )


def default_http_client(
    network_backend: httpcore.AsyncNetworkBackend, max_connections: int = 50
) -> httpx.AsyncClient:
    """The pooled client of the worker: no redirects, no environment proxy, bounded timeouts."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(
        transport=CheckedTransport(network_backend, limits),
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

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            backend = ssrf.CheckedNetworkBackend(
                allowed_hosts=self.allowed_hosts, resolver=self.resolver
            )
            self._client = default_http_client(backend, self.max_concurrency)
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
        """Claim and deliver until :meth:`stop`: a pipeline, never more than the global bound."""
        self._stopping.clear()
        in_flight: set[asyncio.Task[None]] = set()
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                free = self.max_concurrency - len(in_flight)
                limit = min(free, self.batch_size)
                claimed: list[store.ClaimedDelivery] = []
                if limit > 0:
                    try:
                        claimed = await self._claim(limit)
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                        log.warning("claiming deliveries failed", error=str(exc))
                for delivery in claimed:
                    task = asyncio.create_task(self._deliver_logged(delivery))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if claimed and len(claimed) == limit:
                    continue  # more may be due: claim again at once
                await asyncio.wait(
                    {stopping, *in_flight},
                    timeout=self.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        finally:
            stopping.cancel()
            await self.aclose()

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
        duration_ms = round((time.monotonic() - start) * 1000)
        return AttemptResult(started_at, duration_ms, status_code, error, retry_after)

    async def _post(self, delivery: store.ClaimedDelivery) -> tuple[int, str | None]:
        parsed = ssrf.check_url(
            delivery.url, allow_http=self.allow_http, allowed_hosts=self.allowed_hosts
        )
        body = delivery.payload.encode("utf-8")
        if not delivery.secrets:
            raise ValueError("the endpoint has no live signing secret")
        secrets = [self.secret_box.open(s, delivery.endpoint_id) for s in delivery.secrets]
        headers = signing.webhook_headers(str(delivery.event_id), int(time.time()), body, secrets)
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
        async with transaction(self.pool) as connection:
            await store.record_attempt(
                connection, delivery.id, attempt, status=status, next_attempt_at=next_at, now=now
            )
            reason: str | None = None
            if outcome == "disable":
                reason = "the receiver answered 410 Gone"
            elif outcome == "retry":
                first = await store.endpoint_first_failure(connection, delivery.endpoint_id)
                if first is not None and domain.should_disable(
                    first, now, after=self.disable_after
                ):
                    reason = f"failing without a success since {signing.iso_timestamp(first)}"
            if reason is not None:
                await store.disable_endpoint(connection, delivery.endpoint_id, reason=reason)
        log.info(
            "webhook attempt",
            delivery_id=str(delivery.id),
            event_id=str(delivery.event_id),
            attempt=number,
            status_code=result.status_code,
            error=error,
            outcome=status,
            next_attempt_at=next_at.isoformat() if next_at else None,
            duration_ms=result.duration_ms,
        )
