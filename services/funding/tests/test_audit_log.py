"""The audit log nobody can rewrite: every decision is a hash-chained row; the database refuses
UPDATE, DELETE and TRUNCATE for the service's own role; a row altered by a superuser (triggers
disabled) is found by ``maillage funding verify-audit`` at that very row."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from funding_world import Funding

from maillage.funding import audit

MAILLAGE = str(Path(sys.executable).parent / "maillage")


async def _verify_audit(database_url: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [MAILLAGE, "funding", "verify-audit", "--database-url", database_url],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _some_decisions(funding: Funding) -> None:
    beneficiary = await funding.verified_partner("Association Lire à Orly")
    async with funding.client() as http:
        await funding.envelope(http, ae_cents=10_000_000, cp_cents=10_000_000)
        await funding.signed(http, beneficiary, [1_000_000, 1_000_000])


async def test_every_decision_is_chained_and_read_by_the_ordonnateur(funding: Funding) -> None:
    await _some_decisions(funding)
    async with funding.client() as http:
        page = (await http.get("/audit?limit=3", headers=funding.ordonnateur())).json()
        rest = (
            await http.get(f"/audit?after={page['next_cursor']}", headers=funding.ordonnateur())
        ).json()
        refused = await http.get("/audit", headers=funding.officer())
    rows = page["items"] + rest["items"]
    assert [row["action"] for row in rows] == [
        "open_envelope",
        "record",
        "instruct",
        "programme",
        "sign",
    ]
    assert rows[0]["previous_hash"] == audit.GENESIS
    for previous, row in itertools.pairwise(rows):
        assert row["previous_hash"] == previous["hash"]
    sign = rows[-1]
    assert sign["role"] == "ordonnateur"
    assert sign["actor"] == funding.subjects["ordonnateur"]
    assert (sign["before"]["status"], sign["after"]["status"]) == ("programmed", "signed")
    assert refused.status_code == 403
    async with funding.pool.acquire() as connection:
        assert (await audit.verify(connection)).intact


async def test_update_delete_and_truncate_are_refused_by_the_database(funding: Funding) -> None:
    await _some_decisions(funding)
    async with funding.pool.acquire() as connection:
        for statement in (
            "UPDATE audit_log SET actor = 'someone else' WHERE seq = 2",
            "DELETE FROM audit_log WHERE seq = 5",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await connection.execute(statement)
        assert await connection.fetchval("SELECT count(*) FROM audit_log") == 5


async def test_a_row_altered_by_a_superuser_is_named_by_verify_audit(funding: Funding) -> None:
    await _some_decisions(funding)
    intact = await _verify_audit(funding.database_url)
    assert intact.returncode == 0, intact.stderr
    assert "audit log intact: 5 row(s)" in intact.stdout
    # A superuser can switch triggers off; the chain still tells.
    connection = await asyncpg.connect(funding.database_url)
    try:
        await connection.execute("SET session_replication_role = replica")
        await connection.execute(
            """UPDATE audit_log SET after = jsonb_set(after, '{amount_cents}', '1') WHERE seq = 3"""
        )
    finally:
        await connection.close()
    altered = await _verify_audit(funding.database_url)
    assert altered.returncode == 1
    assert "audit log altered at row 3: its content does not match its hash" in altered.stderr


async def test_a_removed_last_row_is_seen_too(funding: Funding) -> None:
    await _some_decisions(funding)
    connection = await asyncpg.connect(funding.database_url)
    try:
        await connection.execute("SET session_replication_role = replica")
        await connection.execute("DELETE FROM audit_log WHERE seq = 5")
        result = await audit.verify(connection)
    finally:
        await connection.close()
    assert (result.first_bad_seq, result.reason) == (5, "rows after this one were removed")
