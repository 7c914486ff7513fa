"""Composition root of the funding service: settings, broker, routes and the ASGI app.

Run it with ``uvicorn maillage.funding.app:create --factory`` (``maillage dev`` does).
"""

from pathlib import Path

from fastapi import FastAPI

from maillage.common.http import create_app
from maillage.common.settings import ServiceSettings, service_config
from maillage.funding import api, consumers

MIGRATIONS = Path(__file__).parent / "migrations"
DESCRIPTION = (
    "Programme 147 (politique de la ville) conventions: officers approve and pay tranches."
)


class FundingSettings(ServiceSettings):
    model_config = service_config("funding")

    service_name: str = "funding"


def create(settings: FundingSettings | None = None) -> FastAPI:
    settings = settings or FundingSettings()  # type: ignore[call-arg]  # read from the environment
    return create_app(
        settings,
        title="Maillage funding",
        description=DESCRIPTION,
        routers=[api.router],
        consumers=consumers.CONSUMERS,
        migrations=MIGRATIONS,
    )
