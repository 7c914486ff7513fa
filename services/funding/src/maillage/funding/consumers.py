"""Event consumers of the funding service: one EventConsumer per consumer group.

``funding.partners`` keeps the read model of partners from ``registry.partners``: whether a
beneficiary is verified (to record a convention, to request a tranche), and its name, SIRET and
RNA for the SCDL open-data export. Events may come again or out of order across a redelivery:
only a newer ``version`` applies.
"""

from __future__ import annotations

from maillage.common.catalog import (
    PARTNERS,
    PartnerFacts,
    PartnerRegistered,
    PartnerRejected,
    PartnerSuspended,
    PartnerUpdated,
    PartnerVerified,
)
from maillage.common.inbox import Delivery, EventConsumer
from maillage.funding import store

partners = EventConsumer(
    "funding.partners",
    [PARTNERS],
    description="The read model of beneficiaries and co-financers, from the registry.",
)


async def apply_partner(event: PartnerFacts, delivery: Delivery) -> None:
    await store.apply_partner(
        delivery.connection,
        event.model_dump(
            include={
                "partner_id",
                "kind",
                "legal_name",
                "status",
                "siret",
                "rna",
                "departement",
                "version",
            }
        ),
    )


for _model in (
    PartnerRegistered,
    PartnerVerified,
    PartnerUpdated,
    PartnerSuspended,
    PartnerRejected,
):
    partners.handler(_model)(apply_partner)


CONSUMERS: list[EventConsumer] = [partners]
