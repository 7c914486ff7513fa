"""Cordées single-request latency: ``POST /match-requests`` of the running service over a national
read model, against raw baselines.

Run from the repository root::

    .venv/bin/python bench/cordees_requests.py [--requests 1500] [--concurrency 4]

It starts its own embedded broker and PostgreSQL on free loopback ports (or uses
``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL``: a server URL on which it creates and drops its own
database), creates and migrates the cordees database, and seeds it in SQL (COPY) with the
national instance of ``cordees_matching.py`` (same generator, same seed): 10,000 verified
collèges and lycées with their REP+/REP/QPV shares and coordinates, and 1,500 têtes de cordée
with one open offer each for the current school year. Then it runs the cordees app as a real
process (``uvicorn maillage.cordees.app:create --factory``, as ``maillage dev`` does), with a
local JWKS server, and times from this process, over HTTP:

(s) ``--requests`` ``POST /match-requests`` one after the other, each by another school with its
    own ``school`` token and an ``Idempotency-Key``, after ``--warm-up`` untimed ones;
(c) as many with ``--concurrency`` clients at once (other schools again).

Each answer must be a 202 (the run stops otherwise). Then, with the service stopped, on the
same database, for ``--requests`` requests of other schools, the baselines and the breakdown:

(a) raw asyncpg, the SQL work of one request: read the school, read the offers it may reach
    (the service's prefilter, in SQL), insert a request row and an outbox row, commit (one
    connection, no pool, no model, no event);
(b) the pure ranking: ``rank_candidates`` over those offers, as the service ranks them (and,
    for scale, over every open offer);
(d) the service's read, ``matcher.reachable_offers`` (SQL and Offer objects), against reading
    and building every open offer of the year (``store.open_offers``, what a request did before);
    the ranking over the reachable offers must equal the ranking over every offer, request by
    request (printed: identical / different).

Figures: p50 / p95 / p99 / max of each, the service's CPU per request (service process and
PostgreSQL, from /proc) and service / (a + b). It is not a test: it prints figures, every wait
is bounded by ``--timeout``, and the load average is printed at start and end (the machine may
be shared: run it when nothing else runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from backbone import CpuMeter, ServerThread, load
from cordees_matching import THEMATICS, build_instance

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    drop_database,
    ensure_database,
    free_port,
    wait_for_tcp,
)
from maillage.common.db import create_pool, migrate_service
from maillage.common.logging import configure_logging
from maillage.cordees import domain, matcher, store
from maillage.cordees.app import MIGRATIONS

sys.path.append(str(Path(__file__).resolve().parent.parent / "libs" / "common" / "tests"))
from jwt_fixtures import AUDIENCE, ISSUER, JWKSServer, SigningKey, claims, ed25519_key

DATABASE = "bench_cordees"
READ_MODEL = 10_000  # schools in the read model
# The generator's thematics in the API's vocabulary.
API_THEMATICS = {
    "sciences": "sciences",
    "numérique": "numerique",
    "santé": "sante",
    "droit": "droit",
    "service public": "service_public",
    "arts": "arts",
    "ingénierie": "ingenierie",
}
EDUCATION_PRIORITAIRE = {domain.PriorityClass.REP_PLUS: "REP+", domain.PriorityClass.REP: "REP"}


@dataclass(frozen=True)
class Ask:
    """One match request of one school: its body and its token."""

    school: domain.School
    body: dict[str, Any]
    token: str


# --- the national read model, in SQL -------------------------------------------------------------


async def seed(url: str, seed_value: int, year: str) -> list[domain.School]:
    """COPY the instance's first 10,000 schools and its têtes with their offers; the schools."""
    instance = build_instance(seed_value)
    schools = instance.schools[:READ_MODEL]
    partners = [
        (
            s.partner_id,
            s.kind,
            f"{'Collège' if s.kind == 'college' else 'Lycée'} {s.uai}",
            "verified",
            s.uai,
            s.departement,
            s.academie,
            s.latitude,
            s.longitude,
            EDUCATION_PRIORITAIRE.get(s.priority),
            s.priority is domain.PriorityClass.QPV_OR_RURAL,
            1,
        )
        for s in schools
    ] + [
        (
            o.tete_partner_id,
            "etablissement_superieur",
            f"Tête de cordée {n}",
            "verified",
            None,
            None,
            o.academies[0] if o.academies else None,
            o.latitude,
            o.longitude,
            None,
            None,
            1,
        )
        for n, o in enumerate(instance.offers)
    ]
    offers = [
        (
            o.offer_id,
            o.tete_partner_id,
            year,
            o.remaining_capacity,
            list(o.levels),
            sorted(API_THEMATICS[t] for t in o.thematics),
            o.max_distance_km,
            list(o.academies),
        )
        for o in instance.offers
    ]
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "partners",
                records=partners,
                columns=[c.strip() for c in store.PARTNER_COLUMNS.split(",")],
            )
            await connection.copy_records_to_table(
                "cordee_offers",
                records=offers,
                columns=[
                    "id",
                    "tete_partner_id",
                    "school_year",
                    "capacity",
                    "levels",
                    "thematics",
                    "max_distance_km",
                    "academies",
                ],
            )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return schools


def asks(
    schools: Sequence[domain.School], key: SigningKey, year: str, seed_value: int
) -> list[Ask]:
    """One request per school, in a random order, each with its own token (valid 2 hours)."""
    rng = random.Random(seed_value + 1)  # noqa: S311  (synthetic data, repeatable by seed)
    order = list(schools)
    rng.shuffle(order)
    out = []
    for school in order:
        token = key.sign(
            claims(
                sub=f"school-{school.uai}",
                partner_id=str(school.partner_id),
                roles=["partner", "school"],
                exp=int(time.time()) + 7200,
            )
        )
        body = {
            "school_year": year,
            "thematics": [API_THEMATICS[t] for t in rng.sample(THEMATICS, rng.randint(0, 3))],
            "max_distance_km": rng.choice((None, None, 15.0, 30.0, 50.0)),
        }
        out.append(Ask(school, body, token))
    return out


# --- the service as a process --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def service(
    url: str, bootstrap: str, idempotent: bool, jwks_url: str, timeout: float, log: Path
) -> AsyncIterator[tuple[str, int]]:
    """The cordees app under uvicorn, ready; yields its base URL and pid."""
    port = free_port()
    env = {
        **os.environ,
        "CORDEES_DATABASE_URL": url,
        "CORDEES_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CORDEES_KAFKA_IDEMPOTENT_PRODUCER": str(idempotent),
        "CORDEES_MIGRATE_ON_START": "false",
        "CORDEES_JWT_ISSUER": ISSUER,
        "CORDEES_JWT_AUDIENCE": AUDIENCE,
        "CORDEES_JWKS_URL": jwks_url,
        "CORDEES_LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "maillage.cordees.app:create",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "5",
    ]
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


async def post(http: httpx.AsyncClient, ask: Ask) -> float:
    """One match request; its latency in seconds."""
    headers = {"Authorization": f"Bearer {ask.token}", "Idempotency-Key": uuid.uuid4().hex}
    start = time.perf_counter()
    answer = await http.post("/match-requests", json=ask.body, headers=headers)
    elapsed = time.perf_counter() - start
    if answer.status_code != 202:
        raise RuntimeError(f"POST /match-requests: {answer.status_code} {answer.text}")
    return elapsed


async def run_clients(
    clients: int, items: Sequence[Ask], one: Callable[[Ask], Awaitable[float]]
) -> list[float]:
    """``one`` for every item, ``clients`` at a time; the latencies."""
    queue = list(reversed(items))
    latencies: list[float] = []

    async def client() -> None:
        while queue:
            latencies.append(await one(queue.pop()))

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


# --- the baselines, in this process --------------------------------------------------------------

# The offers one school may reach, with the service's prefilter (store.reachable_offers).
RAW_OFFERS = """
SELECT o.id, o.tete_partner_id, o.levels, o.thematics, o.max_distance_km, o.academies,
       t.latitude, t.longitude, o.capacity - taken.active AS remaining
FROM cordee_offers o JOIN partners t ON t.partner_id = o.tete_partner_id
CROSS JOIN LATERAL (SELECT count(*)::int AS active FROM pairings p
                    WHERE p.offer_id = o.id AND p.status = 'active') AS taken
WHERE o.status = 'open' AND o.school_year = $1 AND t.status = 'verified'
  AND o.capacity > taken.active AND o.tete_partner_id <> $2 AND o.levels && $3::text[]
  AND ($5::float8 IS NULL OR abs(t.latitude - $4) <= $5 + 1e-6)
  AND ((o.max_distance_km IS NULL AND o.academies = '{}')
       OR abs(t.latitude - $4) <= o.max_distance_km / $7 + 1e-6 OR $6 = ANY (o.academies))
"""


async def raw_request(connection: asyncpg.Connection, ask: Ask) -> float:
    """(a) the SQL work of one request, nothing else."""
    start = time.perf_counter()
    async with connection.transaction():
        await connection.fetchrow(
            "SELECT kind, status, latitude, longitude FROM partners WHERE partner_id = $1",
            ask.school.partner_id,
        )
        max_km = ask.body["max_distance_km"]
        await connection.fetch(
            RAW_OFFERS,
            ask.body["school_year"],
            ask.school.partner_id,
            sorted(domain.LEVELS_BY_KIND[ask.school.kind]),
            ask.school.latitude,
            None if max_km is None else max_km / matcher.KM_PER_DEGREE_OF_LATITUDE,
            ask.school.academie,
            matcher.KM_PER_DEGREE_OF_LATITUDE,
        )
        request_id = uuid.uuid4()
        await connection.execute(
            "INSERT INTO match_requests (id, school_partner_id, school_year, thematics,"
            " max_distance_km, priority, status) VALUES ($1, $2, $3, $4, $5, $6, 'unmatched')",
            request_id,
            ask.school.partner_id,
            ask.body["school_year"],
            ask.body["thematics"],
            ask.body["max_distance_km"],
            int(ask.school.priority),
        )
        await connection.execute(
            "INSERT INTO outbox (event_id, topic, key, type, headers, payload)"
            " VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
            uuid.uuid4(),
            "cordees.match-requests",
            str(request_id),
            "fr.maillage.cordees.match-request.unmatched.v1",
            '{"ce_specversion": "1.0"}',
            json.dumps({"request_id": str(request_id), "status": "unmatched"}),
        )
    return time.perf_counter() - start


def request_of(ask: Ask, n: int) -> domain.Request:
    return domain.Request(
        request_id=uuid.UUID(int=n),
        school=ask.school,
        thematics=tuple(ask.body["thematics"]),
        max_distance_km=ask.body["max_distance_km"],
        school_year=ask.body["school_year"],
    )


def settle() -> None:
    """Keep this process's own data (instance, tokens) out of the garbage collector's passes,
    which would otherwise land in the baselines' figures."""
    gc.collect()
    gc.freeze()


# --- figures -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, -(-int(fraction * len(ordered) * 1000) // 1000)) - 1]


def figures(values: Sequence[float]) -> str:
    return (
        "   ".join(
            f"{name} {percentile(values, fraction) * 1000:6.2f}"
            for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        )
        + f"   max {max(values) * 1000:6.2f} ms"
    )


@contextlib.asynccontextmanager
async def stack(
    workdir: Path, timeout: float
) -> AsyncIterator[tuple[str, str, bool, dict[str, int | None]]]:
    """Broker and PostgreSQL: bootstrap servers, server URL, idempotent producer, pids."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    server_url = os.environ.get("DATABASE_URL")
    broker = None if bootstrap else EmbeddedBroker(free_port())
    postgres = None if server_url else EmbeddedPostgres(workdir / "postgres", free_port())
    servers = ServerThread()
    try:
        if broker is not None:
            await servers.call(broker.start(timeout=timeout))
            bootstrap = broker.bootstrap_servers
        if postgres is not None:
            await servers.call(postgres.start(timeout=timeout))
            server_url = postgres.url
        assert bootstrap is not None
        assert server_url is not None
        pids = {
            "postgres": postgres.process.pid if postgres and postgres.process else None,
        }
        yield bootstrap, server_url, broker is None, pids
    finally:
        if postgres is not None:
            await servers.call(postgres.stop())
        if broker is not None:
            await servers.call(broker.stop())
        servers.close()


async def main(args: argparse.Namespace) -> int:
    configure_logging("bench", fmt="console", level="WARNING")
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {load()}")
    overall = time.monotonic()
    year = matcher.school_year_of(date.today())
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
                    schools = await seed(url, args.seed, year)
                    print(
                        f"read model: {len(schools):,} schools, "
                        f"{sum(s.priority is domain.PriorityClass.REP_PLUS for s in schools)} "
                        f"REP+, {sum(s.priority is domain.PriorityClass.REP for s in schools)} "
                        f"REP; 1,500 têtes with one open offer each ({year}); seeded in "
                        f"{time.monotonic() - started:.1f} s"
                    )
                    results = await measure(
                        args, url, bootstrap, idem, jwks.url, key, year, schools, pids
                    )
                    await baselines(args, url, key, year, schools, results)
                finally:
                    await drop_database(server_url, DATABASE)
    finally:
        jwks.stop()
    print(f"\ntotal run time {time.monotonic() - overall:.0f} s, {load()}")
    return 0


async def measure(
    args: argparse.Namespace,
    url: str,
    bootstrap: str,
    idempotent: bool,
    jwks_url: str,
    key: SigningKey,
    year: str,
    schools: list[domain.School],
    pids: dict[str, int | None],
) -> dict[str, list[float]]:
    """(s) and (c): the latencies of each phase."""
    results: dict[str, list[float]] = {}
    todo = asks(schools, key, year, args.seed)
    warm, todo = todo[: args.warm_up], todo[args.warm_up :]
    sequential, todo = todo[: args.requests], todo[args.requests :]
    concurrent = todo[: args.requests]
    settle()
    log = Path(tempfile.gettempdir()) / f"bench-cordees-{os.getpid()}.log"
    async with (
        service(url, bootstrap, idempotent, jwks_url, args.timeout, log) as (base, pid),
        httpx.AsyncClient(
            base_url=base,
            timeout=args.timeout,
            limits=httpx.Limits(max_connections=args.concurrency),
        ) as http,
    ):
        await run_clients(1, warm, lambda ask: post(http, ask))
        cpu = CpuMeter({"service": pid, **pids})
        before = cpu.sample()
        started = time.perf_counter()
        results["sequential"] = await asyncio.wait_for(
            run_clients(1, sequential, lambda ask: post(http, ask)), args.timeout
        )
        elapsed = time.perf_counter() - started
        after = cpu.sample()
        cpu_ms = {
            name: (after[name] - before[name]) * 1000 / len(sequential)
            for name in after
            if name != "bench"
        }
        started = time.perf_counter()
        results["concurrent"] = await asyncio.wait_for(
            run_clients(args.concurrency, concurrent, lambda ask: post(http, ask)), args.timeout
        )
        concurrent_elapsed = time.perf_counter() - started
    log.unlink()  # kept only when the service failed
    print(f"\nPOST /match-requests to the service process ({args.warm_up} untimed first):")
    print(
        f"(s) sequential, {len(sequential):,} requests   {figures(results['sequential'])}"
        f"   ({len(sequential) / elapsed:.0f} requests/s)"
    )
    print(
        "    CPU per request: "
        + " + ".join(f"{name} {ms:.2f}" for name, ms in cpu_ms.items())
        + f" = {sum(cpu_ms.values()):.2f} ms"
    )
    print(
        f"(c) {args.concurrency} clients, {len(concurrent):,} requests   "
        f"{figures(results['concurrent'])}   ({len(concurrent) / concurrent_elapsed:.0f} "
        "requests/s)"
    )
    return results


async def baselines(
    args: argparse.Namespace,
    url: str,
    key: SigningKey,
    year: str,
    schools: list[domain.School],
    results: dict[str, list[float]],
) -> None:
    todo = asks(schools, key, year, args.seed + 7)[: args.requests]
    settle()
    connection = await asyncpg.connect(url)
    try:
        for ask in todo[: args.warm_up]:
            await raw_request(connection, ask)
        raw = [await raw_request(connection, ask) for ask in todo]
    finally:
        await connection.close()
    pool = await create_pool(url, max_size=1)
    try:
        reads, builds, offers = [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            rows = await store.open_offers(pool, year)
            middle = time.perf_counter()
            offers = [matcher.offer_of(row) for row in rows]
            reads.append(middle - start)
            builds.append(time.perf_counter() - middle)
        requests = [request_of(ask, n) for n, ask in enumerate(todo)]
        reach, near = [], []
        async with pool.acquire() as connection:
            for request in requests:
                start = time.perf_counter()
                near.append(await matcher.reachable_offers(connection, request))
                reach.append(time.perf_counter() - start)
    finally:
        await pool.close()
    ranking, ranking_all, differ = [], [], 0
    for request, reachable in zip(requests, near, strict=True):
        start = time.perf_counter()
        domain.rank_candidates(request, reachable, limit=1 + matcher.ALTERNATIVES)
        ranking.append(time.perf_counter() - start)
        mine = [o for o in offers if o.tete_partner_id != request.school.partner_id]
        start = time.perf_counter()
        domain.rank_candidates(request, mine, limit=1 + matcher.ALTERNATIVES)
        ranking_all.append(time.perf_counter() - start)
        # every eligible offer, in order: the prefilter must leave none out
        everything = len(offers)
        if domain.rank_candidates(request, reachable, everything) != domain.rank_candidates(
            request, mine, everything
        ):
            differ += 1
    sizes = sorted(len(reachable) for reachable in near)
    print(f"\nbaselines, in this process, {len(todo):,} requests of other schools:")
    print(f"(a) raw asyncpg, one request's SQL     {figures(raw)}")
    print(f"(b) rank_candidates, reachable offers  {figures(ranking)}")
    print(f"    rank_candidates, all {len(offers):,} offers {figures(ranking_all)}")
    print(
        f"(d) matcher.reachable_offers           {figures(reach)}   "
        f"(offers per request: p50 {sizes[len(sizes) // 2]}, max {sizes[-1]})"
    )
    print(f"    store.open_offers, every offer     {figures(reads)}")
    print(f"    Offer objects from its rows         {figures(builds)}")
    print(
        f"    rankings over reachable vs every offer: {len(requests) - differ:,} identical, "
        f"{differ} different"
    )
    for name in ("sequential", "concurrent"):
        values = results[name]
        ratios = " ".join(
            f"{label} {percentile(values, f) / (percentile(raw, f) + percentile(ranking, f)):.2f}"
            for label, f in (("p50", 0.5), ("p99", 0.99))
        )
        print(f"service ({name[0]}) / (a + b): {ratios}")
    verdict = "met" if percentile(results["sequential"], 0.99) <= 0.020 else "MISSED"
    print(f"target p99 <= 20 ms (sequential): {verdict}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--requests", type=int, default=1_500, help="timed requests per phase")
    parser.add_argument("--warm-up", type=int, default=100, help="untimed requests first")
    parser.add_argument("--concurrency", type=int, default=4, help="clients of phase (c)")
    parser.add_argument(
        "--rounds", type=int, default=50, help="samples of reading every offer, (d)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of each wait, s")
    args = parser.parse_args(argv)
    if args.warm_up + 2 * args.requests > READ_MODEL:
        parser.error(f"warm-up + 2 × requests must stay within {READ_MODEL:,} schools")
    return args


if __name__ == "__main__":
    import uvloop

    sys.exit(uvloop.run(main(parse(sys.argv[1:]))))
