"""Creating topics at start-up, idempotently, with their declared partition counts.

Every service creates every catalog topic (cheap, and a consumer never waits for a producer to
come up first) plus the dead-letter topics of its own consumer groups.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from maillage.common.logging import get_logger

log = get_logger(__name__)

DEAD_LETTER_PARTITIONS = 1  # low volume; one partition keeps them in the order they failed


async def ensure_topics(
    bootstrap_servers: str, topics: Iterable[tuple[str, int]], *, replication_factor: int = 1
) -> list[str]:
    """Create the missing ``(name, partitions)`` topics; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
            for name, partitions in topics
            if name not in existing
        ]
        if missing:
            # Another replica may create the same topics at the same moment: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("topics created", topics=[topic.name for topic in missing])
        return [topic.name for topic in missing]
    finally:
        await admin.close()
