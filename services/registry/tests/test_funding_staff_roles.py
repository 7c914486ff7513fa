"""The three separated duties of programme 147 funding are staff roles of the registry:
``maillage registry create-staff`` creates them, the database keeps them, tokens carry them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from maillage.common.auth import ROLES
from maillage.common.db import migrate_service
from maillage.registry import app as registry_app
from maillage.registry.domain import STAFF_ROLES

MAILLAGE = str(Path(sys.executable).parent / "maillage")


async def _create_staff(
    database_url: str, email: str, *roles: str
) -> subprocess.CompletedProcess[str]:
    options = [option for role in roles for option in ("--role", role)]
    return await asyncio.to_thread(
        subprocess.run,
        [MAILLAGE, "registry", "create-staff", email, *options, "--database-url", database_url],
        env={**os.environ, "MAILLAGE_STAFF_PASSWORD": "a long funding password"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_ordonnateur_and_comptable_accounts_are_created_and_kept(database_url: str) -> None:
    await migrate_service(database_url, registry_app.MIGRATIONS)
    ordonnateur = await _create_staff(database_url, "ordonnateur@prefecture.test", "ordonnateur")
    comptable = await _create_staff(database_url, "comptable@drfip.test", "comptable")
    assert ordonnateur.returncode == 0, ordonnateur.stderr
    assert comptable.returncode == 0, comptable.stderr
    assert "(ordonnateur)" in ordonnateur.stdout
    unknown = await _create_staff(database_url, "someone@prefecture.test", "tresorier")
    assert unknown.returncode == 2
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT email, roles FROM staff_accounts ORDER BY email")
    finally:
        await connection.close()
    assert [(row["email"], row["roles"]) for row in rows] == [
        ("comptable@drfip.test", ["comptable"]),
        ("ordonnateur@prefecture.test", ["ordonnateur"]),
    ]


def test_tokens_carry_the_funding_roles() -> None:
    # TokenVerifier keeps only the roles it knows: the funding ones must be among them.
    assert {"officer", "ordonnateur", "comptable"} <= ROLES
    assert {"officer", "ordonnateur", "comptable"} <= STAFF_ROLES
