"""Password guessing against the registry: /livez latency for everyone else, idle vs under attack.

Run from the repository root::

    .venv/bin/python bench/registry_brute_force.py [--seconds 30] [--guessers 8]

It starts its own embedded PostgreSQL and broker (temporary directory, free loopback ports),
creates one staff account, then runs the registry (uvicorn, one process, as ``maillage dev``
does) three times, each for ``--seconds`` while a probe calls ``/livez`` every 20 ms:

(a) idle: the baseline;
(b) brute force with the default throttles: ``--guessers`` concurrent clients post wrong
    passwords for the staff account to ``/oauth/token`` (password grant), as fast as answers
    come; the per-account and per-address failure throttles soon answer 429 without verifying;
(c) the same brute force with the throttles out of the way (a million free failures), so every
    guess is an argon2 verification: what the hashing threads alone protect.

Printed per run: the probe's /livez median, p99 and max, and how many guesses were answered,
verified (401/400) and throttled (429).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import EmbeddedBroker, EmbeddedPostgres, ensure_database
from maillage.common.db import create_pool, migrate_service
from maillage.registry import reference, store, tokens

EMAIL = "target@maillage.test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def start_registry(
    database_url: str, bootstrap: str, extra: dict[str, str]
) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "REGISTRY_ENVIRONMENT": "dev",
        "REGISTRY_DATABASE_URL": database_url,
        "REGISTRY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REGISTRY_KAFKA_IDEMPOTENT_PRODUCER": "false",
        "REGISTRY_JWT_ISSUER": url,
        "REGISTRY_JWKS_URL": f"{url}/.well-known/jwks.json",
        "REGISTRY_LOG_LEVEL": "WARNING",
        "REGISTRY_TOKEN_REQUESTS_PER_MINUTE": "1000000",  # the bucket aside: failures only
        **extra,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "maillage.registry.app:create",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--no-proxy-headers",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(600):
            try:
                if (await http.get(f"{url}/livez")).status_code == 200:
                    return process, url
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    process.terminate()
    raise RuntimeError("the registry did not start")


async def probe(url: str, until: float) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=30) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            response = await http.get(f"{url}/livez")
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
            await asyncio.sleep(0.02)
    return latencies


async def guess(url: str, until: float, answers: Counter[int]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        number = 0
        while time.monotonic() < until:
            number += 1
            response = await http.post(
                f"{url}/oauth/token",
                data={"grant_type": "password", "username": EMAIL, "password": f"guess-{number}"},
            )
            answers[response.status_code] += 1


async def scenario(
    label: str,
    database_url: str,
    bootstrap: str,
    seconds: float,
    guessers: int,
    extra: dict[str, str],
) -> None:
    process, url = await start_registry(database_url, bootstrap, extra)
    try:
        answers: Counter[int] = Counter()
        until = time.monotonic() + seconds
        results = await asyncio.gather(
            probe(url, until), *(guess(url, until, answers) for _ in range(guessers))
        )
        latencies = sorted(results[0])
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        verified = answers[400] + answers[401]
        print(
            f"{label}: /livez median {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms "
            f"({len(latencies)} probes); guesses {sum(answers.values())}: "
            f"{verified} verified, {answers[429]} throttled (429)"
        )
    finally:
        process.terminate()
        await process.wait()


async def run(server: str, bootstrap: str, seconds: float, guessers: int) -> None:
    await ensure_database(server, "bench_registry_brute_force")
    url = database_url_for(server, "bench_registry_brute_force")
    await migrate_service(url, Path(reference.__file__).parent / "migrations")
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        await store.upsert_staff(
            pool,
            email=EMAIL,
            password_hash=tokens.hash_secret("the right one"),
            roles=["admin"],
            departements=[],
            national=True,
        )
    finally:
        await pool.close()
    await scenario("(a) idle", url, bootstrap, seconds, 0, {})
    await scenario("(b) brute force, throttled", url, bootstrap, seconds, guessers, {})
    unthrottled = {
        "REGISTRY_FREE_FAILURES_PER_ACCOUNT": "1000000",
        "REGISTRY_FREE_FAILURES_PER_ADDRESS": "1000000",
    }
    await scenario("(c) brute force, throttles off", url, bootstrap, seconds, guessers, unthrottled)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--guessers", type=int, default=8)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        postgres = EmbeddedPostgres(Path(data), free_port())
        broker = EmbeddedBroker(free_port())
        await postgres.start()
        await broker.start()
        try:
            await run(postgres.url, broker.bootstrap_servers, arguments.seconds, arguments.guessers)
        finally:
            await broker.stop()
            await postgres.stop()


if __name__ == "__main__":
    asyncio.run(main())
