"""Event consumers of the notifications service: one EventConsumer per consumer group.

``notifications.school-claims`` mails the one-time code of a school registration to the school's
institutional mailbox (``registry.school-claims``: no partner hears of it). The code comes sealed
for this service (``school-claim.code-issued.v2``, decision 63): it is opened with the service's
private key, bound to the claim, partner and mailbox, inside the inbox transaction; one that does
not open (sealed for another key, altered, its mailbox changed) is dead-lettered with the reason,
and nothing of it is logged. The clear ``v1`` is no longer produced; the records written before
the upgrade are still mailed.

``notifications.fanout`` reads every domain topic. For each event, inside the inbox transaction
(so a redelivered event changes nothing): the partner read model is kept (registry events), the
audience is resolved (:data:`domain.AUDIENCES`), suspended and rejected partners are left out,
each partner's preferences pick the channels, and the event is queued once per subscribed
webhook endpoint (``webhook-id`` = the event id) and once per confirmed e-mail address. An
event that cannot be processed goes to ``dlq.notifications.fanout`` (the chassis does it).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from maillage.common.catalog import (
    CONVENTIONS,
    CORDEE_OFFERS,
    MATCH_REQUESTS,
    PAIRINGS,
    PARTNERS,
    SCHOOL_CLAIMS,
    STAGE_APPLICATIONS,
    STAGE_OFFERS,
    TRANCHES,
    PartnerFacts,
    SchoolClaimCodeIssued,
    SchoolClaimCodeSealed,
    catalog,
    school_claim_seal_context,
)
from maillage.common.events import Envelope, Event
from maillage.common.inbox import Delivery, EventConsumer
from maillage.common.sealing import OpeningKeys
from maillage.notifications import domain, mail, signing, store

fanout = EventConsumer(
    "notifications.fanout",
    [
        PARTNERS,
        CORDEE_OFFERS,
        MATCH_REQUESTS,
        PAIRINGS,
        STAGE_OFFERS,
        STAGE_APPLICATIONS,
        CONVENTIONS,
        TRANCHES,
    ],
    description="Every event a partner cares about, queued for its webhooks and e-mail.",
)


def _mentioned_partners(data: Mapping[str, Any]) -> set[uuid.UUID]:
    """Every partner an event names (for readable e-mails), whether or not it hears of it."""
    found: set[uuid.UUID] = set()
    for name, value in data.items():
        if name.endswith("partner_id") and value is not None:
            found.add(uuid.UUID(str(value)))
        elif name.endswith("partner_ids"):
            found.update(uuid.UUID(str(item)) for item in value)
    return found


async def _offer_location(
    connection: asyncpg.Connection, data: Mapping[str, Any]
) -> domain.GeoPoint | None:
    """Where a stage offer is: its own coordinates, else its partner's."""
    if data.get("latitude") is not None and data.get("longitude") is not None:
        return domain.GeoPoint(data["latitude"], data["longitude"])
    partner_id = uuid.UUID(str(data["partner_id"]))
    partner = (await store.known_partners(connection, [partner_id])).get(partner_id)
    return partner.location if partner else None


async def fan_out(
    connection: asyncpg.Connection, envelope: Envelope, data: Mapping[str, Any]
) -> tuple[int, int]:
    """Queue one event for its audience; (webhook deliveries, mails) queued by this call."""
    event_type = envelope.type
    offer_location: domain.GeoPoint | None = None
    followers: list[domain.OfferFollower] = []
    if domain.concerned(event_type).schools_following_offers:
        offer_location = await _offer_location(connection, data)
        if offer_location is not None:
            followers = await store.offer_followers(connection, offer_location)
    audience = domain.audience(event_type, data, offer_location=offer_location, followers=followers)
    partners = await store.known_partners(connection, audience | _mentioned_partners(data))
    hearing = {
        partner_id
        for partner_id in audience
        if not domain.silenced(
            partner_id,
            partners[partner_id].status if partner_id in partners else None,
            event_type,
            data,
        )
    }
    if not hearing:
        return 0, 0
    by_webhook, by_email = await store.wanted_channels(connection, hearing, event_type)

    deliveries = 0
    if by_webhook:
        payload = signing.body_for(event_type, envelope.time, data).decode("utf-8")
        deliveries = await store.enqueue_event(
            connection,
            partner_ids=sorted(by_webhook),
            event_id=envelope.id,
            event_type=event_type,
            payload=payload,
            now=datetime.now(UTC),
        )

    mails = 0
    names = {str(partner.id): partner.legal_name for partner in partners.values()}
    for partner_id, address in await store.email_recipients(connection, by_email):
        recipient = partners.get(partner_id)
        queued = await mail.queue(
            connection,
            to=address,
            template=mail.event_template(event_type),
            context={
                "event": data,
                "event_type": event_type,
                "occurred_at": envelope.time,
                "names": names,
                "recipient_id": str(partner_id),
                "recipient": recipient.legal_name if recipient else None,
            },
            partner_id=partner_id,
            dedupe_key=str(envelope.id),  # a replayed event never mails twice
        )
        mails += queued is not None
    return deliveries, mails


async def _handle(event: Event, delivery: Delivery) -> None:
    if isinstance(event, PartnerFacts):
        # The read model first: a suspension silences the partner for this very event too.
        await store.apply_partner(delivery.connection, event)
    await fan_out(delivery.connection, delivery.envelope, event.model_dump(mode="json"))


# One handler per event type of the topics read; what differs per type is in domain.AUDIENCES.
for _spec in catalog.types_on(fanout.topics).values():
    fanout.handler(_spec.model)(_handle)

school_claims = EventConsumer(
    "notifications.school-claims",
    [SCHOOL_CLAIMS],
    description="One-time codes mailed to schools' institutional mailboxes (decision 41).",
)


class _ClaimKeys:
    """The keys that open sealed claim codes, from the settings (:func:`configure`)."""

    opening: OpeningKeys | None = None


def configure(*, claim_opening: OpeningKeys) -> None:
    """The private keys school claim codes are opened with, from the settings."""
    _ClaimKeys.opening = claim_opening


@school_claims.handler(SchoolClaimCodeSealed)
async def mail_sealed_school_claim_code(event: SchoolClaimCodeSealed, delivery: Delivery) -> None:
    """Open the sealed code and mail it to the school's institutional mailbox, once per event.
    A code that does not open raises ``sealing.Unopenable`` (the event is dead-lettered with
    its reason, which names key ids only)."""
    assert _ClaimKeys.opening is not None, "consumers.configure was not called"
    context = school_claim_seal_context(event.claim_id, event.partner_id, event.mailbox)
    code = _ClaimKeys.opening.open(event.sealed_code, context)
    await _mail_code(event, code, delivery)


@school_claims.handler(SchoolClaimCodeIssued)
async def mail_school_claim_code(event: SchoolClaimCodeIssued, delivery: Delivery) -> None:
    """A clear code written before the registry sealed them (v1): mailed as before, so a
    school that registered during the upgrade still gets it. Remove once no v1 record is
    younger than a day on any cluster."""
    await _mail_code(event, event.code, delivery)


async def _mail_code(
    event: SchoolClaimCodeIssued | SchoolClaimCodeSealed, code: str, delivery: Delivery
) -> None:
    """Queue the code's mail to the school's institutional mailbox, deduplicated by event id.
    Nothing of the event is logged here; the mail is the only clear copy (the registry keeps a
    hash)."""
    await mail.queue(
        delivery.connection,
        to=event.mailbox,
        template=SCHOOL_CLAIM_TEMPLATE,
        context={
            "code": code,
            "school_name": event.school_name,
            "uai": event.uai,
            "legal_name": event.legal_name,
            "partner_id": str(event.partner_id),
            "expires_at": event.expires_at,
        },
        dedupe_key=str(delivery.envelope.id),
    )


SCHOOL_CLAIM_TEMPLATE = "school_claim_code"
CONSUMERS: list[EventConsumer] = [fanout, school_claims]
