"""Programme 147 funding benchmark: decisions under concurrency, the audit chain, the SCDL export,
each against a raw asyncpg baseline doing the same SQL work without the service's checks,
audit row and outbox event.

Run from the repository root::

    .venv/bin/python bench/funding.py [--conventions 1000] [--concurrency 32]
        [--audit-rows 1000000] [--export 10000]

It starts its own embedded PostgreSQL (or uses ``DATABASE_URL``, a server URL on which it creates
and drops its own databases), migrates a funding database and seeds it in SQL: 101 départements,
each with a 2027 envelope whose AE cover about 90 % of the conventions programmed there, 1,000
verified beneficiaries and ``--conventions`` programmed conventions of 4 years (8 tranches each
once signed). Then, in this process:

(1) signatures: ``--concurrency`` ordonnateurs (distinct people, one task and one pooled
    connection each) sign every convention through ``usecases.sign_convention`` (envelope lock,
    checks, AE engaged, tranches scheduled, audit row, outbox event), one transaction each; then
    every envelope is checked: engaged = the sum of its signed conventions, never above its AE;
    baseline (a): the same envelope lock, AE update, status update and tranche inserts in raw
    SQL, on a fresh copy of the seed;
(2) approvals: every tranche of the signed conventions, set ``instructed`` by an officer, is
    approved through ``usecases.approve_tranche`` by the same ordonnateurs; baseline (b): lock
    and update the tranche in raw SQL;
(3) audit verification: ``--audit-rows`` rows of a valid chain are written (COPY), then
    ``audit.verify`` reads and recomputes them (rows/s, and the process's peak resident memory
    during the verification, Linux ``VmHWM`` reset before it: flat, because rows are read by
    keyset batches); baseline (c): the same batched read without hashing;
(4) the SCDL export of ``--export`` signed conventions (``store.conventions_signed_in`` and
    ``exports.scdl_csv``, as the route does); baseline (d): the raw rows written by ``csv.writer``.

It is not a test: it prints figures (docs/performance.md keeps them), every phase once.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import EmbeddedPostgres, drop_database, ensure_database, free_port
from maillage.common.auth import Caller
from maillage.common.db import create_pool, migrate_service
from maillage.common.logging import configure_logging
from maillage.funding import audit, exports, store, usecases
from maillage.funding.app import MIGRATIONS

YEAR = 2027
DEPARTEMENTS = [
    *(f"{n:02d}" for n in range(1, 96) if n != 20),
    "2A",
    "2B",
    "971",
    "972",
    "973",
    "974",
    "976",
][:101]
YEARLY = [3_000_000, 3_000_000, 3_000_000, 3_000_000]  # 30,000 EUR a year, 4 years


async def seed(pool: asyncpg.Pool, conventions: int) -> None:
    now = datetime.now(UTC)
    partners = [uuid.uuid4() for _ in range(1000)]
    await pool.copy_records_to_table(
        "partners",
        records=[
            (p, "association", f"Association {i}", "verified", "35600000000048", None, "94", 1, now)
            for i, p in enumerate(partners)
        ],
        columns=[
            "partner_id",
            "kind",
            "legal_name",
            "status",
            "siret",
            "rna",
            "departement",
            "version",
            "updated_at",
        ],
    )
    per_departement: dict[str, int] = {}
    rows = []
    for index in range(conventions):
        departement = DEPARTEMENTS[index % len(DEPARTEMENTS)]
        per_departement[departement] = per_departement.get(departement, 0) + 1
        rows.append(
            (
                uuid.uuid4(),
                partners[index % len(partners)],
                departement,
                f"Action {index}",
                None,
                YEAR,
                YEARLY,
                sum(YEARLY),
                sum(YEARLY),
                [],
                "convention",
                50,
                "programmed",
                date(YEAR, 1, 15),
                "officer-seed",
                "officer-seed",
                "ordonnateur-seed",
                now,
                now,
            )
        )
    await pool.copy_records_to_table(
        "conventions",
        records=rows,
        columns=[
            "id",
            "beneficiary_partner_id",
            "departement",
            "object",
            "cite_educative",
            "first_year",
            "yearly_amounts_cents",
            "amount_cents",
            "budget_cents",
            "cofinancer_partner_ids",
            "legal_act",
            "advance_percent",
            "status",
            "committee_date",
            "recorded_by",
            "instructed_by",
            "programmed_by",
            "created_at",
            "updated_at",
        ],
    )
    await pool.copy_records_to_table(
        "envelopes",
        records=[
            (
                uuid.uuid4(),
                departement,
                YEAR,
                count * sum(YEARLY) * 9 // 10,
                10**12,
                "seed",
                now,
                now,
            )
            for departement, count in per_departement.items()
        ],
        columns=[
            "id",
            "departement",
            "year",
            "ae_cents",
            "cp_cents",
            "created_by",
            "created_at",
            "updated_at",
        ],
    )


def ordonnateurs(count: int) -> list[Caller]:
    return [
        Caller(
            subject=f"ordonnateur-{i}",
            partner_id=None,
            roles=frozenset({"ordonnateur"}),
            departements=frozenset(DEPARTEMENTS),  # they act for the bench's départements
        )
        for i in range(count)
    ]


async def run_workers(
    pool: asyncpg.Pool, items: list[Any], callers: list[Caller], work: Any
) -> tuple[float, dict[str, int]]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    outcomes: dict[str, int] = {}

    async def worker(caller: Caller) -> None:
        async with pool.acquire() as connection:
            while not queue.empty():
                item = queue.get_nowait()
                try:
                    async with connection.transaction():
                        await work(connection, caller, item)
                    outcomes["ok"] = outcomes.get("ok", 0) + 1
                except usecases.Problem as problem:
                    outcomes[problem.code] = outcomes.get(problem.code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(caller) for caller in callers))
    return time.perf_counter() - started, outcomes


async def sign(connection: asyncpg.Connection, caller: Caller, convention_id: uuid.UUID) -> None:
    await usecases.sign_convention(
        connection,
        caller,
        convention_id,
        ej_number="2100000000",
        signed_on=date(YEAR, 2, 1),
        declares_no_interest=True,
    )


async def raw_sign(
    connection: asyncpg.Connection, caller: Caller, convention_id: uuid.UUID
) -> None:
    convention = await connection.fetchrow(
        "SELECT departement, amount_cents FROM conventions WHERE id = $1", convention_id
    )
    envelope = await connection.fetchrow(
        "SELECT id, ae_cents - ae_engaged_cents AS left FROM envelopes"
        " WHERE departement = $1 AND year = $2 FOR UPDATE",
        convention["departement"],
        YEAR,
    )
    if envelope["left"] < convention["amount_cents"]:
        raise usecases.envelope_exhausted("AE", envelope["left"])
    await connection.execute(
        "UPDATE envelopes SET ae_engaged_cents = ae_engaged_cents + $2 WHERE id = $1",
        envelope["id"],
        convention["amount_cents"],
    )
    await connection.execute(
        "UPDATE conventions SET status = 'signed', envelope_id = $2, ej_number = '2100000000',"
        " signed_by = $3, signed_on = $4 WHERE id = $1",
        convention_id,
        envelope["id"],
        caller.subject,
        date(YEAR, 2, 1),
    )
    now = datetime.now(UTC)
    await connection.executemany(
        "INSERT INTO tranches (id, convention_id, number, year, kind, amount_cents, status,"
        " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'planned', $7, $7)",
        [
            (
                uuid.uuid4(),
                convention_id,
                2 * y + k + 1,
                YEAR + y,
                ("advance", "balance")[k],
                1_500_000,
                now,
            )
            for y in range(4)
            for k in range(2)
        ],
    )


async def approve(connection: asyncpg.Connection, caller: Caller, tranche_id: uuid.UUID) -> None:
    await usecases.approve_tranche(connection, caller, tranche_id, declares_no_interest=True)


async def raw_approve(
    connection: asyncpg.Connection, caller: Caller, tranche_id: uuid.UUID
) -> None:
    await connection.fetchrow("SELECT status FROM tranches WHERE id = $1 FOR UPDATE", tranche_id)
    await connection.execute(
        "UPDATE tranches SET status = 'approved', approved_by = $2 WHERE id = $1",
        tranche_id,
        caller.subject,
    )


async def check_envelopes(pool: asyncpg.Pool) -> str:
    rows = await pool.fetch(
        """
        SELECT e.ae_cents, e.ae_engaged_cents,
               COALESCE(sum(c.amount_cents) FILTER (WHERE c.status = 'signed'), 0) AS signed
        FROM envelopes e LEFT JOIN conventions c ON c.envelope_id = e.id
        GROUP BY e.id
        """
    )
    over = sum(1 for r in rows if r["ae_engaged_cents"] > r["ae_cents"])
    mismatched = sum(1 for r in rows if r["ae_engaged_cents"] != r["signed"])
    return f"{len(rows)} envelopes: {over} overspent, {mismatched} not equal to their signatures"


async def fresh_database(server: str, name: str) -> str:
    await ensure_database(server, name)
    url = database_url_for(server, name)
    await migrate_service(url, MIGRATIONS)
    return url


async def phase_decisions(server: str, args: argparse.Namespace) -> None:
    callers = ordonnateurs(args.concurrency)
    for label, signer, approver in (
        ("service", sign, approve),
        ("raw asyncpg", raw_sign, raw_approve),
    ):
        name = f"bench_funding_{uuid.uuid4().hex[:8]}"
        url = await fresh_database(server, name)
        pool = await create_pool(url, min_size=args.concurrency, max_size=args.concurrency)
        try:
            await seed(pool, args.conventions)
            ids = [r["id"] for r in await pool.fetch("SELECT id FROM conventions ORDER BY id")]
            elapsed, outcomes = await run_workers(pool, ids, callers, signer)
            print(
                f"(1) {label}: {len(ids)} signatures by {len(callers)} ordonnateurs in "
                f"{elapsed:.2f} s = {len(ids) / elapsed:.0f}/s; {outcomes}"
            )
            print(f"    {await check_envelopes(pool)}")
            await pool.execute(
                "UPDATE tranches SET status = 'instructed', instructed_by = 'officer-seed'"
            )
            tranches = [r["id"] for r in await pool.fetch("SELECT id FROM tranches ORDER BY id")]
            elapsed, outcomes = await run_workers(pool, tranches, callers, approver)
            print(
                f"(2) {label}: {len(tranches)} tranche approvals in {elapsed:.2f} s = "
                f"{len(tranches) / elapsed:.0f}/s; {outcomes}"
            )
        finally:
            await pool.close()
            await drop_database(server, name)


def chain_rows(count: int) -> Any:
    previous = audit.GENESIS
    start = datetime(YEAR, 1, 1, tzinfo=UTC)
    object_id = uuid.uuid4()
    for seq in range(1, count + 1):
        row = {
            "seq": seq,
            "at": start + timedelta(microseconds=seq * 1013),
            "actor": f"ordonnateur-{seq % 32}",
            "role": "ordonnateur",
            "action": "approve",
            "object_type": "tranche",
            "object_id": object_id,
            "before": {"status": "instructed", "version": 2, "amount_cents": 1_500_000},
            "after": {"status": "approved", "version": 3, "amount_cents": 1_500_000},
            "request_id": uuid.uuid4().hex,
            "trace_id": uuid.uuid4().hex,
            "previous_hash": previous,
        }
        row["hash"] = audit.chain_hash(previous, row)
        previous = row["hash"]
        yield row


async def phase_audit(server: str, args: argparse.Namespace) -> None:
    name = f"bench_funding_{uuid.uuid4().hex[:8]}"
    url = await fresh_database(server, name)
    connection = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        batch: list[tuple[Any, ...]] = []
        last = None
        for row in chain_rows(args.audit_rows):
            batch.append(
                (
                    row["seq"],
                    row["at"],
                    row["actor"],
                    row["role"],
                    row["action"],
                    row["object_type"],
                    row["object_id"],
                    json.dumps(row["before"]),
                    json.dumps(row["after"]),
                    row["request_id"],
                    row["trace_id"],
                    row["previous_hash"],
                    row["hash"],
                )
            )
            last = row
            if len(batch) == 50_000:
                await copy_audit(connection, batch)
                batch = []
        if batch:
            await copy_audit(connection, batch)
        assert last is not None
        await connection.execute(
            "UPDATE audit_head SET last_seq = $1, last_hash = $2", last["seq"], last["hash"]
        )
        print(
            f"(3) {args.audit_rows} chained rows written in {time.perf_counter() - started:.1f} s"
        )
        rss_before = reset_peak_rss()
        started = time.perf_counter()
        result = await audit.verify(connection)
        elapsed = time.perf_counter() - started
        peak = peak_rss()
        print(
            f"    verify-audit: {result.rows} rows in {elapsed:.1f} s = "
            f"{result.rows / elapsed:.0f} rows/s, intact={result.intact}; resident memory "
            f"{rss_before / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB during"
        )
        started = time.perf_counter()
        read = 0
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            async for _ in store.audit_rows(connection):
                read += 1
        raw = time.perf_counter() - started
        print(
            f"    baseline (c), the same batched read without hashing: {read} rows in {raw:.1f} s"
            f" = {read / raw:.0f} rows/s; verify / read = {elapsed / raw:.2f}"
        )
    finally:
        await connection.close()
        await drop_database(server, name)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> int:
    """Reset the process's peak resident size (Linux clear_refs); return the current size."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def peak_rss() -> int:
    return _status_kib("VmHWM")


async def copy_audit(connection: asyncpg.Connection, batch: list[tuple[Any, ...]]) -> None:
    await connection.copy_records_to_table(
        "audit_log",
        records=batch,
        columns=[
            "seq",
            "at",
            "actor",
            "role",
            "action",
            "object_type",
            "object_id",
            "before",
            "after",
            "request_id",
            "trace_id",
            "previous_hash",
            "hash",
        ],
    )


async def phase_export(server: str, args: argparse.Namespace) -> None:
    name = f"bench_funding_{uuid.uuid4().hex[:8]}"
    url = await fresh_database(server, name)
    pool = await create_pool(url)
    try:
        await seed(pool, args.export)
        await pool.execute(
            "UPDATE conventions SET status = 'signed', ej_number = '2100000000',"
            " signed_on = make_date($1, 3, 1), envelope_id = (SELECT id FROM envelopes LIMIT 1)",
            YEAR,
        )
        async with pool.acquire() as connection:
            started = time.perf_counter()
            rows = await store.conventions_signed_in(connection, YEAR)
            text = exports.scdl_csv(
                rows, attribuant_name="Préfecture", attribuant_siret="17940001500014"
            )
            elapsed = time.perf_counter() - started
            started = time.perf_counter()
            raw_rows = await connection.fetch(
                "SELECT c.signed_on, c.ej_number, p.legal_name, p.siret, c.object, c.amount_cents"
                " FROM conventions c LEFT JOIN partners p"
                " ON p.partner_id = c.beneficiary_partner_id WHERE c.status = 'signed'"
            )
            out = io.StringIO()
            csv.writer(out).writerows(tuple(r) for r in raw_rows)
            raw = time.perf_counter() - started
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        print(
            f"(4) SCDL export of {len(rows)} conventions: {elapsed:.2f} s ({len(text)} bytes, "
            f"sha256 {digest}); baseline (d) raw rows to csv: {raw:.2f} s; ratio "
            f"{elapsed / raw:.1f}"
        )
    finally:
        await pool.close()
        await drop_database(server, name)


async def main(args: argparse.Namespace) -> int:
    configure_logging("bench", level="WARNING", fmt="console")
    server = os.environ.get("DATABASE_URL")
    postgres = None
    if not server:
        postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="bench-funding-")), free_port())
        await postgres.start()
        server = postgres.url
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    try:
        await phase_decisions(server, args)
        await phase_audit(server, args)
        await phase_export(server, args)
    finally:
        if postgres is not None:
            await postgres.stop()
    print(f"load at end {os.getloadavg()}")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conventions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--audit-rows", type=int, default=1_000_000)
    parser.add_argument("--export", type=int, default=10_000)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse(sys.argv[1:]))))
