"""Preferences, distances and overlaps are JSON booleans and numbers (``common/kinds.py``):
``"email": "false"`` no longer switches e-mails on. Each is a 422 in French that changes
nothing."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from wrong_kinds import WARNINGS, Probe, refuse_wrong_kinds

if TYPE_CHECKING:  # the fixtures' types; pytest itself loads conftest
    from services.notifications.tests.conftest import Notifications

pytestmark = WARNINGS
PAIRING = "fr.maillage.cordees.pairing.established.v1"


async def test_preferences_and_distances_refuse_other_json_types(
    notifications: Notifications,
) -> None:
    _, headers = notifications.partner()
    async with notifications.client() as http:
        probes = [
            Probe(
                "PUT",
                f"/preferences/{PAIRING}",
                headers,
                {"webhook": False, "email": True},
                {"webhook": "bool", "email": "bool"},
            ),
            Probe(
                "PUT",
                "/settings",
                headers,
                {"stage_offers_within_km": 12.5},
                {"stage_offers_within_km": "float"},
            ),
            Probe(  # the body is checked before the endpoint is looked for
                "POST",
                f"/webhook-endpoints/{uuid.uuid4()}/secret/rotate",
                headers,
                {"overlap_hours": 2},
                {"overlap_hours": "float"},
            ),
        ]

        async def snapshot() -> list[Any]:
            async with notifications.pool.acquire() as connection:
                return [
                    [dict(row) for row in await connection.fetch(f"SELECT * FROM {table}")]
                    for table in ("preferences", "partner_settings", "endpoint_secrets")
                ]

        assert await refuse_wrong_kinds(http, probes, snapshot) > 20
