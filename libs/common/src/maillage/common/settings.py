"""Service settings, read from the environment with one prefix per service.

A service declares ``class RegistrySettings(ServiceSettings)`` with
``model_config = service_config("registry")``, so ``REGISTRY_DATABASE_URL`` configures the
registry and nothing else. Secrets are ``SecretStr``: they print as ``**********`` and
:meth:`ServiceSettings.loggable` never exposes them.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def service_config(service: str) -> SettingsConfigDict:
    """The settings configuration of one service: ``<SERVICE>_`` environment prefix."""
    return SettingsConfigDict(env_prefix=f"{service.upper()}_", extra="ignore")


# The default share of root traces kept in production, decided with bench/backbone.py
# (docs/performance.md, "Tracing cost"): set <SERVICE>_TRACE_SAMPLE_RATIO to change it.
PRODUCTION_TRACE_SAMPLE_RATIO = 0.01


class ServiceSettings(BaseSettings):
    """What every service needs to run. Subclasses add their own fields."""

    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = Field(description="Short name: registry, cordees, stages3e, ...")
    environment: Literal["dev", "test", "production"] = "production"
    database_url: SecretStr = Field(description="postgresql:// DSN of this service's database")
    database_pool_min: int = Field(default=1, ge=0)
    database_pool_max: int = Field(default=10, ge=1)
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # On for Apache Kafka; the embedded tansu broker does not support it (maillage dev: off).
    kafka_idempotent_producer: bool = True
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_max_message_bytes: int = Field(
        default=1_048_576,
        ge=4096,
        description="The largest record the broker takes (its message.max.bytes): the producers'"
        " max_request_size, and the limit outbox.publish refuses events over",
    )
    # Event backbone
    outbox_batch_size: int = Field(default=500, ge=1)
    outbox_retention_hours: float = Field(default=168, gt=0, description="Published rows kept")
    inbox_retention_days: float = Field(default=30, gt=0, description="Applied event ids kept")
    consumer_max_attempts: int = Field(default=5, ge=1, description="Before a dead letter")
    consumer_fetch_max_wait_ms: int = Field(default=100, ge=1, le=5000)
    consumer_batch_timeout_ms: int = Field(default=20, ge=1, le=5000)
    migrate_on_start: bool = True
    # Authentication: tokens are verified locally against the issuer's JWKS.
    jwks_url: str = "http://127.0.0.1:8001/.well-known/jwks.json"
    jwt_issuer: str = "http://127.0.0.1:8001"
    jwt_audience: str = "maillage"
    # HTTP
    max_request_bytes: int = Field(default=1_048_576, ge=1, description="Request body limit")
    # Traces (docs/architecture.md decision 50; figures in docs/performance.md)
    trace_sample_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of the traces that start in this service (a request without a"
        " traceparent, an event written outside any trace) that are recorded and exported;"
        " later spans follow the decision carried by traceparent. Failures and dead letters are"
        " always recorded. Default (None): 1 in dev and test, PRODUCTION_TRACE_SAMPLE_RATIO"
        " in production.",
    )
    trace_span_queue_size: int = Field(
        default=8192, ge=1, description="Finished spans waiting for export; dropped beyond"
    )
    trace_span_export_batch_size: int = Field(
        default=1024, ge=1, description="Spans per OTLP export request"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Addresses or networks of the reverse proxies whose X-Forwarded-For is "
        "believed (JSON list: '[\"10.0.0.0/8\"]'); empty: the peer is the client",
    )
    # Metrics (maillage.common.metrics): how often lag and readiness, and domain gauges, are read
    metrics_lag_seconds: float = Field(default=15, gt=0, le=3600, description="Lag, readiness")
    metrics_gauge_seconds: float = Field(default=60, gt=0, le=3600, description="Domain gauges")
    # Logs
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"

    def trace_ratio(self) -> float:
        """The sampling ratio in force: the setting, else 1 in dev and test (every trace, for
        whoever debugs), else :data:`PRODUCTION_TRACE_SAMPLE_RATIO`."""
        if self.trace_sample_ratio is not None:
            return self.trace_sample_ratio
        return 1.0 if self.environment in ("dev", "test") else PRODUCTION_TRACE_SAMPLE_RATIO

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            ipaddress.ip_network(entry.strip(), strict=False)  # ValueError names the bad one
        return entries

    def loggable(self) -> dict[str, Any]:
        """The settings as a dict safe to log: secrets masked, passwords stripped from URLs."""
        out: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = mask_url(value.get_secret_value()) if name.endswith("_url") else "***"
            else:
                out[name] = value
        return out


def mask_url(url: str) -> str:
    """``postgresql://u:secret@h/db`` → ``postgresql://u:***@h/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
