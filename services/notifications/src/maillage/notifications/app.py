"""Composition root of the notifications service: settings, broker, routes, workers, ASGI app.

Run it with ``uvicorn maillage.notifications.app:create --factory`` (``maillage dev`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
from fastapi import FastAPI
from pydantic import Field, SecretStr, model_validator

from maillage.common import auth
from maillage.common.http import create_app
from maillage.common.ratelimit import TokenBucket
from maillage.common.sealing import DEV_PRIVATE_KEY_PEM, OpeningKeys, SealingKeyError
from maillage.common.settings import ServiceSettings, service_config
from maillage.notifications import api, consumers, domain, gauges, mail, ssrf
from maillage.notifications.delivery import DeliveryWorker
from maillage.notifications.endpoint_warnings import DisableWarningWorker
from maillage.notifications.mail import MailWorker, SmtpServer, TlsMode
from maillage.notifications.secretbox import SecretBox

MIGRATIONS = Path(__file__).parent / "migrations"
DESCRIPTION = (
    "Notifications: every event a partner cares about, pushed by signed webhook and by e-mail."
)
DEV_SECRET_ENCRYPTION_KEY = "maillage-development-only-webhook-secret-key"  # noqa: S105 - public on purpose


class NotificationsSettings(ServiceSettings):
    model_config = service_config("notifications")

    service_name: str = "notifications"
    # SSRF policy: https only and public addresses only, unless development or tests say otherwise.
    webhook_allow_http: bool = Field(
        default=False,
        description="Accept http:// endpoints (development and tests only: refused in production)",
    )
    webhook_allowed_hosts: frozenset[str] = Field(
        default=frozenset(),
        description="Host names or networks exempt from the private-address refusal "
        "(development and tests only: refused in production)",
    )
    webhook_retry_schedule_seconds: tuple[float, ...] = Field(
        default=tuple(delay.total_seconds() for delay in domain.DEFAULT_RETRY_SCHEDULE),
        min_length=1,
        description="Delay before each attempt: the first is usually 0",
    )
    webhook_disable_after_hours: float = Field(default=5 * 24, gt=0)
    webhook_max_concurrency: int = Field(default=50, ge=1, description="Attempts in flight")
    webhook_per_endpoint_concurrency: int = Field(default=4, ge=1)
    webhook_poll_interval_seconds: float = Field(default=1.0, gt=0)

    # Encrypts the webhook signing secrets at rest; production sets its own
    # (NOTIFICATIONS_SECRET_ENCRYPTION_KEY, e.g. `openssl rand -hex 32`).
    secret_encryption_key: SecretStr = SecretStr(DEV_SECRET_ENCRYPTION_KEY)

    # Opens the school claim codes the registry seals for this service (decision 63).
    claim_seal_private_key: SecretStr | None = Field(
        default=None,
        description="PEM of this service's X25519 private key (openssl genpkey -algorithm "
        "X25519); the registry seals school claim codes for its public half. Required in "
        "production; elsewhere the public development key is used when unset",
    )
    claim_seal_retired_keys: tuple[SecretStr, ...] = Field(
        default=(),
        description="Previous private keys (PEM, a JSON list), kept during a rotation until the "
        "codes sealed for them have expired (a day)",
    )

    @property
    def claim_opening(self) -> OpeningKeys:
        """The keys school claim codes are opened with: the configured one (else, in dev and
        test, the public development key) and the retired ones."""
        current = (
            self.claim_seal_private_key.get_secret_value()
            if self.claim_seal_private_key is not None
            else DEV_PRIVATE_KEY_PEM
        )
        retired = [key.get_secret_value() for key in self.claim_seal_retired_keys]
        return OpeningKeys.from_pems([current, *retired])

    @model_validator(mode="after")
    def _claim_codes_can_be_opened(self) -> NotificationsSettings:
        if self.environment == "production" and self.claim_seal_private_key is None:
            raise ValueError(
                "set NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY (PEM: openssl genpkey -algorithm "
                "X25519) and give its public half to the registry: without it no school can be "
                "sent its claim code"
            )
        try:
            opening = self.claim_opening
        except SealingKeyError as error:
            raise ValueError(f"NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY: {error}") from None
        dev = OpeningKeys.from_pems([DEV_PRIVATE_KEY_PEM])
        if self.environment == "production" and opening.key_ids & dev.key_ids:
            raise ValueError(
                "set NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY: the development key is public"
            )
        return self

    # The subscriptions API.
    webhook_max_endpoints_per_partner: int = Field(default=20, ge=1)
    email_max_channels_per_partner: int = Field(default=10, ge=1)
    email_confirmation_ttl_hours: float = Field(default=48, gt=0)
    email_confirmations_per_minute: int = Field(
        default=10, ge=1, description="Confirmation attempts accepted per client address and minute"
    )

    # E-mail: SMTP (Mailpit in compose), the sender, and where links in mail point.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_tls: TlsMode = Field(
        default="none", description="none (local relay), starttls (port 587) or tls (port 465)"
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30, gt=0)
    mail_from: str = Field(
        default="Maillage <notifications@maillage.localhost>", description="The From header"
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8005", description="This service's public address, for links"
    )
    mail_poll_interval_seconds: float = Field(default=1.0, gt=0)
    mail_retry_first_seconds: float = Field(default=30, gt=0, description="Doubles per failure")
    mail_retry_cap_seconds: float = Field(default=900, gt=0)
    webhook_disable_warning_hours: float = Field(
        default=24, gt=0, description="How long before disabling a failing endpoint it is warned"
    )

    @model_validator(mode="after")
    def _production_has_its_own_key(self) -> NotificationsSettings:
        if self.environment == "production" and (
            self.secret_encryption_key.get_secret_value() == DEV_SECRET_ENCRYPTION_KEY
        ):
            raise ValueError(
                "set NOTIFICATIONS_SECRET_ENCRYPTION_KEY: the development one is public"
            )
        return self

    @model_validator(mode="after")
    def _production_calls_public_https_only(self) -> NotificationsSettings:
        # The two exemptions are for tests and `maillage dev --local-webhooks`: in production they
        # would let a partner make the service call loopback or the internal network.
        if self.environment == "production" and (
            self.webhook_allow_http or self.webhook_allowed_hosts
        ):
            raise ValueError(
                "NOTIFICATIONS_WEBHOOK_ALLOW_HTTP and NOTIFICATIONS_WEBHOOK_ALLOWED_HOSTS are for "
                "development and tests: production calls public https endpoints only"
            )
        return self

    @property
    def retry_schedule(self) -> tuple[timedelta, ...]:
        return tuple(timedelta(seconds=delay) for delay in self.webhook_retry_schedule_seconds)


def delivery_worker(settings: NotificationsSettings) -> Callable[[asyncpg.Pool], DeliveryWorker]:
    def build(pool: asyncpg.Pool) -> DeliveryWorker:
        return DeliveryWorker(
            pool,
            allow_http=settings.webhook_allow_http,
            allowed_hosts=settings.webhook_allowed_hosts,
            schedule=settings.retry_schedule,
            max_concurrency=settings.webhook_max_concurrency,
            per_endpoint=settings.webhook_per_endpoint_concurrency,
            poll_interval=settings.webhook_poll_interval_seconds,
            disable_after=timedelta(hours=settings.webhook_disable_after_hours),
            secret_box=SecretBox(settings.secret_encryption_key.get_secret_value()),
        )

    return build


def mail_worker(settings: NotificationsSettings) -> Callable[[asyncpg.Pool], MailWorker]:
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    smtp = SmtpServer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        from_address=settings.mail_from,
        tls=settings.smtp_tls,
        username=settings.smtp_username,
        password=password,
        timeout=settings.smtp_timeout_seconds,
    )

    def build(pool: asyncpg.Pool) -> MailWorker:
        return MailWorker(
            pool,
            smtp,
            poll_interval=settings.mail_poll_interval_seconds,
            retry_first=timedelta(seconds=settings.mail_retry_first_seconds),
            retry_cap=timedelta(seconds=settings.mail_retry_cap_seconds),
        )

    return build


def disable_warning_worker(
    settings: NotificationsSettings,
) -> Callable[[asyncpg.Pool], DisableWarningWorker]:
    def build(pool: asyncpg.Pool) -> DisableWarningWorker:
        return DisableWarningWorker(
            pool,
            disable_after=timedelta(hours=settings.webhook_disable_after_hours),
            warn_ahead=timedelta(hours=settings.webhook_disable_warning_hours),
        )

    return build


def create(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()  # type: ignore[call-arg]  # read from the environment
    app = create_app(
        settings,
        title="Maillage notifications",
        description=DESCRIPTION,
        routers=[api.router],
        consumers=consumers.CONSUMERS,
        migrations=MIGRATIONS,
        workers=[
            delivery_worker(settings),
            mail_worker(settings),
            disable_warning_worker(settings),
        ],
        gauges=gauges.GAUGES,
    )
    mail.configure(public_base_url=settings.public_base_url)
    consumers.configure(claim_opening=settings.claim_opening)
    app.state.settings = settings
    # writes refused to suspended partners (decision 40)
    app.state.partner_status = auth.partners_table_status("id")
    app.state.secret_box = SecretBox(settings.secret_encryption_key.get_secret_value())
    app.state.webhook_resolver = ssrf.system_resolver  # subscription-time DNS (tests replace it)
    app.state.rate_limits = {
        "email confirmation": TokenBucket(rate=settings.email_confirmations_per_minute, per=60)
    }
    return app
