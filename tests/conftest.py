"""Fixtures of the repository-level tests (the root conftest.py starts the broker and database)."""

from __future__ import annotations

import pytest
from jwt_fixtures import JWKSServer, SigningKey
from otlp_sink import ExportedMetric
from test_metrics_export import export_from_services


@pytest.fixture(scope="session")
async def exported_metrics(
    postgres_server_url: str,
    kafka_bootstrap_servers: str,
    jwks: tuple[JWKSServer, SigningKey],
) -> list[ExportedMetric]:
    """What cordees and notifications export over OTLP in one real run (once per session)."""
    server, _ = jwks
    return await export_from_services(postgres_server_url, kafka_bootstrap_servers, server.url)
