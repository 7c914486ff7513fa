"""Reference schools on the bus: the import's outbox batch against ``outbox.publish`` per school.

Run from the repository root::

    .venv/bin/python bench/registry_school_events.py [--events 20000] [--national 66000]

It starts its own embedded PostgreSQL (temporary directory, free loopback port) unless
``DATABASE_URL`` names a server (the benchmark then creates its own database there), migrates a
registry database, and measures, in one transaction each:

(a) the baseline: ``--events`` ``SchoolReferenced`` events through ``outbox.publish``, one call
    (an advisory lock and an INSERT) per event;
(b) the registry's import path: the same events through ``reference.publish_schools``, one
    statement per batch of 1,000;
(c) ``--national`` events through ``publish`` in one transaction, as a national import would if it
    used it: each holds a distinct advisory lock until commit;
(d) ``reference.import_annuaire`` of a generated ``--national``-row annuaire, twice: the first
    import publishes every school, the second none.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import EmbeddedPostgres, ensure_database
from maillage.common.catalog import SchoolReferenced
from maillage.common.db import create_pool, migrate_service
from maillage.common.outbox import publish
from maillage.registry import geography, identifiers, reference

# A UAI numbers at most 10,000 schools per département: spread the generated ones over the
# metropolitan départements, each placed inside its département (the import checks it).
DEPARTEMENTS = sorted(code for code in geography.boxes() if code.isdigit() and len(code) == 2)


def departement(number: int) -> str:
    return DEPARTEMENTS[number // 10_000]


def uai(number: int) -> str:
    digits = f"0{departement(number)}{number % 10_000:04d}"
    return digits + identifiers.uai_check_letter(digits)


def place(number: int) -> tuple[str, str]:
    box = geography.boxes()[departement(number)]
    latitude = (box.south + box.north) / 2 + (number % 1000) / 100_000
    longitude = (box.west + box.east) / 2 + (number % 997) / 100_000
    return f"{latitude:.6f}", f"{longitude:.6f}"


def school(number: int) -> SchoolReferenced:
    return SchoolReferenced(
        uai=uai(number),
        name=f"Collège {number}",
        type="Collège",
        departement=departement(number),
        version=1,
    )


def write_annuaire(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, delimiter=";", lineterminator="\n")
        writer.writerow(
            [
                "identifiant_de_l_etablissement",
                "nom_etablissement",
                "type_etablissement",
                "code_commune",
                "nom_commune",
                "code_departement",
                "appartenance_education_prioritaire",
                "latitude",
                "longitude",
            ]
        )
        for number in range(rows):
            writer.writerow(
                [
                    uai(number),
                    f"Collège {number}",
                    "Collège",
                    f"{departement(number)}001",
                    "Commune",
                    f"0{departement(number)}",
                    ("", "REP", "REP+")[number % 3],
                    *place(number),
                ]
            )


async def run(server: str, events: int, national: int) -> None:
    await ensure_database(server, "bench_registry_schools")
    url = database_url_for(server, "bench_registry_schools")
    await migrate_service(url, Path(reference.__file__).parent / "migrations")
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as connection:
            await connection.execute("TRUNCATE outbox, reference_schools")
            batch = [school(number) for number in range(events)]
            started = time.perf_counter()
            async with connection.transaction():
                for event in batch:
                    await publish(connection, event)
            baseline = time.perf_counter() - started
            await connection.execute("TRUNCATE outbox")

            rows: list[Any] = [event.model_dump() for event in batch]
            started = time.perf_counter()
            async with connection.transaction():
                for first in range(0, events, reference.BATCH_SIZE):
                    await reference.publish_schools(
                        connection, rows[first : first + reference.BATCH_SIZE]
                    )
            batched = time.perf_counter() - started
            await connection.execute("TRUNCATE outbox")
            print(
                f"(a) publish() per event: {events:,} in {baseline:.2f} s "
                f"({events / baseline:,.0f}/s)\n"
                f"(b) publish_schools:     {events:,} in {batched:.2f} s "
                f"({events / batched:,.0f}/s), {baseline / batched:.1f}x the baseline"
            )

            try:
                async with connection.transaction():
                    for number in range(national):
                        await publish(connection, school(number))
                print(f"(c) {national:,} publish() in one transaction: committed")
            except Exception as error:  # the point of (c): which error, if any
                print(f"(c) {national:,} publish() in one transaction: {error}".splitlines()[0])
            settings = await connection.fetchrow(
                "SELECT current_setting('max_connections') AS connections,"
                " current_setting('max_locks_per_transaction') AS locks"
            )
            print(
                f"    (max_connections {settings['connections']}, "
                f"max_locks_per_transaction {settings['locks']})"
            )
            await connection.execute("TRUNCATE outbox")

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "annuaire.csv"
            write_annuaire(path, national)
            for label in ("first import", "same file again"):
                started = time.perf_counter()
                summary = await reference.import_annuaire(pool, path)
                elapsed = time.perf_counter() - started
                print(
                    f"(d) {label}: {national:,} rows in {elapsed:.2f} s "
                    f"({national / elapsed:,.0f} rows/s), {summary.published:,} published"
                )
    finally:
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--national", type=int, default=66_000)
    arguments = parser.parse_args()
    server = os.environ.get("DATABASE_URL")
    if server:
        await run(server, arguments.events, arguments.national)
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        postgres = EmbeddedPostgres(Path(data), port)
        await postgres.start()
        try:
            await run(postgres.url, arguments.events, arguments.national)
        finally:
            await postgres.stop()


if __name__ == "__main__":
    asyncio.run(main())
