"""Event consumers of the stages3e service: one EventConsumer per consumer group.

``stages3e.partners`` keeps the read model of partners from ``registry.partners``: who may host
(verified partners that are not schools), who may apply (verified collèges), where they are (an
offer's default place, a school's search point) and whether a collège's pupils may take reserved
seats (REP+/REP from the reference data, QPV proximity). Events may come again or out of order
across a redelivery: only a newer ``version`` applies. A partner no longer verified simply
cannot act any more (every use case checks the read model); what it already published stays.
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
from maillage.common.geography import academie_of
from maillage.common.inbox import Delivery, EventConsumer
from maillage.stages3e import store

partners = EventConsumer(
    "stages3e.partners",
    [PARTNERS],
    description="The read model of hosts and collèges, from the registry.",
)


async def apply_partner(event: PartnerFacts, delivery: Delivery) -> None:
    facts = event.model_dump(include=set(PartnerFacts.model_fields))
    facts["academie"] = academie_of(event.departement) if event.departement else None
    await store.apply_partner(delivery.connection, facts)


for _model in (
    PartnerRegistered,
    PartnerVerified,
    PartnerUpdated,
    PartnerSuspended,
    PartnerRejected,
):
    partners.handler(_model)(apply_partner)


CONSUMERS: list[EventConsumer] = [partners]
