"""Event consumers of the cordees service: one EventConsumer per consumer group.

``cordees.partners`` keeps the read model of partners from ``registry.partners``: what the
matcher needs of schools (UAI, REP status, QPV proximity, coordinates) and of têtes de cordée.
Events may come again or out of order across a redelivery: only a newer ``version`` applies.
When a tête de cordée stops being verified, the requests proposed to its offers move on to
their next candidate, so a suspended tête receives no proposal and holds none.
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
from maillage.cordees import domain, matcher, store

partners = EventConsumer(
    "cordees.partners",
    [PARTNERS],
    description="The read model of schools and têtes de cordée, from the registry.",
)


async def apply_partner(event: PartnerFacts, delivery: Delivery) -> None:
    facts = event.model_dump(include=set(PartnerFacts.model_fields))
    facts["academie"] = domain.academie_of(event.departement) if event.departement else None
    if not await store.apply_partner(delivery.connection, facts):
        return  # an older version than the one kept
    if event.status != "verified" and event.kind in matcher.TETE_KINDS:
        for request_id in await store.proposed_to_tete(delivery.connection, event.partner_id):
            request = await store.get_request(delivery.connection, request_id, for_update=True)
            if request is not None and request["status"] == "proposed":
                await matcher.move_on(delivery.connection, request, declined=False)


for _model in (
    PartnerRegistered,
    PartnerVerified,
    PartnerUpdated,
    PartnerSuspended,
    PartnerRejected,
):
    partners.handler(_model)(apply_partner)


CONSUMERS: list[EventConsumer] = [partners]
