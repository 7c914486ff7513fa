"""Fixtures of the backbone tests: a private world (catalog, topic, tables) and its pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from backbone_world import World, new_world

from maillage.common.db import create_pool, migrate_service
from maillage.common.topics import ensure_topics


@pytest.fixture
async def world(
    database_url: str, kafka_bootstrap_servers: str, kafka_idempotent_producer: bool, tmp_path: Path
) -> World:
    world = new_world(database_url, kafka_bootstrap_servers, kafka_idempotent_producer, tmp_path)
    await migrate_service(database_url, world.migrations)
    await ensure_topics(kafka_bootstrap_servers, [(world.topic.name, world.topic.partitions)])
    return world


@pytest.fixture
async def pool(world: World) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(world.database_url, max_size=20)
    try:
        yield pool
    finally:
        await pool.close()
