"""Composition root of the registry service: settings, broker, routes and the ASGI app.

Run it with ``uvicorn maillage.registry.app:create --factory`` (``maillage dev`` does).
"""

from pathlib import Path

from fastapi import FastAPI

from maillage.common.http import create_app
from maillage.common.settings import ServiceSettings, service_config
from maillage.registry import api, consumers

MIGRATIONS = Path(__file__).parent / "migrations"
DESCRIPTION = (
    "The registre des partenaires: partner organisations register, are verified and receive "
    "their credentials."
)


class RegistrySettings(ServiceSettings):
    model_config = service_config("registry")

    service_name: str = "registry"


def create(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()  # type: ignore[call-arg]  # read from the environment
    return create_app(
        settings,
        title="Maillage registry",
        description=DESCRIPTION,
        routers=[api.router],
        consumers=consumers.CONSUMERS,
        migrations=MIGRATIONS,
    )
