"""The subscriptions API over HTTP: webhook endpoints, e-mail channels, preferences, settings.

The real app runs on a real PostgreSQL and broker; tokens are signed by the session JWKS; the
delivery worker of the app delivers to real receivers on loopback, verified with the official
``standardwebhooks`` library.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from maillage.common.ratelimit import TokenBucket
from maillage.notifications import domain, ssrf, store

if TYPE_CHECKING:  # the fixtures' types; pytest itself loads conftest
    from services.notifications.tests.conftest import Notifications, Receiver

TRANCHE_APPROVED = "fr.maillage.funding.tranche.approved.v1"
PAIRING = "fr.maillage.cordees.pairing.established.v1"


async def subscribe(
    notifications: Notifications, headers: dict[str, str], url: str, **fields: Any
) -> dict[str, Any]:
    async with notifications.client() as http:
        response = await http.post(
            "/webhook-endpoints", json={"url": url, **fields}, headers=headers
        )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def rows(notifications: Notifications, query: str, *args: Any) -> list[dict[str, Any]]:
    async with notifications.pool.acquire() as connection:
        return [dict(row) for row in await connection.fetch(query, *args)]


Reconfigure = Callable[..., None]


@pytest.fixture
def reconfigure(notifications: Notifications) -> Iterator[Reconfigure]:
    """Change some of the app's settings for one test: ``reconfigure(field=value)``."""
    original = notifications.app.state.settings

    def change(**fields: Any) -> None:
        notifications.app.state.settings = original.model_copy(update=fields)

    yield change
    notifications.app.state.settings = original


# --- webhook endpoints -------------------------------------------------------------------------


async def test_the_secret_is_shown_once_and_stored_sealed(notifications: Notifications) -> None:
    partner_id, headers = notifications.partner()
    created = await subscribe(
        notifications,
        headers,
        "http://127.0.0.1:9/hook",
        event_types=[TRANCHE_APPROVED, PAIRING, TRANCHE_APPROVED],
        description="ERP de production",
    )
    secret = created["secret"]
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    assert created["partner_id"] == str(partner_id)
    assert created["event_types"] == [TRANCHE_APPROVED, PAIRING]  # deduplicated, in order
    assert (created["enabled"], created["previous_secret_expires_at"]) == (True, None)

    async with notifications.client() as http:
        one = await http.get(f"/webhook-endpoints/{created['id']}", headers=headers)
        listed = await http.get("/webhook-endpoints", headers=headers)
        deliveries = await http.get(
            f"/webhook-endpoints/{created['id']}/deliveries", headers=headers
        )
    assert one.status_code == listed.status_code == deliveries.status_code == 200
    assert one.json() == {k: v for k, v in created.items() if k != "secret"}
    assert [item["id"] for item in listed.json()["items"]] == [created["id"]]
    for answer in (one, listed, deliveries):
        assert "secret" not in answer.json()
        assert secret not in answer.text
        assert secret.removeprefix("whsec_") not in answer.text

    [stored] = await rows(
        notifications,
        "SELECT sealed FROM endpoint_secrets WHERE endpoint_id = $1",
        uuid.UUID(created["id"]),
    )
    key = secret.removeprefix("whsec_").encode()
    assert secret.encode() not in stored["sealed"]
    assert key not in stored["sealed"]
    box = notifications.app.state.secret_box
    assert box.open(stored["sealed"], uuid.UUID(created["id"])) == secret


async def test_an_idempotent_retry_gets_the_same_endpoint_and_secret(
    notifications: Notifications,
) -> None:
    partner_id, headers = notifications.partner()
    retry = {**headers, "Idempotency-Key": f"subscribe-{uuid.uuid4()}"}
    body = {"url": "http://127.0.0.1:9/hook", "event_types": [PAIRING]}
    async with notifications.client() as http:
        first = await http.post("/webhook-endpoints", json=body, headers=retry)
        again = await http.post("/webhook-endpoints", json=body, headers=retry)
        other = await http.post(
            "/webhook-endpoints", json={**body, "description": "autre"}, headers=retry
        )
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    endpoints = await rows(
        notifications, "SELECT id FROM webhook_endpoints WHERE partner_id = $1", partner_id
    )
    assert [str(row["id"]) for row in endpoints] == [first.json()["id"]]
    # The remembered answer is kept sealed too.
    remembered = await rows(
        notifications,
        "SELECT response::text AS response FROM idempotency_keys WHERE key = $1",
        retry["Idempotency-Key"],
    )
    assert first.json()["secret"] not in remembered[0]["response"]
    assert "whsec_" not in remembered[0]["response"]


async def test_unknown_event_types_are_refused_by_name(notifications: Notifications) -> None:
    partner_id, headers = notifications.partner()
    async with notifications.client() as http:
        response = await http.post(
            "/webhook-endpoints",
            json={"url": "http://127.0.0.1:9/hook", "event_types": [PAIRING, "cordees.proposal"]},
            headers=headers,
        )
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "unknown_event_type"
    assert [e["pointer"] for e in problem["errors"]] == ["#/event_types/1"]
    assert not await rows(
        notifications, "SELECT id FROM webhook_endpoints WHERE partner_id = $1", partner_id
    )


async def private_resolver(host: str, port: int) -> list[str]:
    """DNS as an attacker would have it: public-looking names, private addresses."""
    answers = {"hooks.partner.example": ["93.184.215.14", "10.1.2.3"]}
    if host not in answers:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return answers[host]


@pytest.mark.parametrize(
    ("url", "code", "reason"),
    [
        ("http://10.0.0.1/hook", ssrf.ADDRESS_NOT_ALLOWED, "10.0.0.1 est une adresse privée"),
        (
            "http://169.254.169.254/latest/meta-data/",
            ssrf.ADDRESS_NOT_ALLOWED,
            "169.254.169.254 est l'adresse d'un service de métadonnées cloud",
        ),
        ("http://[::1]:8080/hook", ssrf.ADDRESS_NOT_ALLOWED, "::1 est une adresse de bouclage"),
        ("https://localhost/hook", ssrf.HOST_NOT_ALLOWED, "localhost est un nom purement local"),
        (
            "https://hooks.partner.example/hook",
            ssrf.ADDRESS_NOT_ALLOWED,
            "hooks.partner.example se résout en 10.1.2.3, une adresse privée (10.0.0.0/8)",
        ),
        ("https://unknown.partner.example/", ssrf.HOST_UNRESOLVABLE, "ne se résout pas"),
        ("https://user:pw@hooks.example.org/", ssrf.USERINFO_NOT_ALLOWED, "ni nom d'utilisateur"),
        ("ftp://hooks.example.org/", ssrf.SCHEME_NOT_ALLOWED, "commence par https://"),
    ],
    ids=["10.0.0.1", "metadata", "[::1]", "localhost", "dns", "nxdomain", "userinfo", "ftp"],
)
async def test_unsafe_urls_are_refused_at_subscription_with_the_reason(
    notifications: Notifications, url: str, code: str, reason: str
) -> None:
    # Loopback is allow-listed for these tests' receivers; nothing else is.
    system_resolver = notifications.app.state.webhook_resolver
    notifications.app.state.webhook_resolver = private_resolver
    try:
        await assert_refused(notifications, url, code, reason)
    finally:
        notifications.app.state.webhook_resolver = system_resolver


async def test_loopback_is_refused_without_the_allow_list(
    notifications: Notifications, reconfigure: Reconfigure
) -> None:
    reconfigure(webhook_allowed_hosts=frozenset())
    await assert_refused(
        notifications,
        "http://127.0.0.1:8080/hook",
        ssrf.ADDRESS_NOT_ALLOWED,
        "127.0.0.1 est une adresse de bouclage, loopback (127.0.0.0/8) : un point de réception de "
        "webhooks est sur l'internet public.",
    )


async def assert_refused(notifications: Notifications, url: str, code: str, reason: str) -> None:
    partner_id, headers = notifications.partner()
    async with notifications.client() as http:
        response = await http.post("/webhook-endpoints", json={"url": url}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code
    assert problem["type"] == f"urn:maillage:problem:{code}"
    assert problem["title"] == "URL de webhook refusée"
    assert reason in problem["detail"]
    assert problem["errors"] == [
        {"in": "body", "pointer": "#/url", "detail": problem["detail"], "type": code}
    ]
    assert not await rows(
        notifications, "SELECT id FROM webhook_endpoints WHERE partner_id = $1", partner_id
    )


async def test_https_is_required_unless_the_settings_allow_http(
    notifications: Notifications, reconfigure: Reconfigure
) -> None:
    reconfigure(webhook_allow_http=False)
    _, headers = notifications.partner()
    async with notifications.client() as http:
        response = await http.post(
            "/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=headers
        )
    assert response.status_code == 422
    assert response.json()["code"] == ssrf.SCHEME_NOT_ALLOWED
    assert "le http simple n'est pas accepté" in response.json()["detail"]


async def test_changes_are_checked_like_a_subscription(notifications: Notifications) -> None:
    _, headers = notifications.partner()
    created = await subscribe(notifications, headers, "http://127.0.0.1:9/hook")
    path = f"/webhook-endpoints/{created['id']}"
    async with notifications.client() as http:
        private = await http.patch(path, json={"url": "http://10.0.0.1/hook"}, headers=headers)
        unknown = await http.patch(path, json={"event_types": ["nope"]}, headers=headers)
        null_url = await http.patch(path, json={"url": None}, headers=headers)
        nothing = await http.patch(path, json={}, headers=headers)
        unchanged = await http.get(path, headers=headers)
        changed = await http.patch(
            path,
            json={"url": "http://127.0.0.1:10/other", "event_types": [PAIRING], "description": "x"},
            headers=headers,
        )
        cleared = await http.patch(path, json={"description": None}, headers=headers)
    assert (private.status_code, private.json()["code"]) == (422, ssrf.ADDRESS_NOT_ALLOWED)
    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_event_type")
    assert (null_url.status_code, null_url.json()["code"]) == (422, "validation_failed")
    assert (nothing.status_code, nothing.json()["code"]) == (422, "nothing_to_change")
    assert unchanged.json() == {k: v for k, v in created.items() if k != "secret"}
    assert changed.status_code == 200, changed.text
    assert changed.json()["url"] == "http://127.0.0.1:10/other"
    assert changed.json()["event_types"] == [PAIRING]
    assert changed.json()["updated_at"] > created["updated_at"]
    assert (cleared.json()["description"], cleared.json()["url"]) == (
        None,
        "http://127.0.0.1:10/other",
    )


async def test_disable_stops_deliveries_and_enable_clears_the_failure_record(
    notifications: Notifications,
) -> None:
    partner_id, headers = notifications.partner()
    created = await subscribe(notifications, headers, "http://127.0.0.1:9/hook")
    endpoint_id = uuid.UUID(created["id"])
    path = f"/webhook-endpoints/{endpoint_id}"
    async with notifications.pool.acquire() as connection:  # a confirmed address to warn
        await connection.execute(
            "INSERT INTO email_channels (id, partner_id, address, confirmed_at)"
            " VALUES ($1, $2, 'ops@partner.example', now())",
            uuid.uuid4(),
            partner_id,
        )
    async with notifications.client() as http:
        disabled = await http.post(f"{path}/disable", headers=headers)
        event_id = await notifications.publish(partner_id)  # not queued: the endpoint is disabled
        async with notifications.pool.acquire() as connection:
            await connection.execute(
                "UPDATE webhook_endpoints SET first_failure_at = now() - interval '2 days'"
                " WHERE id = $1",
                endpoint_id,
            )
        enabled = await http.post(f"{path}/enable", headers=headers)
    assert disabled.status_code == 200
    assert (disabled.json()["enabled"], disabled.json()["disabled_reason"]) == (
        False,
        "disabled by its partner",
    )
    assert not await rows(notifications, "SELECT id FROM deliveries WHERE event_id = $1", event_id)
    # The partner's own choice: no "your endpoint was disabled" e-mail.
    assert not await rows(
        notifications,
        "SELECT id FROM outgoing_mail WHERE partner_id = $1 AND template = 'endpoint_disabled'",
        partner_id,
    )
    assert enabled.status_code == 200
    body = enabled.json()
    assert (body["enabled"], body["disabled_reason"], body["failing_since"]) == (True, None, None)


async def test_rotation_then_real_deliveries_verify_with_both_secrets_during_the_overlap(
    notifications: Notifications, webhook_receiver: Receiver
) -> None:
    partner_id, headers = notifications.partner()
    created = await subscribe(notifications, headers, webhook_receiver.url)
    old = created["secret"]
    path = f"/webhook-endpoints/{created['id']}"
    async with notifications.client() as http:
        rotated = await http.post(
            f"{path}/secret/rotate", json={"overlap_hours": 1}, headers=headers
        )
        shown = await http.get(path, headers=headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old
    assert new.startswith("whsec_")
    assert "secret" not in shown.json()
    overlap_end = datetime.fromisoformat(shown.json()["previous_secret_expires_at"])
    assert timedelta(minutes=59) < overlap_end - datetime.now(UTC) <= timedelta(hours=1)

    event_id = await notifications.publish(partner_id)
    [received] = await webhook_receiver.wait_for(1)
    assert received.webhook_id == str(event_id)
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    # Each secret alone verifies it: the receiver may switch at any moment of the overlap.
    assert webhook_receiver.verifies(old, received.body, received.headers)
    assert webhook_receiver.verifies(new, received.body, received.headers)

    # A rotation without overlap (a leaked secret): only the newest secret signs, at once.
    async with notifications.client() as http:
        leaked = await http.post(
            f"{path}/secret/rotate", json={"overlap_hours": 0}, headers=headers
        )
        too_long = await http.post(
            f"{path}/secret/rotate", json={"overlap_hours": 24 * 8}, headers=headers
        )
    newest = leaked.json()["secret"]
    assert too_long.status_code == 422
    await notifications.publish(partner_id)
    _, second = await webhook_receiver.wait_for(2)
    assert len(second.headers["webhook-signature"].split(" ")) == 2  # newest + the 1 h overlap
    assert webhook_receiver.verifies(newest, second.body, second.headers)
    assert webhook_receiver.verifies(old, second.body, second.headers)  # still inside its hour
    assert not webhook_receiver.verifies(new, second.body, second.headers)  # retired at once


async def test_a_rotation_without_a_body_keeps_the_default_overlap(
    notifications: Notifications,
) -> None:
    _, headers = notifications.partner()
    created = await subscribe(notifications, headers, "http://127.0.0.1:9/hook")
    async with notifications.client() as http:
        rotated = await http.post(
            f"/webhook-endpoints/{created['id']}/secret/rotate", headers=headers
        )
    assert rotated.status_code == 200, rotated.text
    overlap_end = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert timedelta(hours=23, minutes=59) < overlap_end - datetime.now(UTC) <= timedelta(hours=24)


async def test_delete_removes_the_endpoint_and_its_log(notifications: Notifications) -> None:
    partner_id, headers = notifications.partner()
    created = await subscribe(notifications, headers, "http://127.0.0.1:9/hook")
    await notifications.publish(partner_id)
    endpoint_id = uuid.UUID(created["id"])
    async with notifications.client() as http:
        deleted = await http.delete(f"/webhook-endpoints/{endpoint_id}", headers=headers)
        again = await http.delete(f"/webhook-endpoints/{endpoint_id}", headers=headers)
        gone = await http.get(f"/webhook-endpoints/{endpoint_id}", headers=headers)
    assert deleted.status_code == 204
    assert again.status_code == gone.status_code == 404
    assert gone.json()["code"] == "webhook_endpoint_not_found"
    for table, column in (("deliveries", "endpoint_id"), ("endpoint_secrets", "endpoint_id")):
        assert not await rows(
            notifications, f"SELECT 1 FROM {table} WHERE {column} = $1", endpoint_id
        )


async def test_a_partner_has_a_bounded_number_of_endpoints(
    notifications: Notifications, reconfigure: Reconfigure
) -> None:
    reconfigure(webhook_max_endpoints_per_partner=2)
    _, headers = notifications.partner()
    for _ in range(2):
        await subscribe(notifications, headers, "http://127.0.0.1:9/hook")
    async with notifications.client() as http:
        third = await http.post(
            "/webhook-endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=headers
        )
    assert (third.status_code, third.json()["code"]) == (409, "webhook_endpoint_limit")


async def test_endpoints_are_listed_by_cursor(notifications: Notifications) -> None:
    _, headers = notifications.partner()
    ids = [
        (await subscribe(notifications, headers, f"http://127.0.0.1:{port}/h"))["id"]
        for port in (1, 2, 3)
    ]
    async with notifications.client() as http:
        first = await http.get("/webhook-endpoints", params={"limit": 2}, headers=headers)
        cursor = first.json()["next_cursor"]
        second = await http.get(
            "/webhook-endpoints", params={"limit": 2, "cursor": cursor}, headers=headers
        )
        forged = await http.get(
            "/webhook-endpoints", params={"cursor": "bm90LWpzb24"}, headers=headers
        )
    assert [e["id"] for e in first.json()["items"]] == ids[:2]
    assert [e["id"] for e in second.json()["items"]] == ids[2:]
    assert second.json()["next_cursor"] is None
    assert (forged.status_code, forged.json()["code"]) == (400, "invalid_cursor")


# --- authorisation -----------------------------------------------------------------------------


async def test_a_partner_never_sees_or_changes_another_partners_subscriptions(
    notifications: Notifications,
) -> None:
    a_id, a = notifications.partner()
    b_id, b = notifications.partner()
    endpoint = await subscribe(notifications, a, "http://127.0.0.1:9/hook")
    path = f"/webhook-endpoints/{endpoint['id']}"
    async with notifications.client() as http:
        channel = (
            await http.post("/email-channels", json={"address": "a@example.org"}, headers=a)
        ).json()
        await http.put(f"/preferences/{PAIRING}", json={"webhook": False, "email": True}, headers=a)
        attempts = {
            "get": await http.get(path, headers=b),
            "patch": await http.patch(path, json={"description": "mine"}, headers=b),
            "disable": await http.post(f"{path}/disable", headers=b),
            "enable": await http.post(f"{path}/enable", headers=b),
            "rotate": await http.post(f"{path}/secret/rotate", headers=b),
            "deliveries": await http.get(f"{path}/deliveries", headers=b),
            "recover": await http.post(
                f"{path}/recover", json={"since": "2020-01-01T00:00:00Z"}, headers=b
            ),
            "delete": await http.delete(path, headers=b),
            "channel": await http.get(f"/email-channels/{channel['id']}", headers=b),
            "resend": await http.post(
                f"/email-channels/{channel['id']}/resend-confirmation", headers=b
            ),
            "delete channel": await http.delete(f"/email-channels/{channel['id']}", headers=b),
        }
        b_lists = [
            await http.get("/webhook-endpoints", headers=b),
            await http.get("/email-channels", headers=b),
        ]
        spying = [
            await http.get("/webhook-endpoints", params={"partner_id": str(a_id)}, headers=b),
            await http.get("/email-channels", params={"partner_id": str(a_id)}, headers=b),
            await http.get("/preferences", params={"partner_id": str(a_id)}, headers=b),
            await http.get("/settings", params={"partner_id": str(a_id)}, headers=b),
        ]
        b_preferences = await http.get("/preferences", headers=b)
        still = await http.get(path, headers=a)
    assert {name: r.status_code for name, r in attempts.items()} == dict.fromkeys(attempts, 404)
    assert all(r.headers["content-type"] == "application/problem+json" for r in attempts.values())
    assert [r.json()["items"] for r in b_lists] == [[], []]
    assert [r.status_code for r in spying] == [403] * 4
    assert all(p["webhook"] for p in b_preferences.json())  # A's choice is A's only
    assert still.json() == {k: v for k, v in endpoint.items() if k != "secret"}
    assert b_id != a_id


async def test_operators_read_everything_and_change_nothing(notifications: Notifications) -> None:
    a_id, a = notifications.partner()
    b_id, b = notifications.partner()
    ea = await subscribe(notifications, a, "http://127.0.0.1:9/a")
    eb = await subscribe(notifications, b, "http://127.0.0.1:9/b")
    operator = notifications.operator()
    async with notifications.client() as http:
        await http.post("/email-channels", json={"address": "ops@example.org"}, headers=b)
        await http.put("/settings", json={"stage_offers_within_km": 12.5}, headers=a)
        listed = await http.get("/webhook-endpoints", params={"limit": 100}, headers=operator)
        only_b = await http.get(
            "/webhook-endpoints", params={"partner_id": str(b_id)}, headers=operator
        )
        one = await http.get(f"/webhook-endpoints/{ea['id']}", headers=operator)
        channels = await http.get(
            "/email-channels", params={"partner_id": str(b_id)}, headers=operator
        )
        preferences = await http.get(
            "/preferences", params={"partner_id": str(a_id)}, headers=operator
        )
        no_partner = await http.get("/preferences", headers=operator)
        settings = await http.get("/settings", params={"partner_id": str(a_id)}, headers=operator)
        writes = [
            await http.post(
                "/webhook-endpoints", json={"url": "http://127.0.0.1:9/"}, headers=operator
            ),
            await http.patch(
                f"/webhook-endpoints/{ea['id']}", json={"description": "x"}, headers=operator
            ),
            await http.post(f"/webhook-endpoints/{ea['id']}/secret/rotate", headers=operator),
            await http.delete(f"/webhook-endpoints/{ea['id']}", headers=operator),
            await http.put("/settings", json={"stage_offers_within_km": 1}, headers=operator),
        ]
        officer = {"Authorization": notifications.bearer(partner_id=None, roles=["officer"])}
        not_a_partner_id = {
            "Authorization": notifications.bearer(partner_id="partner-7", roles=["partner"])
        }
        strangers = [
            await http.get("/webhook-endpoints", headers=officer),
            await http.get("/webhook-endpoints", headers=not_a_partner_id),
        ]
        anonymous = await http.get("/webhook-endpoints")
    ids = {item["id"] for item in listed.json()["items"]}
    assert {ea["id"], eb["id"]} <= ids
    assert [item["id"] for item in only_b.json()["items"]] == [eb["id"]]
    assert one.status_code == 200
    assert "secret" not in one.json()
    assert [c["address"] for c in channels.json()["items"]] == ["ops@example.org"]
    assert preferences.status_code == 200
    assert (no_partner.status_code, no_partner.json()["code"]) == (422, "partner_id_required")
    assert settings.json()["stage_offers_within_km"] == 12.5
    assert [r.status_code for r in writes] == [403] * len(writes)
    assert [r.status_code for r in strangers] == [403, 403]
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"


# --- e-mail channels ---------------------------------------------------------------------------


async def confirmation_mails(notifications: Notifications, address: str) -> list[dict[str, Any]]:
    return await rows(
        notifications,
        "SELECT * FROM outgoing_mail WHERE recipient = $1 AND template = 'email_confirmation'"
        " ORDER BY created_at",
        address,
    )


def token_in(mail: dict[str, Any]) -> str:
    [token] = re.findall(r"^\s*([A-Za-z0-9_-]{43})\s*$", mail["text_body"], re.MULTILINE)
    return token


async def test_an_address_is_confirmed_by_the_token_mailed_to_it(
    notifications: Notifications,
) -> None:
    partner_id, headers = notifications.partner()
    address = f"Ops-{uuid.uuid4().hex[:6]}@Example.ORG"
    async with notifications.client() as http:
        created = await http.post("/email-channels", json={"address": address}, headers=headers)
    assert created.status_code == 201, created.text
    channel = created.json()
    stored_address = address.split("@")[0] + "@example.org"  # the domain's case is not kept
    assert (channel["address"], channel["status"], channel["confirmed_at"]) == (
        stored_address,
        "pending",
        None,
    )
    expires = datetime.fromisoformat(channel["confirmation_expires_at"])
    assert timedelta(hours=47, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=48)
    assert "token" not in created.text

    [mail] = await confirmation_mails(notifications, stored_address)
    assert mail["partner_id"] == partner_id
    assert mail["status"] == "pending"
    assert mail["subject"] == "Confirmez votre adresse pour les notifications Maillage"
    token = token_in(mail)
    assert token in mail["html_body"]
    assert stored_address in mail["text_body"]
    [row] = await rows(
        notifications, "SELECT * FROM email_channels WHERE id = $1", uuid.UUID(channel["id"])
    )
    assert row["confirmation_token_hash"] == hashlib.sha256(token.encode()).digest()
    assert token.encode() not in repr(row).encode()

    async with notifications.client() as http:  # no bearer: the token is the proof
        confirmed = await http.post("/email-channels/confirm", json={"token": token})
        replayed = await http.post("/email-channels/confirm", json={"token": token})
        wrong = await http.post("/email-channels/confirm", json={"token": "x" * 43})
        listed = await http.get("/email-channels", headers=headers)
        resend = await http.post(
            f"/email-channels/{channel['id']}/resend-confirmation", headers=headers
        )
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["status"], confirmed.json()["confirmation_expires_at"]) == (
        "confirmed",
        None,
    )
    assert (replayed.status_code, replayed.json()["code"]) == (404, "confirmation_not_found")
    assert wrong.status_code == 404
    assert [c["status"] for c in listed.json()["items"]] == ["confirmed"]
    assert (resend.status_code, resend.json()["code"]) == (409, "email_channel_confirmed")


async def test_an_expired_token_is_replaced_by_a_resent_one(notifications: Notifications) -> None:
    _, headers = notifications.partner()
    address = f"late-{uuid.uuid4().hex[:6]}@example.org"
    async with notifications.client() as http:
        channel = (
            await http.post("/email-channels", json={"address": address}, headers=headers)
        ).json()
        resend_path = f"/email-channels/{channel['id']}/resend-confirmation"
        too_soon = await http.post(resend_path, headers=headers)
        [first] = await confirmation_mails(notifications, address)
        async with notifications.pool.acquire() as connection:  # two days later
            await connection.execute(
                "UPDATE email_channels SET confirmation_expires_at = now() - interval '1 second',"
                " confirmation_sent_at = now() - interval '48 hours' WHERE id = $1",
                uuid.UUID(channel["id"]),
            )
        expired = await http.post("/email-channels/confirm", json={"token": token_in(first)})
        resent = await http.post(resend_path, headers=headers)
        _, second = await confirmation_mails(notifications, address)
        old = await http.post("/email-channels/confirm", json={"token": token_in(first)})
        new = await http.post("/email-channels/confirm", json={"token": token_in(second)})
    assert (too_soon.status_code, too_soon.json()["code"]) == (429, "rate_limited")
    assert 1 <= int(too_soon.headers["retry-after"]) <= 60
    assert (expired.status_code, expired.json()["code"]) == (410, "confirmation_expired")
    assert resent.status_code == 202
    assert resent.json()["status"] == "pending"
    assert token_in(second) != token_in(first)
    assert old.status_code == 404
    assert (new.status_code, new.json()["status"]) == (200, "confirmed")


async def test_channels_refuse_bad_and_duplicate_addresses(notifications: Notifications) -> None:
    _, headers = notifications.partner()
    address = f"dup-{uuid.uuid4().hex[:6]}@example.org"
    async with notifications.client() as http:
        first = await http.post("/email-channels", json={"address": address}, headers=headers)
        duplicate = await http.post(
            "/email-channels",
            json={"address": address.replace("example.org", "EXAMPLE.org")},
            headers=headers,
        )
        bad = [
            await http.post("/email-channels", json={"address": a}, headers=headers)
            for a in ("no-at-sign", "a@localhost", "two@@example.org", "space d@example.org")
        ]
        deleted = await http.delete(f"/email-channels/{first.json()['id']}", headers=headers)
        again = await http.post("/email-channels", json={"address": address}, headers=headers)
    assert first.status_code == 201
    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "email_channel_exists")
    assert [r.status_code for r in bad] == [422] * 4
    assert deleted.status_code == 204
    assert again.status_code == 201
    assert len(await confirmation_mails(notifications, address)) == 2


async def test_confirmation_attempts_are_rate_limited(notifications: Notifications) -> None:
    limits = notifications.app.state.rate_limits
    notifications.app.state.rate_limits = {"email confirmation": TokenBucket(rate=2, per=60)}
    try:
        async with notifications.client(address="192.0.2.99") as http:
            answers = [
                await http.post("/email-channels/confirm", json={"token": "guess" * 9})
                for _ in range(3)
            ]
        async with notifications.client(address="192.0.2.98") as http:
            elsewhere = await http.post("/email-channels/confirm", json={"token": "guess" * 9})
    finally:
        notifications.app.state.rate_limits = limits
    assert [a.status_code for a in answers] == [404, 404, 429]
    assert answers[2].json()["code"] == "rate_limited"
    assert int(answers[2].headers["retry-after"]) >= 1
    assert elsewhere.status_code == 404


# --- preferences and settings ------------------------------------------------------------------


async def test_preferences_default_to_every_channel_and_are_chosen_per_event_type(
    notifications: Notifications,
) -> None:
    partner_id, headers = notifications.partner()
    async with notifications.client() as http:
        defaults = await http.get("/preferences", headers=headers)
        chosen = await http.put(
            f"/preferences/{TRANCHE_APPROVED}",
            json={"webhook": True, "email": False},
            headers=headers,
        )
        unknown = await http.put(
            "/preferences/fr.maillage.nothing.v1",
            json={"webhook": True, "email": False},
            headers=headers,
        )
        partial = await http.put(
            f"/preferences/{PAIRING}", json={"webhook": False}, headers=headers
        )
        after = await http.get("/preferences", headers=headers)
    # Every event a partner can hear of (not the reference schools'), described in French.
    assert [p["event_type"] for p in defaults.json()] == list(domain.AUDIENCES)
    assert all(p["webhook"] and p["email"] for p in defaults.json())
    assert {p["event_type"]: p["description"] for p in defaults.json()} == domain.DESCRIPTIONS
    assert chosen.json() == {
        **next(p for p in defaults.json() if p["event_type"] == TRANCHE_APPROVED),
        "email": False,
    }
    assert (unknown.status_code, unknown.json()["code"]) == (404, "event_type_not_found")
    assert partial.status_code == 422
    changed = {p["event_type"]: (p["webhook"], p["email"]) for p in after.json()}
    assert changed.pop(TRANCHE_APPROVED) == (True, False)
    assert set(changed.values()) == {(True, True)}
    assert await rows(
        notifications,
        "SELECT event_type, webhook, email FROM preferences WHERE partner_id = $1",
        partner_id,
    ) == [{"event_type": TRANCHE_APPROVED, "webhook": True, "email": False}]


async def test_settings_hold_the_stage_offer_distance(notifications: Notifications) -> None:
    partner_id, headers = notifications.partner()
    async with notifications.client() as http:
        initial = await http.get("/settings", headers=headers)
        put = await http.put("/settings", json={"stage_offers_within_km": 15}, headers=headers)
        refused = [
            await http.put("/settings", json={"stage_offers_within_km": km}, headers=headers)
            for km in (0, -3, 200.5, "far")
        ]
        missing = await http.put("/settings", json={}, headers=headers)
        kept = await http.get("/settings", headers=headers)
        cleared = await http.put(
            "/settings", json={"stage_offers_within_km": None}, headers=headers
        )
    assert initial.json() == {"stage_offers_within_km": None, "updated_at": None}
    assert put.status_code == 200
    assert put.json()["stage_offers_within_km"] == 15
    assert [r.status_code for r in refused] == [422] * 4
    assert missing.status_code == 422
    assert kept.json()["stage_offers_within_km"] == 15
    assert cleared.json()["stage_offers_within_km"] is None
    [row] = await rows(
        notifications, "SELECT * FROM partner_settings WHERE partner_id = $1", partner_id
    )
    assert row["stage_offers_within_km"] is None


async def test_the_openapi_documents_every_route_for_partners(notifications: Notifications) -> None:
    async with notifications.client() as http:
        document = (await http.get("/openapi.json")).json()
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        if not path.startswith(("/admin", "/livez", "/readyz"))
        for method, operation in item.items()
    ]
    assert len(operations) >= 20
    for path, method, operation in operations:
        assert operation.get("summary"), (path, method)
        assert operation.get("tags"), (path, method)
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                content = response["content"]["application/problem+json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Problem"}, (path, status)
    create = document["paths"]["/webhook-endpoints"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in create["parameters"]]
    assert {"403", "409", "422"} <= set(create["responses"])
    confirm = document["paths"]["/email-channels/confirm"]["post"]
    assert "security" not in confirm
    assert "429" in confirm["responses"]


async def _in_flight(
    notifications: Notifications, headers: dict[str, str], partner_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID]:
    """An endpoint with one delivery the app's worker has given up on (port 9 refuses): as an
    attempt in flight would be, from the API's side. (endpoint id, delivery id)"""
    created = await subscribe(notifications, headers, "http://127.0.0.1:9/hook")
    endpoint_id = uuid.UUID(created["id"])
    await notifications.publish(partner_id)
    for _ in range(100):
        row = await notifications.pool.fetchrow(
            "SELECT id, status FROM deliveries WHERE endpoint_id = $1", endpoint_id
        )
        if row is not None and row["status"] != "pending":
            break
        await asyncio.sleep(0.1)
    async with notifications.pool.acquire() as connection:  # pending again, mid-attempt
        await connection.execute(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = now() + interval '1 h'"
            " WHERE id = $1",
            row["id"],
        )
    return endpoint_id, row["id"]


def _attempt(endpoint_id: uuid.UUID, delivery_id: uuid.UUID, status_code: int) -> Any:
    delivered = status_code == 200
    return store.AttemptOutcome(
        delivery_id,
        endpoint_id,
        store.AttemptRecord(10, datetime.now(UTC), 12, status_code, None),
        "delivered" if delivered else "pending",
        None if delivered else datetime.now(UTC) + timedelta(minutes=5),
    )


async def test_disabling_while_an_attempt_is_recorded_waits_then_disables_the_delivery(
    notifications: Notifications,
) -> None:
    """The worker records attempts under the endpoint's lock, then its deliveries', and the API
    takes the same order: disabling meanwhile waits for the worker's commit, then answers."""
    partner_id, headers = notifications.partner()
    endpoint_id, delivery_id = await _in_flight(notifications, headers, partner_id)
    async with notifications.client() as http:
        async with notifications.pool.acquire() as worker, worker.transaction():
            await store.record_attempts(
                worker, [_attempt(endpoint_id, delivery_id, 503)], now=datetime.now(UTC)
            )
            disabling = asyncio.create_task(
                http.post(f"/webhook-endpoints/{endpoint_id}/disable", headers=headers)
            )
            await asyncio.sleep(0.5)
            assert not disabling.done()  # waiting for the worker's transaction
        disabled = await disabling
    assert disabled.status_code == 200, disabled.text
    status = await notifications.pool.fetchval(
        "SELECT status FROM deliveries WHERE id = $1", delivery_id
    )
    assert status == "disabled"


async def test_an_attempt_finishing_after_a_disable_or_a_delete_changes_nothing_it_should_not(
    notifications: Notifications,
) -> None:
    partner_id, headers = notifications.partner()
    disabled_endpoint, kept_off = await _in_flight(notifications, headers, partner_id)
    deleted_endpoint, gone = await _in_flight(notifications, headers, partner_id)
    other_endpoint, other = await _in_flight(notifications, headers, partner_id)
    async with notifications.client() as http:
        path = "/webhook-endpoints"
        assert (await http.post(f"{path}/{disabled_endpoint}/disable", headers=headers)).is_success
        assert (await http.delete(f"{path}/{deleted_endpoint}", headers=headers)).is_success
    # The attempts that were in flight finish now, recorded in one batch.
    async with notifications.pool.acquire() as worker, worker.transaction():
        await store.record_attempts(
            worker,
            [
                _attempt(disabled_endpoint, kept_off, 503),
                _attempt(deleted_endpoint, gone, 503),
                _attempt(other_endpoint, other, 200),
            ],
            now=datetime.now(UTC),
        )
    statuses = dict(
        await notifications.pool.fetch(
            "SELECT id, status FROM deliveries WHERE id = ANY($1::uuid[])", [kept_off, gone, other]
        )
    )
    # The disabled one stays disabled (enable + recover sends it), the deleted one is gone, and
    # the rest of the batch is recorded all the same.
    assert statuses == {kept_off: "disabled", other: "delivered"}


# --- a suspended partner changes nothing -------------------------------------------------------


async def test_a_suspended_partner_reads_but_changes_nothing_with_its_unexpired_token(
    notifications: Notifications,
) -> None:
    """The token was issued before the suspension and is still valid: the read model decides."""
    from maillage.common.catalog import PartnerSuspended, PartnerVerified

    partner_id, headers = notifications.partner()
    facts = {"partner_id": partner_id, "kind": "association", "legal_name": "Asso"}
    async with notifications.pool.acquire() as connection:
        await store.apply_partner(
            connection, PartnerVerified(**facts, status="verified", version=1)
        )
    created = await subscribe(notifications, headers, "http://127.0.0.1:9/hook")
    async with notifications.pool.acquire() as connection:
        await store.apply_partner(
            connection, PartnerSuspended(**facts, status="suspended", version=2)
        )
    async with notifications.client() as http:
        refused = await http.post(
            "/webhook-endpoints", json={"url": "http://127.0.0.1:9/other"}, headers=headers
        )
        channel = await http.post(
            "/email-channels", json={"address": "asso@example.org"}, headers=headers
        )
        removed = await http.delete(f"/webhook-endpoints/{created['id']}", headers=headers)
        read = await http.get(f"/webhook-endpoints/{created['id']}", headers=headers)
        by_operator = await http.get("/webhook-endpoints", headers=notifications.operator())
    for answer in (refused, channel, removed):
        assert answer.status_code == 403, answer.text
        assert answer.json()["code"] == "partner_not_in_good_standing"
        assert answer.json()["partner_status"] == "suspended"
    assert read.status_code == 200
    assert by_operator.status_code == 200
    assert len(await rows(notifications, "SELECT id FROM webhook_endpoints")) >= 1
