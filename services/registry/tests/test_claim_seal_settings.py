"""The registry seals school claim codes for notifications' public key (decision 63): production
refuses to start without one, or with the development key, whose private half is public."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from maillage.common import sealing
from maillage.registry.app import RegistrySettings

NOTIFICATIONS_KEY = sealing.generate_private_pem()


def production(**values: Any) -> RegistrySettings:
    return RegistrySettings(
        **{
            "environment": "production",
            "database_url": "postgresql://r@127.0.0.1:5432/registry",
            "key_encryption_secret": "0" * 64,
            "claim_seal_public_key": sealing.public_pem(NOTIFICATIONS_KEY),
            **values,
        }
    )


def test_production_seals_for_the_configured_key_only() -> None:
    registry = production()
    expected = sealing.OpeningKeys.from_pems([NOTIFICATIONS_KEY]).key_ids
    assert {registry.claim_sealing.key_id} == expected
    with pytest.raises(ValidationError, match="set REGISTRY_CLAIM_SEAL_PUBLIC_KEY"):
        production(claim_seal_public_key=None)
    with pytest.raises(ValidationError, match="private half is public"):
        production(claim_seal_public_key=sealing.public_pem(sealing.DEV_PRIVATE_KEY_PEM))
    with pytest.raises(ValidationError, match="not a PEM public key"):
        production(claim_seal_public_key=NOTIFICATIONS_KEY)  # the private key, by mistake


def test_outside_production_the_development_key_is_used_when_unset() -> None:
    dev = RegistrySettings(environment="test", database_url="postgresql://r@127.0.0.1/registry")
    dev_key = sealing.OpeningKeys.from_pems([sealing.DEV_PRIVATE_KEY_PEM])
    assert {dev.claim_sealing.key_id} == dev_key.key_ids
