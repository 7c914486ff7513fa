"""Composition root of the funding service: settings, broker, routes and the ASGI app.

Run it with ``uvicorn maillage.funding.app:create --factory`` (``maillage dev`` does).
"""

from pathlib import Path

from fastapi import FastAPI
from pydantic import Field

from maillage.common import auth
from maillage.common.http import create_app
from maillage.common.settings import ServiceSettings, service_config
from maillage.funding import api, consumers, gauges

MIGRATIONS = Path(__file__).parent / "migrations"
DESCRIPTION = (
    "Programme 147 (politique de la ville): envelopes of AE and CP per département and year, "
    "conventions with their plan de financement, tranches instructed, approved and paid by "
    "separate people, comptes-rendus financiers, a hash-chained audit log, and the SCDL "
    "open-data export. Amounts are integer euro cents."
)


class FundingSettings(ServiceSettings):
    model_config = service_config("funding")

    service_name: str = "funding"
    scdl_attribuant_name: str = Field(
        default="Préfecture du Val-de-Marne",
        max_length=200,
        description="nomAttribuant of the SCDL export: the State service granting the money",
    )
    scdl_attribuant_siret: str = Field(
        default="17940001500014",
        pattern=r"^[0-9]{14}$",
        description="idAttribuant of the SCDL export: that service's SIRET (set it in production)",
    )


def create(settings: FundingSettings | None = None) -> FastAPI:
    settings = settings or FundingSettings()  # type: ignore[call-arg]  # read from the environment
    app = create_app(
        settings,
        title="Maillage funding",
        description=DESCRIPTION,
        routers=[api.router],
        consumers=consumers.CONSUMERS,
        migrations=MIGRATIONS,
        gauges=gauges.GAUGES,
    )
    # writes refused to suspended partners (decision 40)
    app.state.partner_status = auth.partners_table_status("partner_id")
    return app
