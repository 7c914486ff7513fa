"""The audience table: every event type of the catalog has one, and each rule says who hears."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from maillage.common.catalog import (
    SCHOOL_CLAIMS,
    SCHOOLS,
    ConventionSigned,
    MatchDeclined,
    MatchProposed,
    MatchRequested,
    MatchWithdrawn,
    PairingEnded,
    PartnerSuspended,
    PartnerVerified,
    StageApplicationSubmitted,
    StageOfferPublished,
    TrancheApproved,
    catalog,
)
from maillage.notifications import consumers, domain, mail
from maillage.notifications.domain import GeoPoint, OfferFollower

SCHOOL = uuid.uuid4()
TETE = uuid.uuid4()
PARTNER = uuid.uuid4()
ORLY = GeoPoint(48.7433, 2.3936)  # Collège Robert Desnos, roughly
CRETEIL = GeoPoint(48.7904, 2.4556)  # about 7 km north-east of Orly
LYON = GeoPoint(45.7640, 4.8357)  # about 390 km away


def data(model: type[Any], **fields: Any) -> dict[str, Any]:
    """Validated event data, as the consumer hands it to the resolver."""
    return model.model_validate(fields).model_dump(mode="json")  # type: ignore[no-any-return]


# Topics the fan-out does not read, and why: a new topic is either read or listed here.
NOT_READ = {
    SCHOOLS.name: "reference data (the Annuaire de l'éducation), no partner's news: nobody hears",
    SCHOOL_CLAIMS.name: "one-time codes for a school's mailbox: mailed by their own consumer",
}


def test_the_fan_out_reads_every_topic_but_reference_data() -> None:
    read = {topic.name for topic in consumers.fanout.topics}
    assert read | set(NOT_READ) == set(catalog.topics)
    assert not read & set(NOT_READ)


def test_every_event_type_read_has_an_audience_and_a_template() -> None:
    read = catalog.types_on(consumers.fanout.topics)
    assert set(domain.AUDIENCES) == set(read)
    for event_type in read:
        assert mail.renderer.has(mail.event_template(event_type)), event_type


def test_every_field_the_table_names_is_a_field_of_the_event() -> None:
    for event_type, rule in domain.AUDIENCES.items():
        fields = catalog.events[event_type].model.model_fields
        assert rule.fields, event_type
        for name in rule.fields:
            assert name in fields, f"{event_type}: {name}"
            assert "partner_id" in name, f"{event_type}: {name} is not a partner id"


def test_an_unknown_type_is_refused_rather_than_sent_to_nobody() -> None:
    with pytest.raises(domain.UnknownEventType, match=r"fr\.maillage\.x\.y\.z\.v1"):
        domain.audience("fr.maillage.x.y.z.v1", {})


def partner_facts(model: type[Any], status: str) -> dict[str, Any]:
    return data(
        model, partner_id=PARTNER, kind="association", legal_name="A", status=status, version=2
    )


def test_a_partner_event_concerns_that_partner() -> None:
    event = partner_facts(PartnerVerified, "verified")
    assert domain.audience("fr.maillage.registry.partner.verified.v1", event) == {PARTNER}


def request_fields(**extra: Any) -> dict[str, Any]:
    return {
        "request_id": uuid.uuid4(),
        "school_partner_id": SCHOOL,
        "school_year": "2026-2027",
        "status": "requested",
        "priority_class": "REP+",
        **extra,
    }


def test_a_request_concerns_the_school_then_the_tete_once_proposed() -> None:
    requested = data(MatchRequested, **request_fields())
    assert domain.audience("fr.maillage.cordees.match-request.requested.v1", requested) == {SCHOOL}
    proposal = request_fields(offer_id=uuid.uuid4(), tete_partner_id=TETE)
    proposed = data(MatchProposed, **proposal, score=0.8, distance_km=3.2, rank=1)
    assert domain.audience("fr.maillage.cordees.match-request.proposed.v1", proposed) == {
        SCHOOL,
        TETE,
    }
    declined = data(MatchDeclined, **proposal)
    assert domain.audience("fr.maillage.cordees.match-request.declined.v1", declined) == {
        SCHOOL,
        TETE,
    }


def test_a_withdrawal_reaches_the_tete_only_when_one_was_involved() -> None:
    kind = "fr.maillage.cordees.match-request.withdrawn.v1"
    alone = data(MatchWithdrawn, **request_fields(status="withdrawn"))
    assert domain.audience(kind, alone) == {SCHOOL}
    proposed = data(
        MatchWithdrawn,
        **request_fields(status="withdrawn", offer_id=uuid.uuid4(), tete_partner_id=TETE),
    )
    assert domain.audience(kind, proposed) == {SCHOOL, TETE}


def test_a_pairing_concerns_both_sides() -> None:
    ended = data(
        PairingEnded,
        pairing_id=uuid.uuid4(),
        request_id=uuid.uuid4(),
        offer_id=uuid.uuid4(),
        tete_partner_id=TETE,
        school_partner_id=SCHOOL,
        school_year="2026-2027",
        reason="school_year_end",
    )
    assert domain.audience("fr.maillage.cordees.pairing.ended.v1", ended) == {SCHOOL, TETE}


def test_an_application_concerns_the_school_and_the_offering_partner() -> None:
    submitted = data(
        StageApplicationSubmitted,
        application_id=uuid.uuid4(),
        offer_id=uuid.uuid4(),
        offer_partner_id=PARTNER,
        school_partner_id=SCHOOL,
        status="submitted",
    )
    assert domain.audience("fr.maillage.stages3e.application.submitted.v1", submitted) == {
        SCHOOL,
        PARTNER,
    }


def test_funding_concerns_the_beneficiary_and_every_cofinancer() -> None:
    commune, caf = uuid.uuid4(), uuid.uuid4()
    facts = {
        "beneficiary_partner_id": SCHOOL,
        "cofinancer_partner_ids": (commune, caf),
        "amount_cents": 47_500_000,
        "status": "approved",
    }
    approved = data(
        TrancheApproved, tranche_id=uuid.uuid4(), convention_id=uuid.uuid4(), number=1, **facts
    )
    assert domain.audience("fr.maillage.funding.tranche.approved.v1", approved) == {
        SCHOOL,
        commune,
        caf,
    }
    signed = data(
        ConventionSigned,
        convention_id=uuid.uuid4(),
        first_year=2026,
        last_year=2028,
        **{**facts, "cofinancer_partner_ids": (), "status": "signed"},
    )
    assert domain.audience("fr.maillage.funding.convention.signed.v1", signed) == {SCHOOL}


def test_a_stage_offer_reaches_the_schools_following_offers_within_their_distance() -> None:
    near, far, picky = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    followers = [
        OfferFollower(near, CRETEIL, within_km=10),  # ~7 km: in
        OfferFollower(far, LYON, within_km=200),  # ~390 km: out
        OfferFollower(picky, CRETEIL, within_km=5),  # ~7 km, follows within 5: out
    ]
    offer = data(
        StageOfferPublished,
        offer_id=uuid.uuid4(),
        partner_id=PARTNER,
        title="Une semaine au laboratoire",
        week_start="2026-12-07",
        places=3,
        status="published",
    )
    kind = "fr.maillage.stages3e.offer.published.v1"
    assert domain.audience(kind, offer, offer_location=ORLY, followers=followers) == {
        PARTNER,
        near,
    }
    # An offer with no known place reaches its partner only.
    assert domain.audience(kind, offer, offer_location=None, followers=followers) == {PARTNER}


def test_haversine_matches_known_distances() -> None:
    assert domain.haversine_km(ORLY, ORLY) == 0
    paris, marseille = GeoPoint(48.8566, 2.3522), GeoPoint(43.2965, 5.3698)
    assert domain.haversine_km(paris, marseille) == pytest.approx(661, abs=3)
    assert domain.haversine_km(ORLY, CRETEIL) == pytest.approx(6.9, abs=0.3)


def test_suspended_and_rejected_partners_hear_only_the_event_that_silenced_them() -> None:
    suspended = partner_facts(PartnerSuspended, "suspended")
    kind = "fr.maillage.registry.partner.suspended.v1"
    assert not domain.silenced(PARTNER, "suspended", kind, suspended)
    assert domain.silenced(uuid.uuid4(), "suspended", kind, suspended)
    other = "fr.maillage.cordees.pairing.ended.v1"
    assert domain.silenced(PARTNER, "suspended", other, {})
    assert domain.silenced(PARTNER, "rejected", other, {})
    assert not domain.silenced(PARTNER, "verified", other, {})
    assert not domain.silenced(PARTNER, "pending", other, {})
    assert not domain.silenced(PARTNER, None, other, {})  # not in the read model yet


def test_mail_retries_double_up_to_the_cap() -> None:
    delays = [domain.mail_retry_delay(n).total_seconds() for n in range(1, 8)]
    assert delays == [30, 60, 120, 240, 480, 900, 900]
    assert domain.mail_retry_delay(10_000) == domain.MAIL_RETRY_CAP
    with pytest.raises(ValueError, match="at least one attempt"):
        domain.mail_retry_delay(0)
