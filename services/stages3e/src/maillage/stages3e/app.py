"""Composition root of the stages3e service: settings, broker, routes and the ASGI app.

Run it with ``uvicorn maillage.stages3e.app:create --factory`` (``maillage dev`` does).
"""

from pathlib import Path

from fastapi import FastAPI

from maillage.common.http import create_app
from maillage.common.settings import ServiceSettings, service_config
from maillage.stages3e import api, consumers

MIGRATIONS = Path(__file__).parent / "migrations"
DESCRIPTION = (
    "Stages de 3e: partners publish one-week observation internships, schools apply for their "
    "pupils."
)


class Stages3eSettings(ServiceSettings):
    model_config = service_config("stages3e")

    service_name: str = "stages3e"


def create(settings: Stages3eSettings | None = None) -> FastAPI:
    settings = settings or Stages3eSettings()  # type: ignore[call-arg]  # read from the environment
    return create_app(
        settings,
        title="Maillage stages de 3e",
        description=DESCRIPTION,
        routers=[api.router],
        consumers=consumers.CONSUMERS,
        migrations=MIGRATIONS,
    )
