"""Session fixtures shared by every test: one real Kafka broker and one real PostgreSQL server.

They are the embedded parts ``maillage dev`` runs (same code), unless ``KAFKA_BOOTSTRAP_SERVERS``
or ``DATABASE_URL`` point at existing ones. Each test that needs a database gets its own, freshly
created and dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from jwt_fixtures import JWKSServer, SigningKey, ed25519_key

from maillage.cli.dev import database_url_for
from maillage.cli.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    drop_database,
    ensure_database,
    free_port,
)
from maillage.common.telemetry import configure_telemetry


@pytest.fixture(scope="session", autouse=True)
def telemetry() -> None:
    """The SDK tracer provider, as every service process installs it: trace context then
    exists in tests whatever their order (the global provider can be set only once)."""
    configure_telemetry("tests")


@pytest.fixture(autouse=True)
def logs_outlive_captured_output() -> Iterator[None]:
    """A test that builds an app under ``capsys`` binds the log handler to the captured stream,
    which closes with the test: later tests' lines then end in "--- Logging error ---". Point
    such a handler back at the real stderr."""
    yield
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.StreamHandler) and getattr(stream, "closed", False):
            handler.stream = sys.__stderr__  # setStream would flush the closed one


@pytest.fixture(scope="session")
async def kafka_bootstrap_servers() -> AsyncIterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = EmbeddedBroker(free_port())
    await broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        await broker.stop()


@pytest.fixture(scope="session")
async def postgres_server_url() -> AsyncIterator[str]:
    """URL of a PostgreSQL server on which tests may create and drop databases."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    # Not under pytest's temporary root: another pytest session resets its permissions, and the
    # server runs as another user when we are root.
    data_dir = Path(tempfile.mkdtemp(prefix="maillage-test-postgres-"))
    server = EmbeddedPostgres(data_dir, free_port())
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A new empty database for one test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    await ensure_database(postgres_server_url, name)
    try:
        yield database_url_for(postgres_server_url, name)
    finally:
        await drop_database(postgres_server_url, name)


@pytest.fixture(scope="session")
def kafka_idempotent_producer() -> bool:
    """The embedded tansu broker does not support the idempotent producer; Apache Kafka does."""
    return bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))


@pytest.fixture(scope="session")
def jwks() -> Iterator[tuple[JWKSServer, SigningKey]]:
    """A real JWKS served over HTTP on loopback, publishing one Ed25519 key to sign with."""
    server = JWKSServer()
    server.start()
    key = ed25519_key()
    server.publish(key)
    yield server, key
    server.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).parent
