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
--factory``, as ``maillage dev`` does) with a local JWKS server, and times from this process:

(s) ``--searches`` ``GET /offers?week=…&radius_km=10`` one after the other, each by another
    collège with its own ``school`` token (the service reads the school, searches from its
    place, reads the weeks of the page's offers and shapes 20 offers), after 50 untimed;
(r) the same searches' SQL by raw asyncpg on one connection: ``store.search_offers`` (the
    service's own query text, asyncpg records to dicts, nothing else), same parameters;
(w) ``--applications`` ``POST /applications`` from 16 clients on 100 offers of one week and 5
    seats each (collèges and pupils all different), then every one's ``accept`` by its host from
    16 clients: throughput of each, and, counted in the database afterwards, accepted
    applications per week against its seats (overbooked weeks must be 0).

Figures: p50 / p95 / p99 / max and the ratio service / raw at p50 and p99. It is not a test: it
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
from backbone import load
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
        )
    )


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


# --- the service as a process --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def service(
    url: str, bootstrap: str, idempotent: bool, jwks_url: str, timeout: float, log: Path
) -> AsyncIterator[str]:
    """The stages3e app under uvicorn, ready; yields its base URL."""
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
    command = [
        sys.executable, "-m", "uvicorn", "maillage.stages3e.app:create", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        "--timeout-graceful-shutdown", "5",
    ]  # fmt: skip
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
        yield base
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await asyncio.wait_for(process.wait(), 5)


# --- phases --------------------------------------------------------------------------------------


async def search_phase(
    http: httpx.AsyncClient, key: SigningKey, searches: Sequence[tuple[Any, Any]]
) -> tuple[list[float], list[int]]:
    latencies, found = [], []
    for college, week in searches:
        headers = {"Authorization": f"Bearer {token(key, college[0], 'partner', 'school')}"}
        params = {"week": str(week), "radius_km": 10}
        start = time.perf_counter()
        answer = await http.get("/offers", params=params, headers=headers)
        latencies.append(time.perf_counter() - start)
        if answer.status_code != 200:
            raise RuntimeError(f"GET /offers: {answer.status_code} {answer.text}")
        found.append(len(answer.json()["items"]))
    return latencies, found


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
            async with stack(Path(workdir), args.timeout) as (bootstrap, server_url, idem, _):
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
                    async with (
                        service(url, bootstrap, idem, jwks.url, args.timeout, log) as base,
                        httpx.AsyncClient(base_url=base, timeout=args.timeout) as http,
                    ):
                        await search_phase(http, key, searches[:50])
                        served, found = await search_phase(http, key, searches[50:])
                        await write_phase(http, url, key, instance, args.applications)
                    log.unlink()
                    raw = await raw_phase(url, searches[50:], today)
                    print(f"\nsearch by distance (10 km) and week, {args.searches:,} collèges:")
                    print(f"(s) service over HTTP  {figures(served)}")
                    print(f"(r) raw asyncpg, SQL   {figures(raw)}")
                    print(
                        f"    offers found per search: p50 {percentile(found, 0.5)}, max "
                        f"{max(found)}; ratio (s)/(r): p50 "
                        f"{percentile(served, 0.5) / percentile(raw, 0.5):.2f}, p99 "
                        f"{percentile(served, 0.99) / percentile(raw, 0.99):.2f}"
                    )
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
    sys.exit(asyncio.run(main(parser.parse_args())))
