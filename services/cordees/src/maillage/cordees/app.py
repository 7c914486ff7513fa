"""Composition root of the cordees service: settings, broker, routes and the ASGI app.

Run it with ``uvicorn maillage.cordees.app:create --factory`` (``maillage dev`` does).
"""

from pathlib import Path

from fastapi import FastAPI

from maillage.common.http import create_app
from maillage.common.settings import ServiceSettings, service_config
from maillage.cordees import api, consumers

MIGRATIONS = Path(__file__).parent / "migrations"
DESCRIPTION = (
    "Cordées de la réussite: têtes de cordée offer mentoring, collèges and lycées are matched "
    "to them, REP+ first."
)


class CordeesSettings(ServiceSettings):
    model_config = service_config("cordees")

    service_name: str = "cordees"


def create(settings: CordeesSettings | None = None) -> FastAPI:
    settings = settings or CordeesSettings()  # type: ignore[call-arg]  # read from the environment
    return create_app(
        settings,
        title="Maillage cordées",
        description=DESCRIPTION,
        routers=[api.router],
        consumers=consumers.CONSUMERS,
        migrations=MIGRATIONS,
    )
