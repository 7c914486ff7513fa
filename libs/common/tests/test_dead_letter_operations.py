"""Operators list and replay dead letters from the CLI and from /admin/dlq, and read the backlog
from /admin/backlog (operator role)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from backbone_world import World, new_world, read_topic
from jwt_fixtures import AUDIENCE, ISSUER, JWKSServer, SigningKey, claims

from maillage.common.auth import JWKSCache, TokenVerifier
from maillage.common.events import Envelope
from maillage.common.http import create_app
from maillage.common.inbox import DeadLetterProducer, EventConsumer, dead_letter_topic
from maillage.common.settings import ServiceSettings
from maillage.common.topics import ensure_topics

MAILLAGE = str(Path(sys.executable).parent / "maillage")


@pytest.fixture
async def dead_lettered(
    kafka_bootstrap_servers: str, kafka_idempotent_producer: bool, tmp_path: Path
) -> tuple[World, str, list[uuid.UUID]]:
    """Two dead letters of a consumer group of a fresh service, as the inbox runner writes them."""
    world = new_world("unused", kafka_bootstrap_servers, kafka_idempotent_producer, tmp_path)
    group = f"{world.service}.fanout"
    topic = dead_letter_topic(group)
    await ensure_topics(kafka_bootstrap_servers, [(topic, 1), (world.topic.name, 3)])
    producer = DeadLetterProducer(
        kafka_bootstrap_servers, client_id="t", idempotent=kafka_idempotent_producer
    )
    ids = [uuid.uuid4(), uuid.uuid4()]
    try:
        for index, event_id in enumerate(ids):
            envelope = Envelope(
                event_id,
                world.event_type,
                f"/maillage/{world.service}",
                "k1",
                datetime(2026, 11, 21, tzinfo=UTC),
            )
            headers = envelope.headers() | {
                "dlq-consumer-group": group,
                "dlq-original-topic": world.topic.name,
                "dlq-original-partition": "2",
                "dlq-original-offset": str(40 + index),
                "dlq-error-class": "builtins.KeyError",
                "dlq-error-message": "'contact'",
                "dlq-attempts": "1",
                "dlq-failed-at": "2026-11-21T12:00:00+00:00",
            }
            await producer.send(topic, b"k1", b'{"thing_id": "k1", "seq": %d}' % index, headers)
    finally:
        await producer.stop()
    return world, topic, ids


def maillage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MAILLAGE, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_cli_lists_and_replays_dead_letters(
    dead_lettered: tuple[World, str, list[uuid.UUID]], kafka_bootstrap_servers: str
) -> None:
    world, topic, ids = dead_lettered
    bootstrap = ["--bootstrap", kafka_bootstrap_servers, "--service", world.service]

    listed = maillage("dlq", "list", *bootstrap)
    assert listed.returncode == 0, listed.stderr
    assert f"{topic}@0  waiting" in listed.stdout
    assert str(ids[0]) in listed.stdout
    assert str(ids[1]) in listed.stdout
    assert f"from {world.topic.name}[2]@40 in {world.service}.fanout, 1 attempt(s)" in listed.stdout
    assert "builtins.KeyError: 'contact'" in listed.stdout

    wrong = maillage("dlq", "replay", *bootstrap)
    assert wrong.returncode == 2
    assert "give either --event-id ID or --all" in wrong.stderr

    one = maillage("dlq", "replay", *bootstrap, "--event-id", str(ids[1]))
    assert one.returncode == 0, one.stderr
    assert f"replayed {ids[1]}" in one.stdout
    unknown = maillage("dlq", "replay", *bootstrap, "--event-id", str(uuid.uuid4()))
    assert unknown.returncode == 1

    everything = maillage("dlq", "replay", *bootstrap, "--all")
    assert "2 dead letter(s) replayed" in everything.stdout
    assert "0 dead letter(s) replayed" in maillage("dlq", "replay", *bootstrap, "--all").stdout
    assert f"{topic}@1  replayed" in maillage("dlq", "list", *bootstrap).stdout

    records = asyncio.run(read_topic(kafka_bootstrap_servers, world.topic.name, at_least=3))
    replayed = [dict(record.headers)["ce_id"].decode() for record in records]
    # One by id, then both by --all: same event ids, no dlq-* headers, on the original topic.
    assert sorted(replayed) == sorted([str(ids[1]), str(ids[0]), str(ids[1])])
    assert all(not name.startswith("dlq-") for r in records for name, _ in r.headers)


async def test_admin_dlq_is_for_operators(
    dead_lettered: tuple[World, str, list[uuid.UUID]],
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    jwks: tuple[JWKSServer, SigningKey],
) -> None:
    world, _, ids = dead_lettered
    server, key = jwks
    settings = ServiceSettings(
        service_name=world.service,
        database_url="postgresql://unused@127.0.0.1/unused",
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
        jwks_url=server.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    app = create_app(settings, title="t", description="t", catalog=world.catalog)
    app.state.token_verifier = TokenVerifier(
        JWKSCache(server.url), issuer=ISSUER, audience=AUDIENCE
    )
    operator = {"Authorization": f"Bearer {key.sign(claims(roles=['operator']))}"}
    partner = {"Authorization": f"Bearer {key.sign(claims(roles=['partner']))}"}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/admin/dlq")).status_code == 401
            forbidden = await client.get("/admin/dlq", headers=partner)
            assert forbidden.status_code == 403
            assert forbidden.json()["code"] == "forbidden"
            assert (await client.get("/admin/backlog")).status_code == 401
            assert (await client.get("/admin/backlog", headers=partner)).status_code == 403

            listed = await client.get("/admin/dlq", headers=operator)
            assert listed.status_code == 200
            items = listed.json()["items"]
            assert [item["event_id"] for item in items] == [str(i) for i in ids]
            assert items[0]["error_class"] == "builtins.KeyError"

            invalid = await client.post("/admin/dlq/replay", json={}, headers=operator)
            assert invalid.status_code == 422
            assert invalid.json()["code"] == "validation_failed"
            missing = await client.post(
                "/admin/dlq/replay", json={"event_id": str(uuid.uuid4())}, headers=operator
            )
            assert missing.status_code == 404
            assert missing.json()["code"] == "dead_letter_not_found"
            replayed = await client.post("/admin/dlq/replay", json={"all": True}, headers=operator)
            assert replayed.status_code == 200
            assert len(replayed.json()["replayed"]) == 2
            again = await client.post("/admin/dlq/replay", json={"all": True}, headers=operator)
            assert again.json()["replayed"] == []
    finally:
        await app.state.runtime.dead_letters.stop()


async def test_admin_backlog_counts_what_waits_in_the_outbox_and_each_groups_lag(
    world: World,
    pool: asyncpg.Pool,
    kafka_bootstrap_servers: str,
    kafka_idempotent_producer: bool,
    jwks: tuple[JWKSServer, SigningKey],
) -> None:
    """An event written 90 s ago and not published (no relay runs here) is the backlog; a
    consumer group not started holds no partition, so its lag is 0 over 0 partitions."""
    server, key = jwks
    settings = ServiceSettings(
        service_name=world.service,
        database_url=world.database_url,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_idempotent_producer=kafka_idempotent_producer,
        jwks_url=server.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    consumer = EventConsumer(f"{world.service}.waiting", [world.topic], catalog=world.catalog)
    app = create_app(
        settings, title="t", description="t", catalog=world.catalog, consumers=[consumer]
    )
    app.state.token_verifier = TokenVerifier(
        JWKSCache(server.url), issuer=ISSUER, audience=AUDIENCE
    )
    app.state.runtime.pool = pool  # the lifespan (and its relay) is not run
    await pool.execute(
        "INSERT INTO outbox (event_id, topic, key, type, headers, payload, created_at)"
        " VALUES ($1, $2, 'k1', $3, '{}', '{}', clock_timestamp() - interval '90 seconds')",
        uuid.uuid4(),
        world.topic.name,
        world.event_type,
    )
    operator = {"Authorization": f"Bearer {key.sign(claims(roles=['operator']))}"}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.get("/admin/backlog", headers=operator)
        assert answer.status_code == 200, answer.text
        backlog = answer.json()
        assert backlog["outbox"]["unpublished"] == 1
        assert 90 <= backlog["outbox"]["oldest_age_seconds"] < 3600
        assert backlog["consumers"] == [
            {"group": f"{world.service}.waiting", "lag": 0, "partitions": 0}
        ]
    finally:
        await app.state.runtime.dead_letters.stop()
