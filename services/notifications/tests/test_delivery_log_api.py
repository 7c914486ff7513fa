"""The delivery log over HTTP: deliveries and attempts, resend, recover, and who sees what.

Events are queued as the fan-out queues them; the app's own delivery worker sends them to real
receivers on loopback (the retry schedule of these tests: at once, then once more at once).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the fixtures' types; pytest itself loads conftest
    from services.notifications.tests.conftest import Notifications, Receiver


async def subscribe(
    notifications: Notifications, headers: dict[str, str], url: str
) -> dict[str, Any]:
    async with notifications.client() as http:
        response = await http.post("/webhook-endpoints", json={"url": url}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def settled(
    notifications: Notifications, headers: dict[str, str], endpoint_id: str, count: int
) -> list[dict[str, Any]]:
    """The endpoint's deliveries once ``count`` of them are no longer pending, newest first."""
    async with notifications.client() as http, asyncio.timeout(20):
        while True:
            response = await http.get(
                f"/webhook-endpoints/{endpoint_id}/deliveries",
                params={"limit": 100},
                headers=headers,
            )
            items: list[dict[str, Any]] = response.json()["items"]
            if len([d for d in items if d["status"] != "pending"]) >= count:
                return items
            await asyncio.sleep(0.05)


async def test_the_log_shows_each_delivery_and_its_attempts(
    notifications: Notifications, webhook_receiver: Receiver
) -> None:
    partner_id, headers = notifications.partner()
    endpoint = await subscribe(notifications, headers, webhook_receiver.url)
    webhook_receiver.secrets.append(endpoint["secret"])
    webhook_receiver.script.append(500)  # the first attempt fails, the retry succeeds
    event_id = await notifications.publish(partner_id)

    [delivery] = await settled(notifications, headers, endpoint["id"], 1)
    assert delivery["event_id"] == str(event_id)
    assert delivery["status"] == "delivered"
    assert (delivery["attempts"], delivery["last_status_code"]) == (2, 200)
    assert isinstance(delivery["last_latency_ms"], int)
    assert delivery["next_attempt_at"] is None
    assert delivery["delivered_at"] is not None
    assert delivery["partner_id"] == str(partner_id)

    async with notifications.client() as http:
        detail = await http.get(f"/deliveries/{delivery['id']}", headers=headers)
        by_event = await http.get(
            f"/webhook-endpoints/{endpoint['id']}/deliveries",
            params={"event_id": str(event_id)},
            headers=headers,
        )
        failed = await http.get(
            f"/webhook-endpoints/{endpoint['id']}/deliveries",
            params={"status": "failed"},
            headers=headers,
        )
        bad_status = await http.get(
            f"/webhook-endpoints/{endpoint['id']}/deliveries",
            params={"status": "lost"},
            headers=headers,
        )
    assert detail.status_code == 200
    body = detail.json()
    assert [(a["number"], a["status_code"]) for a in body["attempt_log"]] == [(1, 500), (2, 200)]
    assert body["attempt_log"][0]["error"] == "the receiver answered 500"
    assert body["payload"]["type"] == "fr.maillage.funding.tranche.approved.v1"
    assert body["payload"]["data"] == {"tranche_id": str(event_id)}
    assert body["last_latency_ms"] == body["attempt_log"][-1]["duration_ms"]
    assert [d["id"] for d in by_event.json()["items"]] == [delivery["id"]]
    assert failed.json()["items"] == []
    assert bad_status.status_code == 422
    assert [r.webhook_id for r in webhook_receiver.received] == [str(event_id)] * 2
    assert all(r.verified for r in webhook_receiver.received)


async def test_resend_delivers_again_with_the_same_webhook_id(
    notifications: Notifications, webhook_receiver: Receiver
) -> None:
    partner_id, headers = notifications.partner()
    endpoint = await subscribe(notifications, headers, webhook_receiver.url)
    webhook_receiver.secrets.append(endpoint["secret"])
    event_id = await notifications.publish(partner_id)
    [delivery] = await settled(notifications, headers, endpoint["id"], 1)
    assert delivery["status"] == "delivered"

    async with notifications.client() as http:
        resent = await http.post(f"/deliveries/{delivery['id']}/resend", headers=headers)
        assert resent.status_code == 202, resent.text
        assert resent.json()["status"] == "pending"
        received = await webhook_receiver.wait_for(2)
        [again] = await settled(notifications, headers, endpoint["id"], 1)
        detail = (await http.get(f"/deliveries/{delivery['id']}", headers=headers)).json()
    assert [r.webhook_id for r in received] == [str(event_id)] * 2
    assert all(r.verified for r in received)
    assert (again["status"], again["attempts"]) == ("delivered", 2)
    assert [a["number"] for a in detail["attempt_log"]] == [1, 2]


async def test_a_pending_delivery_or_a_disabled_endpoint_is_not_resent(
    notifications: Notifications,
) -> None:
    partner_id, headers = notifications.partner()
    endpoint = await subscribe(notifications, headers, "http://127.0.0.1:9/hook")
    async with notifications.pool.acquire() as connection:  # a receiver that is down for now
        await connection.execute(
            "UPDATE webhook_endpoints SET enabled = false WHERE id = $1",
            uuid.UUID(endpoint["id"]),
        )
    event_id = await notifications.publish(partner_id)
    async with notifications.pool.acquire() as connection:
        delivery_id = await connection.fetchval(
            "INSERT INTO deliveries (id, endpoint_id, event_id, event_type, payload,"
            " next_attempt_at) VALUES (gen_random_uuid(), $1, $2, 'x', '{}', now() + interval"
            " '1 hour') RETURNING id",
            uuid.UUID(endpoint["id"]),
            event_id,
        )
    async with notifications.client() as http:
        pending = await http.post(f"/deliveries/{delivery_id}/resend", headers=headers)
        async with notifications.pool.acquire() as connection:
            await connection.execute(
                "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL WHERE id = $1",
                delivery_id,
            )
        disabled = await http.post(f"/deliveries/{delivery_id}/resend", headers=headers)
        recover = await http.post(
            f"/webhook-endpoints/{endpoint['id']}/recover",
            json={"since": "2020-01-01T00:00:00Z"},
            headers=headers,
        )
    assert (pending.status_code, pending.json()["code"]) == (409, "delivery_pending")
    assert (disabled.status_code, disabled.json()["code"]) == (409, "webhook_endpoint_disabled")
    assert (recover.status_code, recover.json()["code"]) == (409, "webhook_endpoint_disabled")


async def test_recover_sends_every_failed_delivery_since_a_time(
    notifications: Notifications, webhook_receiver: Receiver
) -> None:
    partner_id, headers = notifications.partner()
    endpoint = await subscribe(notifications, headers, webhook_receiver.url)
    webhook_receiver.secrets.append(endpoint["secret"])
    before = datetime.now(UTC) - timedelta(seconds=1)
    webhook_receiver.script.extend([503] * 4)  # down: two events, two attempts each
    failed_ids = [await notifications.publish(partner_id) for _ in range(2)]
    deliveries = await settled(notifications, headers, endpoint["id"], 2)
    assert {d["status"] for d in deliveries} == {"failed"}
    delivered_id = await notifications.publish(partner_id)  # up again
    await settled(notifications, headers, endpoint["id"], 3)

    async with notifications.client() as http:
        nothing = await http.post(
            f"/webhook-endpoints/{endpoint['id']}/recover",
            json={"since": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()},
            headers=headers,
        )
        naive = await http.post(
            f"/webhook-endpoints/{endpoint['id']}/recover",
            json={"since": "2026-01-01T00:00:00"},
            headers=headers,
        )
        recovered = await http.post(
            f"/webhook-endpoints/{endpoint['id']}/recover",
            json={"since": before.isoformat()},
            headers=headers,
        )
    assert (nothing.status_code, nothing.json()) == (202, {"queued": 0})
    assert naive.status_code == 422
    assert (recovered.status_code, recovered.json()) == (202, {"queued": 2})
    received = await webhook_receiver.wait_for(4 + 1 + 2)
    final = await settled(notifications, headers, endpoint["id"], 3)
    assert {d["status"] for d in final} == {"delivered"}
    ids = [r.webhook_id for r in received]
    # Each failed event arrives once more, with its own id; the delivered one is not sent again.
    assert sorted(ids[5:]) == sorted(str(i) for i in failed_ids)
    assert ids.count(str(delivered_id)) == 1
    assert all(r.verified for r in received)


async def test_partners_see_only_their_deliveries_and_operators_see_all(
    notifications: Notifications, webhook_receiver: Receiver
) -> None:
    a_id, a = notifications.partner()
    b_id, b = notifications.partner()
    endpoint_a = await subscribe(notifications, a, webhook_receiver.url)
    endpoint_b = await subscribe(notifications, b, webhook_receiver.url)
    event_a = await notifications.publish(a_id)
    event_b = await notifications.publish(b_id)
    [delivery_a] = await settled(notifications, a, endpoint_a["id"], 1)
    [delivery_b] = await settled(notifications, b, endpoint_b["id"], 1)
    operator = notifications.operator()

    async with notifications.client() as http:
        mine = await http.get("/deliveries", headers=a)
        spying = await http.get("/deliveries", params={"partner_id": str(b_id)}, headers=a)
        foreign = {
            "detail": await http.get(f"/deliveries/{delivery_b['id']}", headers=a),
            "resend": await http.post(f"/deliveries/{delivery_b['id']}/resend", headers=a),
            "log": await http.get(f"/webhook-endpoints/{endpoint_b['id']}/deliveries", headers=a),
            "recover": await http.post(
                f"/webhook-endpoints/{endpoint_b['id']}/recover",
                json={"since": "2020-01-01T00:00:00Z"},
                headers=a,
            ),
        }
        everyone = await http.get("/deliveries", params={"limit": 100}, headers=operator)
        only_b = await http.get("/deliveries", params={"partner_id": str(b_id)}, headers=operator)
        one_event = await http.get(
            "/deliveries", params={"event_id": str(event_a)}, headers=operator
        )
        detail = await http.get(f"/deliveries/{delivery_b['id']}", headers=operator)
        log = await http.get(f"/webhook-endpoints/{endpoint_a['id']}/deliveries", headers=operator)
        operator_resend = await http.post(
            f"/deliveries/{delivery_a['id']}/resend", headers=operator
        )
    assert [d["id"] for d in mine.json()["items"]] == [delivery_a["id"]]
    assert spying.status_code == 403
    assert {name: r.status_code for name, r in foreign.items()} == dict.fromkeys(foreign, 404)
    assert {delivery_a["id"], delivery_b["id"]} <= {d["id"] for d in everyone.json()["items"]}
    assert [d["event_id"] for d in only_b.json()["items"]] == [str(event_b)]
    assert [d["partner_id"] for d in one_event.json()["items"]] == [str(a_id)]
    assert detail.status_code == 200
    assert detail.json()["attempt_log"][0]["status_code"] == 200
    assert [d["id"] for d in log.json()["items"]] == [delivery_a["id"]]
    assert operator_resend.status_code == 403


async def test_the_log_is_paged_newest_first(notifications: Notifications) -> None:
    partner_id, headers = notifications.partner()
    # Nothing listens there: every attempt fails at once, and the deliveries end failed.
    endpoint = await subscribe(notifications, headers, "http://127.0.0.1:9/hook")
    events = [await notifications.publish(partner_id) for _ in range(3)]
    await settled(notifications, headers, endpoint["id"], 3)
    path = f"/webhook-endpoints/{endpoint['id']}/deliveries"
    async with notifications.client() as http:
        first = await http.get(path, params={"limit": 2, "status": "failed"}, headers=headers)
        second = await http.get(
            path,
            params={"limit": 2, "status": "failed", "cursor": first.json()["next_cursor"]},
            headers=headers,
        )
        everywhere = await http.get("/deliveries", params={"limit": 2}, headers=headers)
    pages = first.json()["items"] + second.json()["items"]
    assert [d["event_id"] for d in pages] == [str(e) for e in reversed(events)]
    assert second.json()["next_cursor"] is None
    assert everywhere.json()["items"] == first.json()["items"]
    failure = pages[0]
    assert (failure["status"], failure["attempts"], failure["last_status_code"]) == (
        "failed",
        2,
        None,
    )
    assert failure["last_error"]
