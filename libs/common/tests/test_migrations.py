"""The migration runner against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from maillage.common.db import MigrationError, load_migrations, migrate


def write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql, encoding="utf-8")


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    write(tmp_path, "0001_things.sql", "CREATE TABLE things (id int PRIMARY KEY, name text);")
    write(tmp_path, "0002_thing_rows.sql", "INSERT INTO things VALUES (1, 'first');")
    return tmp_path


async def test_applies_each_file_once_in_order(database_url: str, migrations: Path) -> None:
    assert await migrate(database_url, migrations) == ["0001_things.sql", "0002_thing_rows.sql"]
    assert await migrate(database_url, migrations) == []

    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM things") == 1
        recorded = await connection.fetch(
            "SELECT version, name FROM schema_migrations WHERE component = 'service' ORDER BY 1"
        )
        assert [(r["version"], r["name"]) for r in recorded] == [
            (1, "0001_things.sql"),
            (2, "0002_thing_rows.sql"),
        ]
    finally:
        await connection.close()


async def test_a_new_file_is_applied_after_the_others(database_url: str, migrations: Path) -> None:
    await migrate(database_url, migrations)
    write(migrations, "0003_more.sql", "INSERT INTO things VALUES (2, 'second');")
    assert await migrate(database_url, migrations) == ["0003_more.sql"]


async def test_concurrent_runners_apply_once(database_url: str, migrations: Path) -> None:
    # A slow first migration widens the window in which replicas would collide without the lock.
    write(
        migrations,
        "0001_things.sql",
        "SELECT pg_sleep(0.3); CREATE TABLE things (id int PRIMARY KEY, name text);",
    )
    results = await asyncio.gather(*(migrate(database_url, migrations) for _ in range(4)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == ["0001_things.sql", "0002_thing_rows.sql"]
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM things") == 1
    finally:
        await connection.close()


async def test_a_changed_applied_file_is_refused(database_url: str, migrations: Path) -> None:
    await migrate(database_url, migrations)
    write(migrations, "0002_thing_rows.sql", "INSERT INTO things VALUES (1, 'rewritten');")
    with pytest.raises(
        MigrationError, match=r"0002_thing_rows\.sql was changed after it was applied"
    ):
        await migrate(database_url, migrations)


async def test_a_failing_migration_leaves_nothing_behind(
    database_url: str, migrations: Path
) -> None:
    write(migrations, "0003_broken.sql", "CREATE TABLE half (id int); SELECT no_such_function();")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(database_url, migrations)
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT to_regclass('half')") is None
        assert await connection.fetchval("SELECT max(version) FROM schema_migrations") == 2
        # The advisory lock was released: another runner gets through.
        assert (
            await connection.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            == 0
        )
    finally:
        await connection.close()


def test_file_names_are_checked(tmp_path: Path) -> None:
    write(tmp_path, "1_bad.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_lower_snake\.sql"):
        load_migrations(tmp_path)
    (tmp_path / "1_bad.sql").unlink()
    write(tmp_path, "0001_a.sql", "SELECT 1;")
    write(tmp_path, "0001_b.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="share number 0001"):
        load_migrations(tmp_path)


def test_every_service_ships_valid_migrations() -> None:
    from maillage.cli.dev import SERVICES, migrations_folder

    for service in SERVICES:
        found = load_migrations(migrations_folder(service))
        assert [migration.version for migration in found][:1] == [1], service
