"""Cordées live flow against the offline optimum (issue 17): requests arrive one by one through
the running service, then the têtes accept what they are proposed; the schools served per
priority class must equal the campaign optimum of the same requests and offers.

Run from the repository root::

    .venv/bin/python bench/cordees_live.py [--seed 2026] [--tetes 60] [--places 967]

It starts its own embedded broker and PostgreSQL (or uses ``KAFKA_BOOTSTRAP_SERVERS`` /
``DATABASE_URL``), seeds the cordees read model in SQL with an instance the size of the issue's
real run: the REP+ and REP collèges of ``cordees_matching.py``'s national instance (same
generator and seed: 365 REP+, 735 REP, placed mostly around the big cities) and ``--tetes`` têtes
de cordée of that instance that mentor collèges, their capacities scaled to ``--places`` in all.
Then the cordees app runs as a real process (uvicorn, as ``maillage dev`` does) and, over HTTP:

(r) every collège files ``POST /match-requests`` once, one after the other, in a random order
    (each with its own ``school`` token): latency of each;
(d) ``--declines N``: then N random proposals are declined by their tête, one after the other
    (each re-solves the whole year): latency of each;
(a) then, round after round, each tête accepts every request proposed to it, in a random order
    (``POST /match-requests/{id}/accept``): latency of each, until nothing is proposed;
(o) the offline optimum, in this process: ``domain.solve_campaign`` over the same requests and
    the offers' full capacities (and the declines as exclusions).

It prints the served count per class of the live flow and of the optimum (they must be equal),
and p50 / p95 / p99 / max of (r) and (a). Not a test: every wait is bounded; the load average is
printed at start and end (the machine may be shared).

``--national`` replays the whole synthetic national instance instead: its 10,700 collèges and
lycées of every class, each with the request of ``cordees_matching.py`` (its distance limit and
thematics), and its 1,500 têtes with their places (``--requests N``: N of those schools only,
drawn at random, against the same offers).

``--in-process`` files the same requests in the same order through ``usecases.request_match``
in this process instead (one transaction each, on its own embedded PostgreSQL, no broker, no
HTTP, no acceptances): p50 / p99 and this process's CPU per thousand requests filed, and the
proposals standing at the end per class against the offline optimum (they must be equal, as no
request is accepted). ``--profile-last N``: a ``cProfile`` of the last N requests filed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import io
import os
import platform
import pstats
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import httpx
from backbone import ServerThread, load
from cordees_matching import build_instance
from cordees_requests import (
    API_THEMATICS,
    EDUCATION_PRIORITAIRE,
    figures,
    service,
    stack,
)

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import EmbeddedPostgres, drop_database, ensure_database, free_port
from maillage.common.auth import Caller
from maillage.common.db import create_pool, migrate_service, transaction
from maillage.common.logging import configure_logging
from maillage.cordees import domain, matcher, store, usecases
from maillage.cordees.app import MIGRATIONS
from maillage.cordees.domain import PriorityClass

sys.path.append(str(Path(__file__).resolve().parent.parent / "libs" / "common" / "tests"))
from jwt_fixtures import JWKSServer, SigningKey, claims, ed25519_key

DATABASE = "bench_cordees_live"


def instance(
    seed: int, tetes: int, places: int, year: str
) -> tuple[list[domain.School], list[domain.Offer]]:
    """The REP+ and REP collèges of the national instance, and ``tetes`` of its offers that
    mentor collèges (4e, 3e), from the cities with most of them, capacities scaled to
    ``places``."""
    national = build_instance(seed)
    schools = [
        s
        for s in national.schools
        if s.kind == "college" and s.priority in (PriorityClass.REP_PLUS, PriorityClass.REP)
    ]
    rng = random.Random(seed + 7)  # noqa: S311  (synthetic data, repeatable by seed)
    mentoring = [o for o in national.offers if "3e" in o.levels]
    chosen = rng.sample(mentoring, tetes)
    total = sum(o.remaining_capacity for o in chosen)
    capacities = [max(1, round(o.remaining_capacity * places / total)) for o in chosen]
    capacities[-1] += places - sum(capacities)
    offers = [
        domain.Offer(
            offer_id=o.offer_id,
            tete_partner_id=o.tete_partner_id,
            latitude=o.latitude,
            longitude=o.longitude,
            levels=o.levels,
            thematics=o.thematics,
            max_distance_km=o.max_distance_km,
            academies=o.academies,
            remaining_capacity=capacity,
            school_year=year,
        )
        for o, capacity in zip(chosen, capacities, strict=True)
    ]
    return schools, offers


def national_instance(
    seed: int, year: str, count: int | None
) -> tuple[list[domain.School], list[domain.Request], list[domain.Offer]]:
    """The whole national instance of ``cordees_matching.py`` for ``year`` (``count`` of its
    schools only, drawn at random): schools, their requests, offers."""
    national = build_instance(seed)
    requests = [dataclasses.replace(r, school_year=year) for r in national.requests]
    if count is not None and count < len(requests):
        requests = random.Random(seed + 5).sample(requests, count)  # noqa: S311
    offers = [dataclasses.replace(o, school_year=year) for o in national.offers]
    return [r.school for r in requests], requests, offers


async def seed(url: str, schools: list[domain.School], offers: list[domain.Offer]) -> None:
    partners = [
        (
            s.partner_id,
            s.kind,
            f"Établissement {s.uai}",
            "verified",
            s.uai,
            s.departement,
            s.academie,
            s.latitude,
            s.longitude,
            EDUCATION_PRIORITAIRE.get(s.priority),
            s.priority is PriorityClass.QPV_OR_RURAL,
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
        for n, o in enumerate(offers)
    ]
    rows = [
        (
            o.offer_id,
            o.tete_partner_id,
            o.school_year,
            o.remaining_capacity,
            list(o.levels),
            sorted(API_THEMATICS[t] for t in o.thematics),
            o.max_distance_km,
            list(o.academies),
        )
        for o in offers
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
                records=rows,
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


def token(key: SigningKey, partner_id: uuid.UUID, *roles: str) -> dict[str, str]:
    signed = key.sign(
        claims(
            sub=f"bench-{partner_id}",
            partner_id=str(partner_id),
            roles=list(roles),
            exp=int(time.time()) + 7200,
        )
    )
    return {"Authorization": f"Bearer {signed}"}


async def replay(
    base: str,
    url: str,
    key: SigningKey,
    requests_of: dict[uuid.UUID, domain.Request],
    offers: list[domain.Offer],
    year: str,
    seed_value: int,
    declines: int,
) -> tuple[
    list[float], list[float], list[float], dict[uuid.UUID, set[uuid.UUID]], Counter[PriorityClass]
]:
    rng = random.Random(seed_value + 11)  # noqa: S311
    order = [r.school for r in requests_of.values()]
    rng.shuffle(order)
    tete_of = {o.offer_id: o.tete_partner_id for o in offers}
    requests: list[float] = []
    acceptances: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for number, school in enumerate(order, start=1):
            headers = token(key, school.partner_id, "partner", "school")
            wished = requests_of[school.partner_id]
            body = {
                "school_year": year,
                "thematics": sorted(API_THEMATICS[t] for t in wished.thematics),
                "max_distance_km": wished.max_distance_km,
            }
            started = time.perf_counter()
            answer = await http.post("/match-requests", json=body, headers=headers)
            requests.append(time.perf_counter() - started)
            if answer.status_code != 202:
                raise RuntimeError(f"POST /match-requests: {answer.status_code} {answer.text}")
            if number % 1000 == 0:
                print(f"  {number:,} requests, last 1,000: {figures(requests[-1000:])}", flush=True)
        connection = await asyncpg.connect(url)
        refused: Counter[int] = Counter()
        declined: dict[uuid.UUID, set[uuid.UUID]] = {}
        timed_declines: list[float] = []
        try:
            for _ in range(declines):  # (d) each re-solves the whole year
                row = rng.choice(
                    await connection.fetch(
                        "SELECT id, offer_id, school_partner_id FROM match_requests"
                        " WHERE status = 'proposed'"
                    )
                )
                headers = token(key, tete_of[row["offer_id"]], "partner")
                started = time.perf_counter()
                answer = await http.post(f"/match-requests/{row['id']}/decline", headers=headers)
                timed_declines.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    raise RuntimeError(f"decline: {answer.status_code} {answer.text}")
                declined.setdefault(row["school_partner_id"], set()).add(row["offer_id"])
            rounds = 0
            while proposed := await connection.fetch(
                "SELECT id, offer_id FROM match_requests WHERE status = 'proposed'"
            ):
                rounds += 1
                batch = list(proposed)
                rng.shuffle(batch)
                for row in batch:
                    headers = token(key, tete_of[row["offer_id"]], "partner")
                    started = time.perf_counter()
                    answer = await http.post(f"/match-requests/{row['id']}/accept", headers=headers)
                    acceptances.append(time.perf_counter() - started)
                    refused[answer.status_code] += answer.status_code != 200
                    if answer.status_code not in (200, 403, 409):  # 403: the old flow's moves
                        raise RuntimeError(f"accept: {answer.status_code} {answer.text}")
            served = Counter(
                PriorityClass(row["priority"])
                for row in await connection.fetch(
                    "SELECT priority FROM match_requests WHERE status = 'established'"
                )
            )
            print(f"acceptance rounds: {rounds}; refused: {dict(refused) or 'none'}")
        finally:
            await connection.close()
    return requests, acceptances, timed_declines, declined, served


async def in_process(
    args: argparse.Namespace,
    requests: list[domain.Request],
    offers: list[domain.Offer],
    year: str,
    optimum: domain.CampaignResult,
) -> int:
    """``--in-process``: the requests filed through ``usecases.request_match`` in this process,
    in the order of :func:`replay`; the proposals standing at the end against ``optimum``."""
    requests_of = {r.school.partner_id: r for r in requests}
    order = [r.school for r in requests_of.values()]
    random.Random(args.seed + 11).shuffle(order)  # noqa: S311  (as replay)
    profile_from = len(order) - args.profile_last if args.profile_last else None
    profiler = cProfile.Profile()
    servers = ServerThread()
    timed: list[float] = []
    cpu: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="maillage-bench-") as workdir:
            postgres = EmbeddedPostgres(Path(workdir) / "postgres", free_port())
            await servers.call(postgres.start(timeout=args.timeout))
            try:
                url = database_url_for(postgres.url, DATABASE)
                await ensure_database(postgres.url, DATABASE)
                await migrate_service(url, MIGRATIONS)
                await seed(url, [r.school for r in requests], offers)
                pool = await create_pool(url, max_size=2)
                try:
                    for number, school in enumerate(order, start=1):
                        if number - 1 == profile_from:
                            profiler.enable()
                        wished = requests_of[school.partner_id]
                        caller = Caller(
                            subject=f"bench-{school.partner_id}",
                            partner_id=str(school.partner_id),
                            roles=frozenset({"partner", "school"}),
                        )
                        started, cpu_started = time.perf_counter(), time.process_time()
                        async with transaction(pool) as connection:
                            await usecases.request_match(
                                connection,
                                caller,
                                school_year=year,
                                thematics=sorted(API_THEMATICS[t] for t in wished.thematics),
                                max_distance_km=wished.max_distance_km,
                                now=datetime.now(UTC),
                            )
                        timed.append(time.perf_counter() - started)
                        cpu.append(time.process_time() - cpu_started)
                        if number % 1000 == 0 or number == len(order):
                            last = timed[-((number - 1) % 1000 + 1) :]
                            cpu_ms = sum(cpu[-len(last) :]) / len(last) * 1000
                            print(
                                f"  {number:,} requests, last {len(last):,}: {figures(last)}"
                                f"   CPU {cpu_ms:.1f} ms/request   {load()}",
                                flush=True,
                            )
                    profiler.disable()
                    proposed = Counter(
                        PriorityClass(row["priority"])
                        for row in await pool.fetch(
                            "SELECT priority FROM match_requests WHERE status = 'proposed'"
                        )
                    )
                finally:
                    await pool.close()
            finally:
                await servers.call(postgres.stop())
    finally:
        servers.close()
    print(f"\n(r) {len(timed):,} match requests, ms: {figures(timed)}")
    if profile_from is not None:
        for sort in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(40)
            print(out.getvalue())
    equal = True
    print("\nproposed / requested   live flow   offline optimum")
    counts = Counter(r.school.priority for r in requests)
    for priority in (p for p in PriorityClass if counts[p]):
        offline = optimum.coverage[priority].served
        equal &= proposed[priority] == offline
        live = proposed[priority]
        print(f"  {priority.label:<6} {counts[priority]:>6}    {live:>9}   {offline:>15}")
    print(f"equal: {'yes' if equal else 'NO'}")
    return 0 if equal else 1


async def main(args: argparse.Namespace) -> int:
    configure_logging("bench", fmt="console", level="WARNING")
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {load()}")
    overall = time.monotonic()
    year = matcher.school_year_of(date.today())
    if args.national:
        schools, requests, offers = national_instance(args.seed, year, args.requests)
    else:
        schools, offers = instance(args.seed, args.tetes, args.places, year)
        requests = [
            domain.Request(
                request_id=uuid.uuid4(),
                school=s,
                thematics=(),
                max_distance_km=None,
                school_year=year,
            )
            for s in schools
        ]
    counts = Counter(s.priority for s in schools)
    print(
        f"instance: {len(schools):,} schools ("
        + ", ".join(f"{counts[p]} {p.label}" for p in PriorityClass if counts[p])
        + f"), {len(offers)} têtes, {sum(o.remaining_capacity for o in offers)} places ({year})"
    )
    started = time.perf_counter()
    optimum = domain.solve_campaign(requests, offers)
    print(f"(o) offline optimum solved in {(time.perf_counter() - started) * 1000:.0f} ms")
    if args.in_process:
        code = await in_process(args, requests, offers, year, optimum)
        print(f"\ntotal run time {time.monotonic() - overall:.0f} s, {load()}")
        return code
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
                    await seed(url, schools, offers)
                    log = Path(f"/tmp/bench-cordees-live-{os.getpid()}.log")  # noqa: S108
                    async with service(url, bootstrap, idem, jwks.url, args.timeout, log) as (
                        base,
                        _pid,
                    ):
                        replayed = await replay(
                            base,
                            url,
                            key,
                            {r.school.partner_id: r for r in requests},
                            offers,
                            year,
                            args.seed,
                            args.declines,
                        )
                        timed_requests, timed_acceptances, timed_declines, declined, served = (
                            replayed
                        )
                finally:
                    await drop_database(server_url, DATABASE)
    finally:
        jwks.stop()
    print(f"\n(r) {len(timed_requests):,} match requests, ms: {figures(timed_requests)}")
    print(f"(a) {len(timed_acceptances):,} acceptances, ms: {figures(timed_acceptances)}")
    if timed_declines:
        print(f"(d) {len(timed_declines):,} declines, ms: {figures(timed_declines)}")
        requests = [
            dataclasses.replace(
                r, excluded_offer_ids=frozenset(declined.get(r.school.partner_id, ()))
            )
            for r in requests
        ]
        optimum = domain.solve_campaign(requests, offers)  # with the declines as exclusions
    print("\nserved / requested     live flow   offline optimum")
    equal = True
    for priority in (p for p in PriorityClass if counts[p]):
        offline = optimum.coverage[priority].served
        equal &= served[priority] == offline
        print(
            f"  {priority.label:<6} {counts[priority]:>6}    {served[priority]:>9}   {offline:>15}"
        )
    print(f"equal: {'yes' if equal else 'NO'}")
    print(f"\ntotal run time {time.monotonic() - overall:.0f} s, {load()}")
    return 0 if equal else 1


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--tetes", type=int, default=60, help="têtes de cordée (one offer each)")
    parser.add_argument("--places", type=int, default=967, help="places of all offers together")
    parser.add_argument("--timeout", type=float, default=180, help="seconds, for each wait")
    parser.add_argument(
        "--national", action="store_true", help="the whole national instance (10,700 schools)"
    )
    parser.add_argument("--requests", type=int, help="with --national: this many schools only")
    parser.add_argument(
        "--declines", type=int, default=0, help="declines between requests and acceptances"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="file the requests through the use case in this process (no HTTP, no acceptances)",
    )
    parser.add_argument(
        "--profile-last", type=int, default=0, help="with --in-process: profile the last N"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
