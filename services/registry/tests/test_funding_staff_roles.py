"""The three separated duties of programme 147 funding are staff roles of the registry:
``maillage registry create-staff`` creates them, the database keeps them, tokens carry them; and
with them where the account acts (decision 64): its départements, or national."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import jwt
import pytest
from typer.testing import CliRunner, Result

from maillage.cli import registry as registry_cli
from maillage.common.auth import ROLES
from maillage.common.db import create_pool, migrate_service
from maillage.registry import app as registry_app
from maillage.registry import domain, store, tokens
from maillage.registry.domain import STAFF_ROLES

MAILLAGE = str(Path(sys.executable).parent / "maillage")


async def _create_staff(
    database_url: str, email: str, *roles: str, where: tuple[str, ...] = ("--departement", "94")
) -> subprocess.CompletedProcess[str]:
    options = [option for role in roles for option in ("--role", role)] + list(where)
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
    assert "(ordonnateur; 94)" in ordonnateur.stdout
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


def _invoke(database_url: str, email: str, *options: str) -> Result:
    """``maillage registry create-staff`` in this process (no interpreter start: fast)."""
    return CliRunner().invoke(
        registry_cli.app,
        ["create-staff", email, *options, "--database-url", database_url],
        env={"MAILLAGE_STAFF_PASSWORD": "a long funding password"},
    )


async def test_staff_accounts_carry_their_departements_into_their_tokens(
    database_url: str,
) -> None:
    await migrate_service(database_url, registry_app.MIGRATIONS)
    accounts = {
        "officer@ddets93-94.test": (
            "--role",
            "officer",
            "--departement",
            "94",
            "--departement",
            "93",
        ),
        "officer@anct.test": ("--role", "officer", "--national"),
        "ops@maillage.test": ("--role", "operator"),
    }
    created = {
        email: await asyncio.to_thread(_invoke, database_url, email, *options)
        for email, options in accounts.items()
    }
    for email, result in created.items():
        assert result.exit_code == 0, (email, result.output)
    assert "(officer; 93, 94)" in created["officer@ddets93-94.test"].output
    assert "(operator; national)" in created["ops@maillage.test"].output
    refused = {
        "no territory": ("--role", "officer"),
        "a code that is no département": ("--role", "officer", "--departement", "99"),
        "an operator named to a département": ("--role", "operator", "--departement", "94"),
        "national and named": ("--role", "officer", "--national", "--departement", "94"),
        "more than 20": (
            "--role",
            "officer",
            *[option for code in range(1, 22) for option in ("--departement", f"{code:02d}")],
        ),
    }
    for why, options in refused.items():
        result = await asyncio.to_thread(_invoke, database_url, "x@prefecture.test", *options)
        assert result.exit_code == 2, (why, result.output)
    issuer = tokens.Issuer(
        issuer="https://registry.test", audience="maillage", key_secret=b"k" * 32
    )
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        claims = {}
        for email in created:
            staff = await store.staff_by_email(pool, email)
            assert staff is not None
            token, _ = await issuer.issue(
                pool,
                subject=f"staff:{staff['id']}",
                partner_id=None,
                roles=list(staff["roles"]),
                departements=list(staff["departements"]),
                national=staff["national"],
            )
            claims[email] = jwt.decode(token, options={"verify_signature": False})
        with pytest.raises(asyncpg.CheckViolationError):
            await pool.execute(
                "UPDATE staff_accounts SET departements = '{20A}' WHERE email = 'ops@maillage.test'"
            )
    finally:
        await pool.close()
    assert claims["officer@ddets93-94.test"]["departements"] == ["93", "94"]
    assert "national" not in claims["officer@ddets93-94.test"]
    assert claims["officer@anct.test"]["national"] is True
    assert "departements" not in claims["officer@anct.test"]
    assert claims["ops@maillage.test"]["national"] is True


def test_a_territory_is_checked_before_it_is_kept() -> None:
    assert domain.staff_territory(["officer"], ["94", "2A", "94"], national=False) == (
        ["2A", "94"],
        False,
    )
    assert domain.staff_territory(["admin"], [], national=False) == ([], True)
    with pytest.raises(domain.InvalidTerritory):
        domain.staff_territory(["officer"], ["974", "977"], national=False)


def test_tokens_carry_the_funding_roles() -> None:
    # TokenVerifier keeps only the roles it knows: the funding ones must be among them.
    assert {"officer", "ordonnateur", "comptable"} <= ROLES
    assert {"officer", "ordonnateur", "comptable"} <= STAFF_ROLES
