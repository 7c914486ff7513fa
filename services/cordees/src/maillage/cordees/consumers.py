"""Event consumers of the cordees service: one EventConsumer per consumer group.

``cordees.partners`` keeps the read model of partners from ``registry.partners``: what the
matcher needs of schools (UAI, REP status, QPV proximity, coordinates) and of têtes de cordée.
Events may come again or out of order across a redelivery: only a newer ``version`` applies.
When a tête de cordée stops being verified, the requests proposed to its offers move on to
their next candidate, so a suspended tête receives no proposal and holds none; when a school
stops being verified, its proposed requests become unmatched.

``cordees.reference`` keeps the reference schools from ``registry.schools`` (the Annuaire de
l'éducation, as the registry imported it): coverage counts every REP+ and REP collège there,
whether or not it registered. Its own group, so a national import's tens of thousands of events
never hold up the partners' news.
"""

from __future__ import annotations

from maillage.common.catalog import (
    PARTNERS,
    SCHOOLS,
    PartnerFacts,
    PartnerRegistered,
    PartnerRejected,
    PartnerSuspended,
    PartnerUpdated,
    PartnerVerified,
    SchoolReferenced,
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
    if event.status == "verified":
        return
    if event.kind in matcher.TETE_KINDS:
        for request_id in await store.proposed_to_tete(delivery.connection, event.partner_id):
            request = await store.get_request(delivery.connection, request_id, for_update=True)
            if request is not None and request["status"] == "proposed":
                await matcher.move_on(delivery.connection, request, declined=False)
    if event.kind in matcher.SCHOOL_KINDS:
        # A school no longer verified keeps no proposal: its requests wait, unmatched, and are
        # proposed again only once it is verified again (by the next campaign).
        for request_id in await store.proposed_requests_of_school(
            delivery.connection, event.partner_id
        ):
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


reference = EventConsumer(
    "cordees.reference",
    [SCHOOLS],
    description="The reference schools (Annuaire de l'éducation) that coverage counts.",
)


@reference.handler(SchoolReferenced)
async def school_referenced(event: SchoolReferenced, delivery: Delivery) -> None:
    facts = event.model_dump()
    # The académie as partners and offers have it (from the département), so that one scope
    # means the same everywhere; the annuaire's own code when the département is unknown.
    if event.departement and (academie := domain.academie_of(event.departement)):
        facts["academie"] = academie
    await store.apply_reference_school(delivery.connection, facts)


CONSUMERS: list[EventConsumer] = [partners, reference]
