"""Composition root of the notifications service: settings, broker, routes and the ASGI app.

Run it with ``uvicorn maillage.notifications.app:create --factory`` (``maillage dev`` does).
"""

from pathlib import Path

from fastapi import FastAPI

from maillage.common.http import create_app
from maillage.common.settings import ServiceSettings, service_config
from maillage.notifications import api, consumers

MIGRATIONS = Path(__file__).parent / "migrations"
DESCRIPTION = (
    "Notifications: every event a partner cares about, pushed by signed webhook and by e-mail."
)


class NotificationsSettings(ServiceSettings):
    model_config = service_config("notifications")

    service_name: str = "notifications"


def create(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()  # type: ignore[call-arg]  # read from the environment
    return create_app(
        settings,
        title="Maillage notifications",
        description=DESCRIPTION,
        routers=[api.router],
        consumers=consumers.CONSUMERS,
        migrations=MIGRATIONS,
    )
