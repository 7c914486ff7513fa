"""Composition root of the registry service: settings, broker, routes and the ASGI app.

Run it with ``uvicorn maillage.registry.app:create --factory`` (``maillage dev`` does).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field, SecretStr, model_validator

from maillage.common import auth
from maillage.common.http import create_app
from maillage.common.ratelimit import FailureThrottle, TokenBucket
from maillage.common.sealing import DEV_PRIVATE_KEY_PEM, SealingKey, SealingKeyError, public_pem
from maillage.common.settings import ServiceSettings, service_config
from maillage.registry import api, consumers, tokens

MIGRATIONS = Path(__file__).parent / "migrations"
DESCRIPTION = (
    "The registre des partenaires: partner organisations register, are verified and receive "
    "their credentials."
)


DEV_KEY_SECRET = "maillage-development-only-key-encryption-secret"  # noqa: S105 - public on purpose


class RegistrySettings(ServiceSettings):
    model_config = service_config("registry")

    service_name: str = "registry"
    registrations_per_minute: int = Field(
        default=10, ge=1, description="Registrations accepted per client address and minute"
    )
    token_requests_per_minute: int = Field(default=60, ge=1)
    free_failures_per_account: int = Field(
        default=5,
        ge=1,
        description="Wrong secrets or passwords for one client id or username before each "
        "further one doubles its wait (1 s, 2 s, ... up to 15 min)",
    )
    failure_delay_seconds: float = Field(
        default=1, gt=0, le=900, description="The first wait after the free failures; it doubles"
    )
    free_failures_per_address: int = Field(
        default=20,
        ge=1,
        description="The same per client address (IPv6: per /64), whatever the account",
    )
    token_ttl_minutes: float = Field(default=15, gt=0, le=60)
    registration_token_days: float = Field(
        default=30,
        gt=0,
        le=365,
        description="How long a registration access token (POST /partners) lives",
    )
    signing_key_rotation_days: float = Field(default=30, gt=0)
    signing_key_publish_ahead_seconds: float = Field(
        default=600,
        ge=0,
        description="How long the next signing key is in the JWKS before it may sign: longer "
        "than verifiers cache the JWKS (300 s), so none meets a key it does not know",
    )
    # Encrypts the signing keys at rest; production sets its own (REGISTRY_KEY_ENCRYPTION_SECRET).
    key_encryption_secret: SecretStr = SecretStr(DEV_KEY_SECRET)
    # Notifications' public key: school claim codes are sealed for it (decision 63).
    claim_seal_public_key: str | None = Field(
        default=None,
        description="PEM of the notifications service's X25519 public key (openssl pkey "
        "-pubout); school claim codes travel sealed for it. Required in production; elsewhere "
        "the public development key is used when unset",
    )

    @property
    def claim_sealing(self) -> SealingKey:
        """What school claim codes are sealed with: the configured key, else (dev, test) the
        public development key."""
        return SealingKey.from_pem(self.claim_seal_public_key or public_pem(DEV_PRIVATE_KEY_PEM))

    @model_validator(mode="after")
    def _claim_codes_can_be_sealed(self) -> RegistrySettings:
        if self.environment == "production" and self.claim_seal_public_key is None:
            raise ValueError(
                "set REGISTRY_CLAIM_SEAL_PUBLIC_KEY to the notifications service's claim-seal "
                "public key (PEM: openssl pkey -in claim-seal.pem -pubout): without it no school "
                "can be sent its code"
            )
        try:
            sealing = self.claim_sealing
        except SealingKeyError as error:
            raise ValueError(f"REGISTRY_CLAIM_SEAL_PUBLIC_KEY: {error}") from None
        dev = SealingKey.from_pem(public_pem(DEV_PRIVATE_KEY_PEM))
        if self.environment == "production" and sealing.key_id == dev.key_id:
            raise ValueError(
                "set REGISTRY_CLAIM_SEAL_PUBLIC_KEY: the development key's private half is public"
            )
        return self

    @model_validator(mode="after")
    def _production_has_its_own_secret(self) -> RegistrySettings:
        if self.environment == "production" and (
            self.key_encryption_secret.get_secret_value() == DEV_KEY_SECRET
        ):
            raise ValueError("set REGISTRY_KEY_ENCRYPTION_SECRET: the development one is public")
        return self


def create(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()  # type: ignore[call-arg]  # read from the environment
    app = create_app(
        settings,
        title="Maillage registry",
        description=DESCRIPTION,
        routers=[api.router, api.credentials],
        consumers=consumers.CONSUMERS,
        migrations=MIGRATIONS,
    )
    app.state.registration_token_lifetime = timedelta(days=settings.registration_token_days)
    app.state.claim_sealing = settings.claim_sealing
    # writes refused to suspended partners (decision 40)
    app.state.partner_status = auth.partners_table_status("id")
    app.state.rate_limits = {
        "registration": TokenBucket(rate=settings.registrations_per_minute, per=60),
        "token": TokenBucket(rate=settings.token_requests_per_minute, per=60),
    }
    app.state.failure_throttles = {
        "account": FailureThrottle(
            free=settings.free_failures_per_account, base=settings.failure_delay_seconds
        ),
        "address": FailureThrottle(
            free=settings.free_failures_per_address, base=settings.failure_delay_seconds
        ),
    }
    app.state.issuer = tokens.Issuer(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        key_secret=settings.key_encryption_secret.get_secret_value().encode(),
        token_ttl=timedelta(minutes=settings.token_ttl_minutes),
        rotation=timedelta(days=settings.signing_key_rotation_days),
        publish_ahead=timedelta(seconds=settings.signing_key_publish_ahead_seconds),
    )
    return app
