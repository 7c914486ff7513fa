"""Stages de 3e at national scale: search by distance and week through the service over HTTP
against the same SQL by raw asyncpg; then concurrent applications and acceptances, and the
overbooking counted in the database afterwards.

Run from the repository root::

    .venv/bin/python bench/stages3e_search.py [--offers 100000] [--searches 1000]

It starts its own embedded broker and PostgreSQL on free loopback ports (or uses
``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL``: a server URL on which it creates and drops its own
database), migrates the stages3e database and seeds it in SQL (COPY), with a fixed seed:

- 7,000 verified collèges (one in six REP or REP+, one in ten near a QPV) and 2,000 verified
  hosts, around 120 synthetic towns of metropolitan France plus the Val-de-Marne (Orly), each
  town's places spread over a few kilometres;
- ``--offers`` published offers (100,000) at their host's place (a few hundred metres apart),
  each over 1 to 3 of the 36 first weeks of the next school year, 1 to 4 seats a week, a third
  of them with a reserved seat; then ANALYZE.

Then it runs the stages3e app as a real process (``uvicorn maillage.stages3e.app:create
--factory``, as ``maillage dev`` does) with a local JWKS server, and times from this process,
in ``--rounds`` rounds (5):

(s) ``--searches`` ``GET /offers?week=…&radius_km=10`` one after the other, each by another
    collège with a new ``school`` token (the service checks the token, reads the school,
    searches from its place, shapes 20 offers), after 50 untimed;
(t) the same searches again with the same tokens (a collège paging or refining its search: the
    token and the school's record were seen a few seconds before);
(h) as many ``GET /livez``: the HTTP server, the middlewares and the routing alone (the floor
    of any request: no token, no database, no span);
(r) the same searches' SQL by raw asyncpg on one connection: ``store.search_offers`` (the
    service's own query text, asyncpg records to dicts, nothing else), same parameters;
(w) ``--applications`` ``POST /applications`` from 16 clients on 100 offers of one week and 5
    seats each (collèges and pupils all different), then every one's ``accept`` by its host from
    16 clients: throughput of each, and, counted in the database afterwards, accepted
    applications per week against its seats (overbooked weeks must be 0).

(s) and (t) go through a lean client (:class:`LeanClient`: one keep-alive connection, requests
written by hand, answers read by their length) rather than httpx, whose own work (about a
millisecond a request, on the same two cores) is not the service's (``--client httpx`` times
through httpx, as before); (w) uses httpx. ``--variant LABEL=TREE`` (repeatable) runs the service
from each tree given, exported by ``git archive`` (its chassis and stages3e code first on
``PYTHONPATH``), every variant in each round, so that versions are compared under the same load;
``--profile FILE`` runs the service under cProfile.

Figures: p50 / p95 / p99 / max per round, then the median over the rounds of each p50 and p99,
and the ratios service / raw. It is not a test: it
prints figures, every wait is bounded by ``--timeout``, and it prints the load average at start
and end (the machine may be shared: run it when nothing else runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from backbone import CpuMeter, load
from cordees_requests import figures, percentile, run_clients, settle, stack

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import drop_database, ensure_database, free_port, wait_for_tcp
from maillage.common.db import migrate_service
from maillage.common.logging import configure_logging
from maillage.stages3e import domain, store
from maillage.stages3e.app import MIGRATIONS

sys.path.append(str(Path(__file__).resolve().parent.parent / "libs" / "common" / "tests"))
from jwt_fixtures import AUDIENCE, ISSUER, JWKSServer, SigningKey, claims, ed25519_key

DATABASE = "bench_stages3e"
COLLEGES = 7_000
HOSTS = 2_000
TOWNS = 120
WEEKS = 36
ORLY = (48.7465, 2.3920)


def token(key: SigningKey, partner_id: uuid.UUID, *roles: str) -> str:
    return key.sign(
        claims(
            sub=f"bench-{partner_id}",
            partner_id=str(partner_id),
            roles=list(roles),
            exp=int(time.time()) + 7200,
            jti=str(uuid.uuid4()),  # as the registry's: every token a new string
        )
    )


class LeanClient:
    """One keep-alive HTTP/1.1 connection: each request written by hand, each answer read by its
    ``Content-Length``. Against httpx (about 1 ms of this process's CPU per request, on the same
    two cores as the service), it times the service and the loopback, not the client."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> LeanClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def connect(self) -> None:
        """A new connection: each phase starts with one (uvicorn closes a connection idle for
        5 s, as between two variants' phases)."""
        await self.__aexit__()
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, target: str, authorization: str) -> tuple[int, bytes]:
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(
            f"GET {target} HTTP/1.1\r\nhost: {self.host}\r\n"
            f"authorization: {authorization}\r\n\r\n".encode()
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines[1:]
            if line.lower().startswith(b"content-length:")
        )
        return int(lines[0].split(b" ", 2)[1]), await self._reader.readexactly(length)


# --- the national instance, in SQL ---------------------------------------------------------------


def towns(rng: random.Random) -> list[tuple[float, float]]:
    """Synthetic towns in metropolitan France's box, and Orly."""
    return [ORLY] + [(rng.uniform(43.2, 50.8), rng.uniform(-1.8, 7.5)) for _ in range(TOWNS)]


def near(rng: random.Random, place: tuple[float, float], km: float) -> tuple[float, float]:
    return (place[0] + rng.gauss(0, km / 111), place[1] + rng.gauss(0, km / 74))


async def seed(url: str, rng: random.Random, offers: int, start_year: int) -> dict[str, Any]:
    """COPY the partners, offers and weeks; what the phases need (schools, weeks)."""
    places = towns(rng)
    weeks = domain.weeks_of_school_year(start_year)[:WEEKS]
    colleges = []
    for n in range(COLLEGES):
        status = "REP+" if n % 18 == 0 else "REP" if n % 6 == 0 else None
        latitude, longitude = near(rng, rng.choice(places), 4)
        colleges.append(
            (uuid.uuid4(), "college", f"Collège {n}", "verified", "94", "24", latitude,
             longitude, status, n % 10 == 0, 1)
        )  # fmt: skip
    hosts = []
    for n in range(HOSTS):
        latitude, longitude = near(rng, rng.choice(places), 4)
        hosts.append(
            (uuid.uuid4(), "entreprise", f"Entreprise {n}", "verified", "94", "24", latitude,
             longitude, None, None, 1)
        )  # fmt: skip
    offer_rows, week_rows = [], []
    for n in range(offers):
        host = hosts[n % HOSTS]
        offer_id = uuid.uuid4()
        latitude, longitude = near(rng, (host[6], host[7]), 0.3)
        offer_rows.append(
            (offer_id, host[0], f"Stage {n} : découverte du métier", "Une semaine d'observation.",
             rng.choice(list(domain.SECTORS)), latitude, longitude, start_year, "published", "94",
             "24")
        )  # fmt: skip
        reserved = 1 if n % 3 == 0 else 0
        for week in rng.sample(weeks, rng.randint(1, 3)):
            seats = rng.randint(1, 4)
            week_rows.append((offer_id, week.monday, str(week), seats, min(reserved, seats)))
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "partners",
                records=colleges + hosts,
                columns=["partner_id", "kind", "legal_name", "status", "departement", "academie",
                         "latitude", "longitude", "education_prioritaire", "qpv_proximity",
                         "version"],
            )  # fmt: skip
            await connection.copy_records_to_table(
                "stage_offers",
                records=offer_rows,
                columns=["id", "partner_id", "title", "description", "sector", "latitude",
                         "longitude", "school_year", "status", "departement", "academie"],
            )  # fmt: skip
            # Each week carries its offer's point, as store.put_week writes it.
            await connection.execute(
                "CREATE TEMPORARY TABLE weeks_in (offer_id uuid, monday date, week text,"
                " seats int, reserved int) ON COMMIT DROP"
            )
            await connection.copy_records_to_table(
                "weeks_in",
                records=week_rows,
                columns=["offer_id", "monday", "week", "seats", "reserved"],
            )
            await connection.execute(
                "INSERT INTO offer_weeks (offer_id, monday, week, seats, reserved, location)"
                " SELECT w.offer_id, w.monday, w.week, w.seats, w.reserved, o.location"
                " FROM weeks_in w JOIN stage_offers o ON o.id = w.offer_id"
            )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return {"colleges": colleges, "hosts": hosts, "weeks": weeks, "week_rows": len(week_rows)}


PROFILED = """
import cProfile, signal, sys, uvicorn
profiler = cProfile.Profile()
def stop(*_):
    profiler.disable()
    profiler.dump_stats({path!r})
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
profiler.enable()
uvicorn.run("maillage.stages3e.app:create", factory=True, host="127.0.0.1", port={port},
            access_log=False, proxy_headers=False, timeout_graceful_shutdown=5)
"""

# --- the service as a process --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def service(
    url: str,
    bootstrap: str,
    idempotent: bool,
    jwks_url: str,
    timeout: float,
    log: Path,
    profile: Path | None = None,
    source: Path | None = None,
) -> AsyncIterator[tuple[str, int]]:
    """The stages3e app under uvicorn, ready; yields its base URL and process id. With
    ``profile``, uvicorn runs under cProfile, which writes its statistics there when it stops. With
    ``source`` (a tree exported by ``git archive``), the service runs that tree's chassis and
    stages3e code instead of this one's."""
    port = free_port()
    env = {
        **os.environ,
        "STAGES3E_DATABASE_URL": url,
        "STAGES3E_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STAGES3E_KAFKA_IDEMPOTENT_PRODUCER": str(idempotent),
        "STAGES3E_MIGRATE_ON_START": "false",
        "STAGES3E_JWT_ISSUER": ISSUER,
        "STAGES3E_JWT_AUDIENCE": AUDIENCE,
        "STAGES3E_JWKS_URL": jwks_url,
        "STAGES3E_LOG_LEVEL": "WARNING",
        "STAGES3E_WRITES_PER_MINUTE": "100000",
        "STAGES3E_DATABASE_POOL_MAX": "20",
    }
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            str(source / part) for part in ("libs/common/src", "services/stages3e/src")
        )
    command = [
        sys.executable, "-m", "uvicorn", "maillage.stages3e.app:create", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        # as deployed (Dockerfile) and as maillage dev runs it: the service reads
        # X-Forwarded-For itself (TRUSTED_PROXIES)
        "--no-proxy-headers", "--timeout-graceful-shutdown", "5",
    ]  # fmt: skip
    if profile is not None:
        # uvicorn raises SIGTERM again once stopped: the profile is written by that handler.
        command = [sys.executable, "-c", PROFILED.format(path=str(profile), port=port)]
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"the service exited ({process.returncode}): see {log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service was not ready in {timeout:.0f} s: see {log}")
                if await wait_for_tcp("127.0.0.1", port, timeout=0.5):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get("/readyz")).status_code == 200:
                            break
                await asyncio.sleep(0.2)
        yield base, process.pid
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await asyncio.wait_for(process.wait(), 5)


# --- phases --------------------------------------------------------------------------------------


class HttpxClient:
    """httpx behind :class:`LeanClient`'s interface (``--client httpx``)."""

    def __init__(self, base: str) -> None:
        self._http = httpx.AsyncClient(base_url=base, timeout=60)

    async def __aenter__(self) -> HttpxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def connect(self) -> None:
        """httpx opens connections itself."""

    async def get(self, target: str, authorization: str) -> tuple[int, bytes]:
        answer = await self._http.get(target, headers={"Authorization": authorization})
        return answer.status_code, answer.content


def search_targets(key: SigningKey, searches: Sequence[tuple[Any, Any]]) -> list[tuple[str, str]]:
    """Each search's request target and Authorization header: a token of its own collège."""
    return [
        (
            f"/offers?week={week}&radius_km=10",
            f"Bearer {token(key, college[0], 'partner', 'school')}",
        )
        for college, week in searches
    ]


async def search_phase(
    http: LeanClient | HttpxClient, targets: Sequence[tuple[str, str]]
) -> tuple[list[float], list[int]]:
    latencies, found = [], []
    await http.connect()
    for target, authorization in targets:
        start = time.perf_counter()
        status, body = await http.get(target, authorization)
        latencies.append(time.perf_counter() - start)
        if status != 200:
            raise RuntimeError(f"GET /offers: {status} {body[:500]!r}")
        found.append(len(json.loads(body)["items"]))
    return latencies, found


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def floor_phase(http: LeanClient | HttpxClient, count: int) -> list[float]:
    """(h) ``GET /livez``: the HTTP server, the middlewares and the routing, nothing else (no
    token, no database, no span: /livez is not traced)."""
    latencies = []
    await http.connect()
    for _ in range(count):
        start = time.perf_counter()
        status, body = await http.get("/livez", "")
        latencies.append(time.perf_counter() - start)
        if status != 200:
            raise RuntimeError(f"GET /livez: {status} {body[:500]!r}")
    return latencies


async def raw_phase(url: str, searches: Sequence[tuple[Any, Any]], today: date) -> list[float]:
    connection = await asyncpg.connect(url)
    await connection.set_type_codec(  # as the service's pool decodes jsonb
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )
    latencies = []
    try:
        for college, week in searches:
            start = time.perf_counter()
            await store.search_offers(
                connection,
                latitude=college[6],
                longitude=college[7],
                radius_m=10_000,
                mondays=[week.monday],
                sector=None,
                text=None,
                school_eligible=college[8] is not None or bool(college[9]),
                today=today,
                reserved_open_days=domain.RESERVED_OPEN_DAYS,
                after=None,
                limit=21,
            )
            latencies.append(time.perf_counter() - start)
    finally:
        await connection.close()
    return latencies


async def write_phase(
    http: httpx.AsyncClient, url: str, key: SigningKey, instance: dict[str, Any], count: int
) -> None:
    """(w): 100 offers of one week, 5 seats each; ``count`` applications, then acceptances."""
    week = instance["weeks"][20]
    hosts = instance["hosts"][:100]
    offers = []
    for host in hosts:
        body = {
            "title": "Stage très demandé",
            "description": "Une semaine.",
            "sector": "Q",
            "weeks": [{"week": str(week), "seats": 5}],
        }
        answer = await http.post(
            "/offers",
            json=body,
            headers={"Authorization": f"Bearer {token(key, host[0], 'partner')}"},
        )
        if answer.status_code != 201:
            raise RuntimeError(f"POST /offers: {answer.status_code} {answer.text}")
        offers.append((answer.json()["id"], host[0]))
    colleges = instance["colleges"]
    asks = [(offers[n % 100], colleges[n % len(colleges)], f"P-{n}") for n in range(count)]

    async def apply(ask: Any) -> float:
        (offer_id, _), college, pupil = ask
        start = time.perf_counter()
        answer = await http.post(
            "/applications",
            json={"offer_id": offer_id, "week": str(week), "pupil_reference": pupil},
            headers={"Authorization": f"Bearer {token(key, college[0], 'partner', 'school')}"},
        )
        if answer.status_code != 201:
            raise RuntimeError(f"POST /applications: {answer.status_code} {answer.text}")
        ids.append((answer.json()["id"], ask[0][1]))
        return time.perf_counter() - start

    ids: list[tuple[str, uuid.UUID]] = []
    started = time.perf_counter()
    applied = await run_clients(16, asks, apply)
    applying = time.perf_counter() - started
    statuses: dict[int, int] = {}

    async def accept(item: Any) -> float:
        application_id, host_id = item
        start = time.perf_counter()
        answer = await http.post(
            f"/applications/{application_id}/accept",
            headers={"Authorization": f"Bearer {token(key, host_id, 'partner')}"},
        )
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        if answer.status_code not in (200, 409):
            raise RuntimeError(f"accept: {answer.status_code} {answer.text}")
        return time.perf_counter() - start

    started = time.perf_counter()
    accepted = await run_clients(16, ids, accept)
    accepting = time.perf_counter() - started
    connection = await asyncpg.connect(url)
    try:
        overbooked = await connection.fetchval(
            """
            SELECT count(*) FROM offer_weeks w
            WHERE w.seats < (SELECT count(*) FROM applications a WHERE a.offer_id = w.offer_id
                             AND a.monday = w.monday AND a.status IN ('accepted', 'confirmed'))
               OR w.held <> (SELECT count(*) FROM applications a WHERE a.offer_id = w.offer_id
                             AND a.monday = w.monday AND a.status IN ('accepted', 'confirmed'))
            """
        )
        held = await connection.fetchval(
            "SELECT count(*) FROM applications WHERE status = 'accepted'"
        )
    finally:
        await connection.close()
    print(f"\n(w) {count:,} applications on 100 offers (5 seats each), 16 clients:")
    print(f"    apply    {figures(applied)}   ({count / applying:.0f} /s)")
    print(f"    accept   {figures(accepted)}   ({count / accepting:.0f} /s), answers {statuses}")
    print(f"    accepted in the database: {held} of 500 seats; overbooked weeks: {overbooked}")


async def main(args: argparse.Namespace) -> int:
    configure_logging("bench", fmt="console", level="WARNING")
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {load()}")
    overall = time.monotonic()
    today = datetime.now(UTC).date()
    start_year = domain.current_school_year(today + timedelta(days=120))
    rng = random.Random(args.seed)  # noqa: S311  (synthetic data, repeatable by seed)
    jwks = JWKSServer()
    jwks.start()
    key = ed25519_key()
    jwks.publish(key)
    try:
        with tempfile.TemporaryDirectory(prefix="maillage-bench-") as workdir:
            async with stack(Path(workdir), args.timeout) as (bootstrap, server_url, idem, pids):
                await ensure_database(server_url, DATABASE)
                try:
                    url = database_url_for(server_url, DATABASE)
                    await migrate_service(url, MIGRATIONS)
                    started = time.monotonic()
                    instance = await seed(url, rng, args.offers, start_year)
                    print(
                        f"instance: {COLLEGES:,} collèges, {HOSTS:,} hosts, {args.offers:,} "
                        f"offers over {WEEKS} weeks of {start_year}-{start_year + 1} "
                        f"({instance['week_rows']:,} offer weeks); seeded in "
                        f"{time.monotonic() - started:.1f} s"
                    )
                    future = [w for w in instance["weeks"] if w.monday > today]
                    searches = [
                        (rng.choice(instance["colleges"]), rng.choice(future))
                        for _ in range(args.searches + 50)
                    ]
                    settle()
                    log = Path(tempfile.gettempdir()) / f"bench-stages3e-{os.getpid()}.log"
                    variants: list[tuple[str, Path | None]] = [
                        (label, Path(root)) for label, _, root in
                        (variant.partition("=") for variant in args.variant)
                    ] or [("service", None)]  # fmt: skip
                    rounds: dict[str, list[dict[str, list[float]]]] = {
                        label: [] for label, _ in variants
                    }
                    raws: list[list[float]] = []
                    # CPU per request: the service's process, PostgreSQL's processes, and this
                    # process for the raw phase. Less sensitive to a shared machine's load than
                    # latencies are.
                    cpus: dict[str, list[float]] = {}
                    meter = CpuMeter({"postgres": pids.get("postgres")})
                    service_pids: dict[str, int] = {}

                    def cpu_now(label: str | None) -> tuple[float, float, float]:
                        sample = meter.sample()
                        own = sample["bench"] if label is None else cpu_seconds(service_pids[label])
                        return own, sample.get("postgres", float("nan")), sample["bench"]

                    def cpu_since(
                        key: str, start: tuple[float, float, float], label: str | None
                    ) -> None:
                        end = cpu_now(label)
                        for n, part in enumerate(("own", "pg", "client")):
                            per_search = (end[n] - start[n]) / args.searches
                            cpus.setdefault(f"{key} {part}", []).append(per_search)

                    found: list[int] = []
                    async with contextlib.AsyncExitStack() as running:
                        clients: dict[str, LeanClient | HttpxClient] = {}
                        for label, source in variants:
                            base, service_pids[label] = await running.enter_async_context(
                                service(
                                    url, bootstrap, idem, jwks.url, args.timeout,
                                    log.with_suffix(f".{label}.log"), args.profile, source,
                                )
                            )  # fmt: skip
                            client = HttpxClient if args.client == "httpx" else LeanClient
                            clients[label] = await running.enter_async_context(client(base))
                            await search_phase(clients[label], search_targets(key, searches[:50]))
                        for n in range(args.rounds):
                            print(f"\nround {n + 1}, {load()}")
                            for label, _ in variants:
                                targets = search_targets(key, searches[50:])
                                start = cpu_now(label)
                                served, found = await search_phase(clients[label], targets)
                                cpu_since(f"(s) {label}", start, label)
                                start = cpu_now(label)
                                again, _ = await search_phase(clients[label], targets)
                                cpu_since(f"(t) {label}", start, label)
                                floor = await floor_phase(clients[label], len(targets))
                                rounds[label].append({"s": served, "t": again, "h": floor})
                                print(f"{label}: (s) new tokens   {figures(served)}")
                                print(f"{label}: (t) same tokens  {figures(again)}")
                                print(f"{label}: (h) GET /livez   {figures(floor)}")
                            start = cpu_now(None)
                            raws.append(await raw_phase(url, searches[50:], today))
                            cpu_since("(r)", start, None)
                            print(f"(r) raw asyncpg, SQL      {figures(raws[-1])}")
                        if args.applications:
                            http = await running.enter_async_context(
                                httpx.AsyncClient(base_url=base, timeout=args.timeout)
                            )
                            await write_phase(http, url, key, instance, args.applications)
                    for label, _ in variants:
                        with contextlib.suppress(FileNotFoundError):
                            log.with_suffix(f".{label}.log").unlink()
                    print(
                        f"\nsearch by distance (10 km) and week, {args.searches:,} collèges, "
                        f"medians of {args.rounds} rounds' figures (ms); offers found per "
                        f"search: p50 {percentile(found, 0.5)}, max {max(found)}"
                    )

                    def median_of(series: list[list[float]], fraction: float) -> float:
                        return 1000 * statistics.median(percentile(one, fraction) for one in series)

                    raw50, raw99 = median_of(raws, 0.5), median_of(raws, 0.99)
                    print(f"{'(r) raw asyncpg, same SQL':40}  p50 {raw50:6.2f}   p99 {raw99:6.2f}")
                    for label, _ in variants:
                        for phase, name in (
                            ("s", "new tokens"),
                            ("t", "same tokens"),
                            ("h", "GET /livez"),
                        ):
                            series = [one[phase] for one in rounds[label]]
                            p50, p99 = median_of(series, 0.5), median_of(series, 0.99)
                            print(
                                f"{f'({phase}) {label}, {name}':40}  p50 {p50:6.2f}   p99 "
                                f"{p99:6.2f}   ratio to (r): p50 {p50 / raw50:.2f}, p99 "
                                f"{p99 / raw99:.2f}"
                            )
                    print(
                        "CPU per search (ms, medians): service (or raw client), PostgreSQL, "
                        "this process as the HTTP client"
                    )
                    for name in sorted({key.rsplit(" ", 1)[0] for key in cpus}):
                        own, database, client = (
                            1000 * statistics.median(cpus[f"{name} {part}"])
                            for part in ("own", "pg", "client")
                        )
                        client_text = f"{client:6.2f}" if name != "(r)" else "     -"
                        print(f"    {name:30}  {own:6.2f}  {database:6.2f}  {client_text}")
                finally:
                    await drop_database(server_url, DATABASE)
    finally:
        jwks.stop()
    print(f"\ntotal run time {time.monotonic() - overall:.0f} s, {load()}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offers", type=int, default=100_000)
    parser.add_argument("--searches", type=int, default=1_000)
    parser.add_argument("--applications", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--rounds", type=int, default=5, help="search rounds, medians printed")
    parser.add_argument(
        "--profile", type=Path, help="run the service under cProfile, statistics to this file"
    )
    parser.add_argument("--client", choices=["lean", "httpx"], default="lean")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=TREE",
        help="run the service from this exported tree (git archive) too; repeatable; rounds "
        "alternate between the variants",
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
