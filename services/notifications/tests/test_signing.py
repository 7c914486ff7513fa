"""Our signatures, checked by the official Standard Webhooks library."""

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from maillage.notifications.signing import (
    InvalidSecret,
    RetiringSecret,
    SecretRing,
    body_for,
    new_secret,
    secret_key,
    sign,
    signature_header,
    webhook_headers,
)

EVENT_TIME = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)
DATA = {"partner_id": "3f1c7e0a-1b2c-4d5e-8f90-123456789abc", "nom": "Collège Jean-Moulin"}


def now_ts() -> int:
    return int(time.time())


def delivery(
    secrets: list[str], *, msg_id: str | None = None, ts: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = body_for("fr.maillage.registry.partner.verified.v1", EVENT_TIME, DATA)
    headers = webhook_headers(msg_id or str(uuid4()), ts or now_ts(), body, secrets)
    return body, headers


def test_the_specification_example_signs_as_published() -> None:
    # The example of the Standard Webhooks specification and of its reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_new_secret_is_whsec_and_24_to_32_random_bytes() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 32
    assert len(secret_key(new_secret(24))) == 24
    with pytest.raises(ValueError, match="24 to 64"):
        new_secret(16)


@pytest.mark.parametrize(
    "bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64!", "whsec_", "whsec_c2hvcnQ="]
)
def test_a_malformed_secret_is_refused(bad: str) -> None:
    with pytest.raises(InvalidSecret):
        secret_key(bad)


def test_the_official_library_verifies_a_delivery_and_returns_the_body() -> None:
    secret = new_secret()
    body, headers = delivery([secret])
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]
    payload = Webhook(secret).verify(body, headers)
    assert payload == {
        "type": "fr.maillage.registry.partner.verified.v1",
        "timestamp": "2026-03-02T09:30:15.123456Z",
        "data": DATA,
    }


def test_the_body_is_compact_utf8_json_with_an_iso_utc_timestamp() -> None:
    paris = datetime(2026, 3, 2, 11, 30, tzinfo=ZoneInfo("Europe/Paris"))
    body = body_for("t.v1", paris, {"ville": "Besançon", "n": 1})
    expected = (
        '{"type":"t.v1","timestamp":"2026-03-02T10:30:00Z","data":{"ville":"Besançon","n":1}}'
    )
    assert body == expected.encode()
    assert json.loads(body)["timestamp"] == "2026-03-02T10:30:00Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        body_for("t.v1", datetime(2026, 3, 2, 10, 30), {})
    with pytest.raises(ValueError, match="not JSON compliant"):
        body_for("t.v1", paris, {"x": float("nan")})


def test_a_retry_keeps_the_id_and_body_and_signs_a_fresh_timestamp() -> None:
    secret, msg_id = new_secret(), str(uuid4())
    body, first = delivery([secret], msg_id=msg_id, ts=now_ts() - 60)
    _, retry = delivery([secret], msg_id=msg_id, ts=now_ts())
    assert first["webhook-id"] == retry["webhook-id"] == msg_id
    assert first["webhook-signature"] != retry["webhook-signature"]
    Webhook(secret).verify(body, first)
    Webhook(secret).verify(body, retry)


def test_a_tampered_body_is_refused() -> None:
    secret = new_secret()
    body, headers = delivery([secret])
    tampered = body.replace(b"Jean-Moulin", b"Jean-Jaures")
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(tampered, headers)


def test_a_tampered_timestamp_or_id_is_refused() -> None:
    secret = new_secret()
    body, headers = delivery([secret])
    later = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(body, later)
    other_id = {**headers, "webhook-id": str(uuid4())}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(body, other_id)


def test_an_old_delivery_is_refused_by_the_receiver_clock() -> None:
    secret = new_secret()
    body, headers = delivery([secret], ts=now_ts() - 3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, headers)


def test_another_secret_does_not_verify() -> None:
    body, headers = delivery([new_secret()])
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_during_rotation_both_secrets_sign_and_each_alone_verifies() -> None:
    old, new = new_secret(), new_secret()
    body, headers = delivery([new, old])
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    assert Webhook(old).verify(body, headers)["data"] == DATA
    assert Webhook(new).verify(body, headers)["data"] == DATA
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_the_signature_header_lists_each_secret_once_in_order() -> None:
    a, b = new_secret(), new_secret()
    header = signature_header([a, b, a], "msg", 1, b"{}")
    assert header == f"{sign(a, 'msg', 1, b'{}')} {sign(b, 'msg', 1, b'{}')}"
    with pytest.raises(ValueError, match="at least one"):
        signature_header([], "msg", 1, b"{}")


@pytest.mark.parametrize("msg_id", ["", "has space", "a.b", "line\nbreak", "é"])
def test_a_header_unsafe_id_is_refused(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        sign(new_secret(), msg_id, 1, b"{}")


def test_a_secret_ring_rotates_with_an_overlap_then_drops_the_old_secret() -> None:
    t0 = datetime.now(UTC)
    old, new = new_secret(), new_secret()
    ring = SecretRing(current=old).rotate(new, now=t0, overlap=timedelta(hours=24))
    assert ring.current == new
    assert ring.previous == (RetiringSecret(old, t0 + timedelta(hours=24)),)
    assert ring.signing_secrets(t0) == [new, old]
    assert ring.signing_secrets(t0 + timedelta(hours=23, minutes=59)) == [new, old]
    assert ring.signing_secrets(t0 + timedelta(hours=24)) == [new]

    # During the overlap each secret alone verifies a real delivery.
    ts = now_ts()
    body = body_for("t.v1", EVENT_TIME, DATA)
    during = SecretRing(current=old).rotate(new, now=datetime.fromtimestamp(ts, UTC))
    headers = during.headers("evt-1", ts, body)
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)

    # After it, only the new secret signs.
    after = SecretRing(current=old).rotate(
        new, now=datetime.fromtimestamp(ts, UTC) - timedelta(days=2)
    )
    headers = after.headers("evt-1", ts, body)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)
    assert after.prune(datetime.fromtimestamp(ts, UTC)).previous == ()


def test_rotating_twice_within_the_overlap_keeps_every_live_secret() -> None:
    t0 = datetime.now(UTC)
    a, b, c = new_secret(), new_secret(), new_secret()
    ring = SecretRing(a).rotate(b, now=t0).rotate(c, now=t0 + timedelta(hours=1))
    assert ring.signing_secrets(t0 + timedelta(hours=2)) == [c, b, a]
    assert ring.signing_secrets(t0 + timedelta(hours=24, minutes=30)) == [c, b]
    assert ring.signing_secrets(t0 + timedelta(hours=25)) == [c]


def test_a_leaked_secret_is_retired_at_once() -> None:
    t0 = datetime.now(UTC)
    leaked, fresh = new_secret(), new_secret()
    ring = SecretRing(leaked).rotate(fresh, now=t0, overlap=timedelta(0))
    assert ring.previous == ()
    assert ring.signing_secrets(t0) == [fresh]


def test_a_ring_refuses_bad_secrets_and_useless_rotations() -> None:
    secret = new_secret()
    with pytest.raises(InvalidSecret):
        SecretRing("nope")
    with pytest.raises(ValueError, match="new secret"):
        SecretRing(secret).rotate(secret, now=datetime.now(UTC))
    with pytest.raises(ValueError, match="not negative"):
        SecretRing(secret).rotate(new_secret(), now=datetime.now(UTC), overlap=timedelta(-1))
