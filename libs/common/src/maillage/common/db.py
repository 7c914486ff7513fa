"""PostgreSQL through asyncpg: the pool, a transaction helper and the migration runner.

Migrations are plain numbered SQL files (``0001_partners.sql``) in a service's ``migrations``
folder. Each is applied once, in its own transaction, and recorded with its SHA-256 in
``schema_migrations`` under its component: ``common`` for the tables every service has (outbox,
inbox, idempotency keys: this package's own ``migrations`` folder, applied first), ``service``
for the service's own.
A file whose content changed after it was applied stops the service: history is never
rewritten silently. Replicas starting together serialise on an advisory lock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from maillage.common.logging import get_logger

log = get_logger(__name__)

# Key of the advisory lock held while migrating ("maillage" in ASCII, fits a bigint).
MIGRATION_LOCK_KEY = 0x6D61_696C_6C61_6765

COMMON_MIGRATIONS = Path(__file__).parent / "migrations"

# What a long-running loop (outbox relay, background workers) survives and retries: the database
# is unreachable, restarting or refusing, or a connection was left mid-operation when the server
# went away (asyncpg's InternalClientError, seen while PostgreSQL shuts down).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """An asyncpg pool; ``jsonb`` columns come back as Python objects."""

    async def init(connection: asyncpg.Connection) -> None:
        import json

        await connection.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )

    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init, command_timeout=30
    )
    return pool


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """One connection and one transaction: committed on exit, rolled back on exception."""
    async with pool.acquire() as connection, connection.transaction():
        yield connection


class MigrationError(RuntimeError):
    """The migrations folder or the recorded history is not what it must be."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Path) -> list[Migration]:
    """Read ``NNNN_name.sql`` files in order; refuse stray files and duplicate numbers."""
    migrations: list[Migration] = []
    seen: dict[int, str] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        version = int(match.group(1))
        if version in seen:
            raise MigrationError(f"{path.name} and {seen[version]} share number {version:04d}")
        seen[version] = path.name
        migrations.append(Migration(version, path.name, path.read_text(encoding="utf-8")))
    return migrations


async def migrate_service(dsn: str, folder: Path) -> list[str]:
    """Apply the common tables' migrations, then the service's own from ``folder``."""
    connection: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        applied = await migrate(connection, COMMON_MIGRATIONS, component="common")
        return applied + await migrate(connection, folder, component="service")
    finally:
        await connection.close()


async def migrate(
    dsn_or_connection: str | asyncpg.Connection, folder: Path, *, component: str = "service"
) -> list[str]:
    """Apply the pending migrations of ``folder``; return the names applied by this call."""
    migrations = load_migrations(folder)
    if isinstance(dsn_or_connection, str):
        connection: asyncpg.Connection = await asyncpg.connect(dsn_or_connection)
        try:
            return await _migrate(connection, migrations, component)
        finally:
            await connection.close()
    return await _migrate(dsn_or_connection, migrations, component)


async def _migrate(
    connection: asyncpg.Connection, migrations: list[Migration], component: str
) -> list[str]:
    # A session-level lock: held across the per-file transactions, released in `finally`.
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                component  text NOT NULL,
                version    integer NOT NULL,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (component, version)
            )
            """
        )
        rows = await connection.fetch(
            "SELECT version, name, checksum FROM schema_migrations WHERE component = $1", component
        )
        applied: dict[int, Any] = {row["version"]: row for row in rows}
        done: list[str] = []
        for migration in migrations:
            recorded = applied.get(migration.version)
            if recorded is not None:
                if recorded["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"{migration.name} was changed after it was applied "
                        f"(recorded as {recorded['name']}); add a new migration instead"
                    )
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (component, version, name, checksum)"
                    " VALUES ($1, $2, $3, $4)",
                    component,
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("migration applied", component=component, migration=migration.name)
            done.append(migration.name)
        return done
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
