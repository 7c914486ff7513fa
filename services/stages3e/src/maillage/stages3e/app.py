"""Composition root of the stages3e service: settings, broker, routes, the worker and the ASGI
app.

Run it with ``uvicorn maillage.stages3e.app:create --factory`` (``maillage dev`` does).
"""

from pathlib import Path

import asyncpg
from fastapi import FastAPI
from pydantic import Field

from maillage.common import auth
from maillage.common.http import create_app
from maillage.common.ratelimit import TokenBucket
from maillage.common.settings import ServiceSettings, service_config
from maillage.stages3e import api, consumers, domain, gauges, workers

MIGRATIONS = Path(__file__).parent / "migrations"
DESCRIPTION = (
    "Stages de 3e: partners publish one-week observation internships by ISO week, with seats "
    "reserved to pupils of REP+/REP collèges; collèges search by distance and apply for their "
    "pupils, named only by their own reference."
)


class Stages3eSettings(ServiceSettings):
    model_config = service_config("stages3e")

    service_name: str = "stages3e"
    reserved_open_days: int = Field(
        default=domain.RESERVED_OPEN_DAYS,
        ge=0,
        le=120,
        description="Reserved seats still free open to every school this many days before",
    )
    timed_rules_seconds: float = Field(
        default=60, gt=0, description="How often expiry, closing and erasure run"
    )
    erasure_month: int = Field(default=7, ge=1, le=12, description="Pupils' references erased")
    erasure_day: int = Field(default=31, ge=1, le=31, description="on this day after the year")
    writes_per_minute: float = Field(default=600, gt=0, description="Per caller, 429 beyond")
    search_partner_seconds: float = Field(
        default=30,
        ge=0,
        le=300,
        description="A search reuses the caller's partner record read this long ago (0: never)",
    )


def create(settings: Stages3eSettings | None = None) -> FastAPI:
    settings = settings or Stages3eSettings()  # type: ignore[call-arg]  # read from the environment

    def stages_clock(pool: asyncpg.Pool) -> workers.StagesClock:
        return workers.StagesClock(
            pool,
            interval=settings.timed_rules_seconds,
            erasure_month=settings.erasure_month,
            erasure_day=settings.erasure_day,
        )

    app = create_app(
        settings,
        title="Maillage stages de 3e",
        description=DESCRIPTION,
        routers=[api.router],
        consumers=consumers.CONSUMERS,
        migrations=MIGRATIONS,
        workers=[stages_clock],
        gauges=gauges.GAUGES,
    )
    app.state.rate_limits = {"writes": TokenBucket(rate=settings.writes_per_minute, per=60)}
    # writes refused to suspended partners (decision 40)
    app.state.partner_status = auth.partners_table_status("partner_id")
    app.state.recent_partners = api.RecentPartners(settings.search_partner_seconds)
    return app
