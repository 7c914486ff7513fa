"""Webhook fan-out benchmark: one event to many endpoints, the delivery worker against raw httpx.

Run from the repository root::

    .venv/bin/python bench/notifications_fanout.py [--endpoints 1000] [--rounds 3]

It starts its own embedded PostgreSQL (in a temporary directory, on a free loopback port) unless
``DATABASE_URL`` names a server (the benchmark creates and drops its own database there), and
``--receivers`` receiver processes: uvicorn on 127.0.0.1, each serving the paths
``/hooks/<n>`` of every endpoint ``n`` with ``n % receivers`` its own, verifying **every**
request with the official ``standardwebhooks`` library and counting them per ``webhook-id``.

The endpoints are registered as the API does (``store.create_endpoint``, one partner each, a
fresh ``whsec_`` secret each, sealed with a ``SecretBox``). Then, in each round, side by side:

(raw)    one ``httpx.AsyncClient`` POSTs the event to the N endpoints, signing each request with
         the endpoint's secret (``signing.webhook_headers``), with at most ``--concurrency``
         requests in flight (a semaphore, and as many pooled connections); from the first request
         to the last response.
(worker) ``store.enqueue_event`` queues the event for the N partners in one transaction while a
         ``DeliveryWorker`` (the service's, with the service's default settings and a pool of
         10 connections) runs; from just before that transaction to the last delivery recorded
         (the largest ``delivered_at``). The worker is idle when the event is queued: the
         NOTIFY of the enqueue wakes it. The time to its first attempt is shown apart.

Both start with cold connections; ratio = worker rate / raw rate, best round of each. Every
round checks that each receiver got the event exactly once per endpoint, all signatures valid.
Memory is measured first, after the warm-up: one worker fan-out each to 250, 1,000 and 4,000
endpoints (``--memory-steps``), with the peak RSS of this process during it and its rise above
the RSS at the start (Linux: ``VmHWM`` after resetting it).

It is not a test: it prints figures, and every wait is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import httpx
from backbone import CpuMeter, ServerThread, cpu_text, load

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import (
    EmbeddedPostgres,
    drop_database,
    ensure_database,
    free_port,
    wait_for_tcp,
)
from maillage.common.db import create_pool, migrate_service, transaction
from maillage.common.logging import configure_logging
from maillage.notifications import delivery, signing, store
from maillage.notifications.secretbox import SecretBox

MIGRATIONS = Path(store.__file__).parent / "migrations"
EVENT_TYPE = "stages3e.offer.published"
LOOPBACK = frozenset({"127.0.0.0/8"})
BOX = SecretBox("benchmark-only webhook secret encryption key")
WARM_UP = 40  # endpoints of the warm-up fan-out, before any clock starts


# --- the receivers (separate processes) -------------------------------------------------------


def serve_receiver(port: int, secrets_file: Path) -> None:
    """One receiver process: verify every delivery, count per webhook-id; GET /stats?id=…."""
    import uvicorn
    from standardwebhooks import Webhook, WebhookVerificationError

    secrets: list[str] = json.loads(secrets_file.read_text())
    verifiers: dict[int, Webhook] = {}
    # webhook-id -> endpoint numbers received, number of requests, of valid signatures.
    seen: dict[str, set[int]] = {}
    requests: dict[str, int] = {}
    valid: dict[str, int] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        status, answer = 404, b""
        if scope["method"] == "POST" and path.startswith("/hooks/"):
            body, more = b"", True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            number = int(path.removeprefix("/hooks/"))
            verifier = verifiers.get(number)
            if verifier is None:
                verifier = verifiers[number] = Webhook(secrets[number])
            webhook_id = headers.get("webhook-id", "")
            try:
                verifier.verify(body, headers)
            except WebhookVerificationError:
                pass
            else:
                valid[webhook_id] = valid.get(webhook_id, 0) + 1
            requests[webhook_id] = requests.get(webhook_id, 0) + 1
            seen.setdefault(webhook_id, set()).add(number)
            status = 204
        elif scope["method"] == "GET" and path == "/stats":
            [webhook_id] = parse_qs(scope["query_string"].decode())["id"]
            answer = json.dumps(
                {
                    "requests": requests.get(webhook_id, 0),
                    "valid": valid.get(webhook_id, 0),
                    "endpoints": sorted(seen.get(webhook_id, ())),
                }
            ).encode()
            status = 200
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


@dataclass
class Receivers:
    ports: list[int]
    processes: list[subprocess.Popen[bytes]]

    def url(self, number: int) -> str:
        return f"http://127.0.0.1:{self.ports[number % len(self.ports)]}/hooks/{number}"

    async def check(self, client: httpx.AsyncClient, webhook_id: str, endpoints: int) -> str:
        """What the receivers got for this event; an error message unless exactly right."""
        requests = valid = 0
        numbers: list[int] = []
        for port in self.ports:
            stats = (await client.get(f"http://127.0.0.1:{port}/stats?id={webhook_id}")).json()
            requests += stats["requests"]
            valid += stats["valid"]
            numbers += stats["endpoints"]
        if requests == valid == endpoints and sorted(numbers) == list(range(endpoints)):
            return ""
        return (
            f"{requests} requests ({valid} valid) at {len(numbers)} endpoints, "
            f"expected {endpoints} once each"
        )


def spawn_receiver(port: int, secrets_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - this very script, as a receiver
        [sys.executable, __file__, "--serve-receiver", str(port), str(secrets_file)]
    )


@contextlib.asynccontextmanager
async def receivers(count: int, secrets_file: Path) -> AsyncIterator[Receivers]:
    ports = [free_port() for _ in range(count)]
    processes = [spawn_receiver(port, secrets_file) for port in ports]
    try:
        for port in ports:
            if not await wait_for_tcp("127.0.0.1", port, timeout=30):
                raise RuntimeError(f"the receiver on port {port} did not start")
        yield Receivers(ports, processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- memory -------------------------------------------------------------------------------------


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise LookupError(field_name)


@contextlib.contextmanager
def peak_rss_growth(into: dict[str, float]) -> Any:
    """``into``: the peak RSS during the block and how far it rose above the RSS at its start."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    yield
    peak = _status_kib("VmHWM")
    into["peak_mib"] = peak / 1024
    into["mib"] = (peak - before) / 1024


# --- the two contenders ---------------------------------------------------------------------------


@dataclass
class Fanout:
    endpoints: int
    seconds: float  # the clock of the contender (see the module's docstring)
    wait: float = 0.0  # worker only: enqueue -> first attempt
    cpu: dict[str, float] = field(default_factory=dict)  # ms per delivery, by process
    memory_mib: float | None = None
    peak_mib: float | None = None

    @property
    def rate(self) -> float:
        return self.endpoints / self.seconds

    def __str__(self) -> str:
        text = f"{self.seconds * 1000:6.0f} ms, {self.rate:5.0f} deliveries/s"
        if self.wait:
            fanout = self.seconds - self.wait
            text += (
                f" (to 1st attempt {self.wait * 1000:3.0f} ms + fan-out {fanout * 1000:4.0f} ms)"
            )
        if self.memory_mib is not None:
            text += f", peak RSS {self.peak_mib:.1f} MiB (+{self.memory_mib:.2f})"
        return f"{text}; {cpu_text(self.cpu)}"


@dataclass
class Bench:
    args: argparse.Namespace
    pool: asyncpg.Pool
    receivers: Receivers
    secrets: list[str]
    partners: list[uuid.UUID]
    cpu: CpuMeter

    def body(self) -> tuple[uuid.UUID, bytes]:
        event_id = uuid.uuid4()
        data = {"offer_id": str(uuid.uuid4()), "title": "Stage de 3e : laboratoire de chimie"}
        return event_id, signing.body_for(EVENT_TYPE, datetime.now(UTC), data)

    async def raw(self, endpoints: int) -> Fanout:
        event_id, body = self.body()
        bound = asyncio.Semaphore(self.args.concurrency)
        limits = httpx.Limits(
            max_connections=self.args.concurrency, max_keepalive_connections=self.args.concurrency
        )
        cpu: dict[str, float] = {}
        async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=15) as client:

            async def post(number: int) -> None:
                async with bound:
                    headers = signing.webhook_headers(
                        str(event_id), int(time.time()), body, [self.secrets[number]]
                    )
                    response = await client.post(
                        self.receivers.url(number), content=body, headers=headers
                    )
                    response.raise_for_status()

            async with self.cpu.per_event(endpoints, cpu):
                started = time.perf_counter()
                await asyncio.gather(*(post(number) for number in range(endpoints)))
                seconds = time.perf_counter() - started
        await self.verify(event_id, endpoints)
        return Fanout(endpoints, seconds, cpu=cpu)

    async def worker(self, endpoints: int, *, memory: bool = False) -> Fanout:
        event_id, body = self.body()
        worker = delivery.DeliveryWorker(
            self.pool,
            secret_box=BOX,
            allow_http=True,
            allowed_hosts=LOOPBACK,
            max_concurrency=self.args.concurrency,
            per_endpoint=self.args.per_endpoint,
            poll_interval=self.args.poll_interval,
        )
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.05)  # idle: its first claim found nothing
        cpu: dict[str, float] = {}
        usage: dict[str, float] = {}
        try:
            with peak_rss_growth(usage) if memory else contextlib.nullcontext():
                async with self.cpu.per_event(endpoints, cpu):
                    started = time.time()
                    async with transaction(self.pool) as connection:
                        queued = await store.enqueue_event(
                            connection,
                            partner_ids=self.partners[:endpoints],
                            event_id=event_id,
                            event_type=EVENT_TYPE,
                            payload=body.decode(),
                            now=datetime.now(UTC),
                        )
                    assert queued == endpoints
                    first, last = await self.wait_delivered(event_id, endpoints)
        finally:
            worker.stop()
            await asyncio.wait_for(running, self.args.timeout)
        await self.verify(event_id, endpoints)
        return Fanout(
            endpoints,
            last - started,
            wait=first - started,
            cpu=cpu,
            memory_mib=usage.get("mib"),
            peak_mib=usage.get("peak_mib"),
        )

    async def wait_delivered(self, event_id: uuid.UUID, endpoints: int) -> tuple[float, float]:
        """Wait until every delivery of the event is recorded: (first attempt, last delivery)."""
        deadline = time.monotonic() + self.args.timeout
        while True:
            row = await self.pool.fetchrow(
                """
                SELECT count(*) FILTER (WHERE status = 'delivered') AS delivered,
                       count(*) FILTER (WHERE status NOT IN ('pending', 'delivered')) AS lost,
                       extract(epoch FROM max(delivered_at))::float8 AS last
                  FROM deliveries WHERE event_id = $1
                """,
                event_id,
            )
            assert row is not None
            if row["lost"]:
                raise RuntimeError(f"{row['lost']} deliveries failed or were disabled")
            if row["delivered"] == endpoints:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{row['delivered']}/{endpoints} delivered in time")
            await asyncio.sleep(0.02)
        first = await self.pool.fetchval(
            """
            SELECT extract(epoch FROM min(a.started_at))::float8
              FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.event_id = $1
            """,
            event_id,
        )
        attempts = await self.pool.fetchval(
            "SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " WHERE d.event_id = $1",
            event_id,
        )
        if attempts != endpoints:
            raise RuntimeError(f"{attempts} attempts for {endpoints} deliveries")
        return first, row["last"]

    async def verify(self, event_id: uuid.UUID, endpoints: int) -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            problem = await self.receivers.check(client, str(event_id), endpoints)
        if problem:
            raise RuntimeError(f"event {event_id}: {problem}")


# --- set-up ---------------------------------------------------------------------------------------


async def register(pool: asyncpg.Pool, receivers: Receivers, secrets: list[str]) -> list[uuid.UUID]:
    """One partner and one endpoint per secret, as the API registers them; the partners."""
    partners = [uuid.uuid4() for _ in secrets]
    async with transaction(pool) as connection:
        for number, (partner_id, secret) in enumerate(zip(partners, secrets, strict=True)):
            endpoint_id = uuid.uuid4()
            await store.create_endpoint(
                connection,
                endpoint_id=endpoint_id,
                partner_id=partner_id,
                url=receivers.url(number),
                sealed_secret=BOX.seal(secret, endpoint_id),
            )
    return partners


@contextlib.asynccontextmanager
async def database(workdir: Path) -> AsyncIterator[tuple[str, int | None]]:
    """A fresh database with the notifications tables: its URL, and the server's pid if ours."""
    server_url = os.environ.get("DATABASE_URL")
    postgres = None if server_url else EmbeddedPostgres(workdir / "postgres", free_port())
    servers = ServerThread()
    name = f"fanout_{uuid.uuid4().hex[:10]}"
    try:
        if postgres is not None:
            await servers.call(postgres.start())
            server_url = postgres.url
        assert server_url is not None
        await ensure_database(server_url, name)
        try:
            url: str = database_url_for(server_url, name)
            await migrate_service(url, MIGRATIONS)
            pid = postgres.process.pid if postgres and postgres.process else None
            yield url, pid
        finally:
            with contextlib.suppress(Exception):
                await drop_database(server_url, name)
    finally:
        if postgres is not None:
            await servers.call(postgres.stop())
        servers.close()


def best(results: list[Fanout]) -> Fanout:
    return max(results, key=lambda result: result.rate)


async def timed(what: str, coroutine: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = await coroutine()
    print(f"{what} in {time.monotonic() - started:.1f} s")
    return result


async def main(args: argparse.Namespace) -> int:
    configure_logging("bench", fmt="console", level="WARNING")
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, uvloop, {load()}")
    print(
        f"settings: {args.endpoints} endpoints x {args.rounds} rounds, {args.receivers} receiver"
        f" processes, concurrency {args.concurrency} (per endpoint {args.per_endpoint}),"
        f" worker poll {args.poll_interval:g} s, memory steps {args.memory_steps}"
    )
    largest = max([args.endpoints, *args.memory_steps])
    secrets = [signing.new_secret() for _ in range(largest)]
    overall = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="maillage-fanout-") as workdir:
        secrets_file = Path(workdir) / "secrets.json"
        secrets_file.write_text(json.dumps(secrets))
        async with (
            database(Path(workdir)) as (url, postgres_pid),
            receivers(args.receivers, secrets_file) as hooks,
        ):
            pool = await create_pool(url)  # the service's pool size (10)
            try:
                cpu = CpuMeter(
                    {"postgres": postgres_pid}
                    | {f"r{i}": p.pid for i, p in enumerate(hooks.processes)}
                )
                partners = await timed(
                    f"{largest} endpoints registered", lambda: register(pool, hooks, secrets)
                )
                bench = Bench(args, pool, hooks, secrets, partners, cpu)
                await bench.raw(WARM_UP)
                await bench.worker(WARM_UP)
                print(f"set up and warmed up in {time.monotonic() - overall:.0f} s")
                # First, while this process has seen no fan-out larger than the warm-up's.
                memory = [await bench.worker(n, memory=True) for n in args.memory_steps]
                raws: list[Fanout] = []
                workers: list[Fanout] = []
                for round_ in range(args.rounds):
                    if round_ % 2 == 0:
                        raws.append(await bench.raw(args.endpoints))
                        workers.append(await bench.worker(args.endpoints))
                    else:
                        workers.append(await bench.worker(args.endpoints))
                        raws.append(await bench.raw(args.endpoints))
                    print(f"round {round_ + 1}:")
                    print(f"  raw httpx  {raws[-1]}")
                    print(f"  worker     {workers[-1]}")
            finally:
                await pool.close()
    raw, ours = best(raws), best(workers)
    ratio = ours.rate / raw.rate
    fanout_ratio = ours.endpoints / (ours.seconds - ours.wait) / raw.rate
    print()
    print(f"best of {args.rounds} (every delivery verified with standardwebhooks, once each):")
    print(f"  raw httpx  {raw}")
    print(f"  worker     {ours}")
    print(
        f"enqueue -> last delivery {ours.seconds:.2f} s for {ours.endpoints} endpoints "
        f"(target <= 2 s: {'met' if ours.seconds <= 2 else 'MISSED'})"
    )
    print(
        f"worker / raw = {ratio:.2f} (target >= 0.7: {'met' if ratio >= 0.7 else 'MISSED'}); "
        f"from the first attempt {fanout_ratio:.2f}"
    )
    print("memory (one worker fan-out each, before the rounds, smallest first):")
    for result in memory:
        print(f"  {result.endpoints:5d} endpoints  {result}")
    print(f"{load()}; total {time.monotonic() - overall:.0f} s")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--receivers", type=int, default=4, help="receiver processes")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="requests in flight (the service's default)"
    )
    parser.add_argument("--per-endpoint", type=int, default=4, help="the service's default")
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="the worker's (the service's default)"
    )
    parser.add_argument(
        "--memory-steps",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[250, 1000, 4000],
        help="endpoint counts of the memory runs, comma-separated",
    )
    parser.add_argument("--timeout", type=float, default=120, help="bound of every wait, s")
    parser.add_argument("--serve-receiver", nargs=2, metavar=("PORT", "SECRETS"), help="internal")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    if arguments.serve_receiver:
        serve_receiver(int(arguments.serve_receiver[0]), Path(arguments.serve_receiver[1]))
        sys.exit(0)
    import uvloop

    sys.exit(uvloop.run(main(arguments)))
