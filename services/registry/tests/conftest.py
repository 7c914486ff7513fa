"""Fixtures of the registry's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from maillage.common.db import create_pool, migrate_service
from maillage.registry import reference

MIGRATIONS = Path(reference.__file__).parent / "migrations"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a new database with the registry's migrations applied."""
    await migrate_service(database_url, MIGRATIONS)
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()
