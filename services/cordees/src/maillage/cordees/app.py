"""Composition root of the cordees service: settings, broker, routes and the ASGI app.

Run it with ``uvicorn maillage.cordees.app:create --factory`` (``maillage dev`` does).
"""

from collections.abc import Sequence
from pathlib import Path

import asyncpg
from fastapi import FastAPI
from pydantic import Field

from maillage.common import auth
from maillage.common.http import create_app
from maillage.common.inbox import EventConsumer
from maillage.common.settings import ServiceSettings, service_config
from maillage.cordees import api, consumers, gauges, matcher

MIGRATIONS = Path(__file__).parent / "migrations"
DESCRIPTION = (
    "Cordées de la réussite: têtes de cordée offer mentoring, collèges and lycées are matched "
    "to them, REP+ first."
)


class CordeesSettings(ServiceSettings):
    model_config = service_config("cordees")

    service_name: str = "cordees"
    school_year_end_check_seconds: float = Field(
        default=3600, gt=0, description="How often pairings of finished school years are ended"
    )
    proposal_expiry_check_seconds: float = Field(
        default=3600,
        gt=0,
        description="How often proposals unanswered for matcher.PROPOSAL_DAYS days are expired",
    )


def create(
    settings: CordeesSettings | None = None,
    *,
    consumers: Sequence[EventConsumer] = consumers.CONSUMERS,
) -> FastAPI:
    """The cordees app; ``consumers``: its consumer groups (tests that apply events through the
    handlers directly pass none)."""
    settings = settings or CordeesSettings()  # type: ignore[call-arg]  # read from the environment

    def school_year_end(pool: asyncpg.Pool) -> matcher.Periodic:
        return matcher.school_year_end(pool, interval=settings.school_year_end_check_seconds)

    def proposal_expiry(pool: asyncpg.Pool) -> matcher.Periodic:
        return matcher.proposal_expiry(pool, interval=settings.proposal_expiry_check_seconds)

    app = create_app(
        settings,
        title="Maillage cordées",
        description=DESCRIPTION,
        routers=[api.router],
        consumers=consumers,
        migrations=MIGRATIONS,
        workers=[school_year_end, proposal_expiry],
        gauges=gauges.GAUGES,
    )
    # writes refused to suspended partners (decision 40)
    app.state.partner_status = auth.partners_table_status("partner_id")
    return app
