"""Event consumers of the cordees service: one EventConsumer per consumer group.

``cordees.partners`` keeps the read model of partners from ``registry.partners``: what the
matcher needs of schools (UAI, REP status, QPV proximity, coordinates) and of têtes de cordée.
Events may come again or out of order across a redelivery: only a newer ``version`` applies.
Each applied change re-solves the live flow of the years where the partner has open offers or
requests (``usecases.partner_changed``): a tête no longer verified holds no proposal and
receives none, a school no longer verified is proposed nothing, one verified again is weighed
anew.

``cordees.reference`` keeps the reference schools from ``registry.schools`` (the Annuaire de
l'éducation, as the registry imported it): coverage counts every REP+ and REP collège there,
whether or not it registered. Its own group, so a national import's tens of thousands of events
never hold up the partners' news.
"""

from __future__ import annotations

from datetime import UTC, datetime

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
from maillage.cordees import domain, store, usecases

partners = EventConsumer(
    "cordees.partners",
    [PARTNERS],
    description="The read model of schools and têtes de cordée, from the registry.",
)


async def apply_partner(event: PartnerFacts, delivery: Delivery) -> None:
    await usecases.partner_changed(delivery.connection, event, now=datetime.now(UTC))


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
