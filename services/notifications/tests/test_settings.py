"""Production settings never carry the development exemptions of the webhook policy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from maillage.cli.dev import LOCAL_WEBHOOKS
from maillage.common import sealing
from maillage.notifications.app import NotificationsSettings

REQUIRED = {"database_url": "postgresql://n@127.0.0.1:5432/notifications"}
STRONG_KEY = "0" * 64
CLAIM_SEAL_KEY = sealing.generate_private_pem()


def production(**values: Any) -> NotificationsSettings:
    return NotificationsSettings(
        **{
            "environment": "production",
            "secret_encryption_key": STRONG_KEY,
            "claim_seal_private_key": CLAIM_SEAL_KEY,
            **REQUIRED,
            **values,
        }
    )


hosts = st.frozensets(
    st.sampled_from(["127.0.0.1", "127.0.0.0/8", "::1", "localhost", "10.0.0.0/8", "db"]),
    min_size=1,
)


@settings(max_examples=20, deadline=None)
@given(allow_http=st.booleans(), allowed_hosts=hosts | st.just(frozenset()))
def test_production_refuses_http_and_exempted_hosts(
    allow_http: bool, allowed_hosts: frozenset[str]
) -> None:
    if not allow_http and not allowed_hosts:
        assert production().webhook_allow_http is False  # the safe default starts
        return
    with pytest.raises(ValidationError, match="production calls public https endpoints only"):
        production(webhook_allow_http=allow_http, webhook_allowed_hosts=allowed_hosts)


def test_production_refuses_the_public_development_key() -> None:
    with pytest.raises(ValidationError, match="NOTIFICATIONS_SECRET_ENCRYPTION_KEY"):
        NotificationsSettings(
            environment="production", claim_seal_private_key=CLAIM_SEAL_KEY, **REQUIRED
        )


def test_maillage_dev_local_webhooks_configure_a_development_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `maillage dev --local-webhooks` sets: accepted in dev, refused in production."""
    for name, value in {
        **LOCAL_WEBHOOKS,
        "NOTIFICATIONS_DATABASE_URL": REQUIRED["database_url"],
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NOTIFICATIONS_ENVIRONMENT", "dev")
    dev = NotificationsSettings()  # type: ignore[call-arg]  # read from the environment
    assert dev.webhook_allow_http is True
    assert {"127.0.0.0/8", "::1", "localhost"} == dev.webhook_allowed_hosts
    monkeypatch.setenv("NOTIFICATIONS_ENVIRONMENT", "production")
    monkeypatch.setenv("NOTIFICATIONS_SECRET_ENCRYPTION_KEY", STRONG_KEY)
    monkeypatch.setenv("NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY", CLAIM_SEAL_KEY)
    with pytest.raises(ValidationError, match="development and tests"):
        NotificationsSettings()  # type: ignore[call-arg]


def test_production_refuses_to_start_without_its_own_claim_seal_key() -> None:
    """Decision 63: without a private key no school could be sent its code; the development
    key is public; a value that is not an X25519 PEM is named."""
    with pytest.raises(ValidationError, match="set NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY"):
        production(claim_seal_private_key=None)
    with pytest.raises(ValidationError, match="the development key is public"):
        production(claim_seal_private_key=sealing.DEV_PRIVATE_KEY_PEM)
    with pytest.raises(ValidationError, match="the development key is public"):
        production(claim_seal_retired_keys=[sealing.DEV_PRIVATE_KEY_PEM])
    with pytest.raises(ValidationError, match="not a PEM private key"):
        production(claim_seal_private_key="0" * 64)
    retired = sealing.generate_private_pem()
    rotating = production(claim_seal_retired_keys=[retired])
    assert len(rotating.claim_opening.key_ids) == 2


def test_outside_production_the_development_claim_seal_key_is_used_when_unset() -> None:
    dev = NotificationsSettings(environment="dev", **REQUIRED)
    assert (
        dev.claim_opening.key_ids
        == sealing.OpeningKeys.from_pems([sealing.DEV_PRIVATE_KEY_PEM]).key_ids
    )
