"""Pure rules of notifications: no I/O, no framework.

Webhooks follow the Standard Webhooks specification; a failed delivery is retried on a schedule
and an endpoint failing for days is disabled. The audience table says who is concerned by each
event type; e-mail is retried with a capped backoff.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any, Literal
from uuid import UUID

# Standard Webhooks' recommended schedule: at once, then these delays after each failure.
DEFAULT_RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)

# Every non-zero delay moves by up to ±10 %, so endpoints failing together do not retry together.
JITTER = 0.10
# A receiver's Retry-After is honoured up to this: a year-long Retry-After would silently park
# the event outside the retry window.
MAX_RETRY_AFTER = timedelta(hours=10)
# An endpoint failing without a single success for this long is disabled…
DEFAULT_DISABLE_AFTER = timedelta(days=5)
# …and its partner is warned by e-mail this long before.
DEFAULT_WARN_AHEAD = timedelta(days=1)

# Jitter is not security: a plain PRNG is right (tests pass a seeded one).
_JITTER_RNG = random.Random()  # noqa: S311

Outcome = Literal["delivered", "retry", "disable"]


def next_attempt(
    attempt_number: int,
    now: datetime,
    *,
    schedule: tuple[timedelta, ...] = DEFAULT_RETRY_SCHEDULE,
    retry_after: timedelta | None = None,
    max_retry_after: timedelta = MAX_RETRY_AFTER,
    rng: random.Random | None = None,
) -> datetime | None:
    """When the next attempt is due, or None when the schedule is exhausted.

    ``attempt_number`` is the number of the attempt that just failed (1 for the first one; 0 asks
    when the first attempt is due). Attempt ``n + 1`` is due ``schedule[n]`` after ``now``, moved
    by a random ±10 % unless the delay is zero; with 8 delays there are 8 attempts in all. A
    ``Retry-After`` from the receiver (capped at ``max_retry_after``) wins when it is later.
    """
    if attempt_number < 0:
        raise ValueError("an attempt number is not negative")
    if attempt_number >= len(schedule):
        return None
    delay = schedule[attempt_number]
    if delay > timedelta(0):
        delay *= 1 + (rng or _JITTER_RNG).uniform(-JITTER, JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_retry_after))
    return now + delay


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A ``Retry-After`` header (delta-seconds or HTTP-date) as a delay; None when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        # Clamped far below timedelta's limits: next_attempt caps it anyway.
        return timedelta(seconds=min(int(text), 366 * 24 * 3600))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def should_disable(
    first_failure_at: datetime | None,
    now: datetime,
    *,
    after: timedelta = DEFAULT_DISABLE_AFTER,
) -> bool:
    """Whether an endpoint failing since ``first_failure_at`` (None: healthy) is disabled now.

    ``first_failure_at`` is the first failed attempt since the endpoint's last success.
    """
    return first_failure_at is not None and now - first_failure_at >= after


def warn_before_disable(
    first_failure_at: datetime | None,
    now: datetime,
    *,
    after: timedelta = DEFAULT_DISABLE_AFTER,
    ahead: timedelta = DEFAULT_WARN_AHEAD,
) -> bool:
    """Whether the partner is due the "your endpoint will be disabled" e-mail now.

    True from ``ahead`` before the endpoint would be disabled until it is; the caller records that
    the warning was sent, so it goes once per failure streak.
    """
    if first_failure_at is None:
        return False
    failing_for = now - first_failure_at
    return max(after - ahead, timedelta(0)) <= failing_for < after


def classify_response(status_code: int) -> Outcome:
    """What a receiver's HTTP status means for the delivery.

    * 2xx: delivered.
    * 410 Gone: the receiver says the endpoint no longer exists: disable it, stop retrying.
    * anything else, retried: 408, 429 and 5xx are transient by definition; other 4xx (400, 401,
      403, 404…) are retried too, because Standard Webhooks counts every non-2xx as a failure and
      they are usually a receiver's deployment or configuration mistake (a wrong route or a
      rotated secret) that gets fixed within the retry window; an endpoint that never recovers is
      disabled after :data:`DEFAULT_DISABLE_AFTER`. 3xx is a failure as well: redirects are not
      followed (SSRF), and 1xx is never a final answer.
    """
    if 200 <= status_code <= 299:
        return "delivered"
    if status_code == 410:
        return "disable"
    return "retry"


# --- who is concerned by an event --------------------------------------------------------------


@dataclass(frozen=True)
class Concerned:
    """Who an event type concerns.

    ``fields`` name the partner ids in the event's data (a field may hold one id, none, or a
    tuple of ids, like co-financers); ``schools_following_offers`` adds the collèges and lycées
    that follow stage offers within their chosen distance of the offer.
    """

    fields: tuple[str, ...]
    schools_following_offers: bool = False


_THE_PARTNER = Concerned(("partner_id",))
_THE_TETE = Concerned(("tete_partner_id",))
_THE_SCHOOL = Concerned(("school_partner_id",))
_THE_SCHOOL_AND_THE_TETE = Concerned(("school_partner_id", "tete_partner_id"))
_THE_SCHOOL_AND_THE_PREVIOUS_TETE = Concerned(("school_partner_id", "previous_tete_partner_id"))
_THE_SCHOOL_THE_TETE_AND_THE_PREVIOUS = Concerned(
    ("school_partner_id", "tete_partner_id", "previous_tete_partner_id")
)
_THE_SCHOOL_AND_THE_OFFERING_PARTNER = Concerned(("school_partner_id", "offer_partner_id"))
_THE_OFFERING_PARTNER_AND_SCHOOLS_NEARBY = Concerned(("partner_id",), schools_following_offers=True)
_THE_BENEFICIARY_AND_THE_COFINANCERS = Concerned(
    ("beneficiary_partner_id", "cofinancer_partner_ids")
)

# Every event type the fan-out reads, and who hears of it (a test checks none is missing). The
# reference schools of registry.schools are not read: reference data concerns no partner.
AUDIENCES: Mapping[str, Concerned] = MappingProxyType(
    {
        # registry: a partner hears of its own record
        "fr.maillage.registry.partner.registered.v1": _THE_PARTNER,
        "fr.maillage.registry.partner.verified.v1": _THE_PARTNER,
        "fr.maillage.registry.partner.updated.v1": _THE_PARTNER,
        "fr.maillage.registry.partner.suspended.v1": _THE_PARTNER,
        "fr.maillage.registry.partner.rejected.v1": _THE_PARTNER,
        # cordées: an offer concerns its tête de cordée
        "fr.maillage.cordees.offer.opened.v1": _THE_TETE,
        "fr.maillage.cordees.offer.updated.v1": _THE_TETE,
        "fr.maillage.cordees.offer.closed.v1": _THE_TETE,
        # a request concerns the school until a tête de cordée is involved
        "fr.maillage.cordees.match-request.requested.v1": _THE_SCHOOL,
        # a proposal that moves is told to the tête that loses it too (previous_tete_partner_id)
        "fr.maillage.cordees.match-request.unmatched.v1": _THE_SCHOOL_AND_THE_PREVIOUS_TETE,
        "fr.maillage.cordees.match-request.proposed.v1": _THE_SCHOOL_THE_TETE_AND_THE_PREVIOUS,
        "fr.maillage.cordees.match-request.declined.v1": _THE_SCHOOL_AND_THE_TETE,
        # the tête is told only if the request had been proposed to it (tete_partner_id set)
        "fr.maillage.cordees.match-request.withdrawn.v1": _THE_SCHOOL_AND_THE_TETE,
        "fr.maillage.cordees.pairing.established.v1": _THE_SCHOOL_AND_THE_TETE,
        "fr.maillage.cordees.pairing.ended.v1": _THE_SCHOOL_AND_THE_TETE,
        # stages de 3e: a new or withdrawn offer also reaches the schools following offers nearby
        "fr.maillage.stages3e.offer.published.v1": _THE_OFFERING_PARTNER_AND_SCHOOLS_NEARBY,
        "fr.maillage.stages3e.offer.withdrawn.v1": _THE_OFFERING_PARTNER_AND_SCHOOLS_NEARBY,
        # changes that only its host needs to hear of
        "fr.maillage.stages3e.offer.updated.v1": _THE_PARTNER,
        "fr.maillage.stages3e.offer.unpublished.v1": _THE_PARTNER,
        "fr.maillage.stages3e.offer.closed.v1": _THE_PARTNER,
        # an application concerns its school and the host, at every transition
        "fr.maillage.stages3e.application.submitted.v1": _THE_SCHOOL_AND_THE_OFFERING_PARTNER,
        "fr.maillage.stages3e.application.accepted.v1": _THE_SCHOOL_AND_THE_OFFERING_PARTNER,
        "fr.maillage.stages3e.application.declined.v1": _THE_SCHOOL_AND_THE_OFFERING_PARTNER,
        "fr.maillage.stages3e.application.confirmed.v1": _THE_SCHOOL_AND_THE_OFFERING_PARTNER,
        "fr.maillage.stages3e.application.withdrawn.v1": _THE_SCHOOL_AND_THE_OFFERING_PARTNER,
        "fr.maillage.stages3e.application.cancelled.v1": _THE_SCHOOL_AND_THE_OFFERING_PARTNER,
        "fr.maillage.stages3e.application.expired.v1": _THE_SCHOOL_AND_THE_OFFERING_PARTNER,
        # funding: public money concerns who receives it and who co-finances it
        "fr.maillage.funding.convention.signed.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
        "fr.maillage.funding.tranche.requested.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
        "fr.maillage.funding.tranche.approved.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
        "fr.maillage.funding.tranche.paid.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
        "fr.maillage.funding.convention.programmed.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
        "fr.maillage.funding.convention.cancelled.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
        "fr.maillage.funding.convention.closed.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
        "fr.maillage.funding.tranche.rejected.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
        "fr.maillage.funding.report.filed.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
        "fr.maillage.funding.report.accepted.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
        "fr.maillage.funding.reversement.ordered.v1": _THE_BENEFICIARY_AND_THE_COFINANCERS,
    }
)

# What each event tells a partner, in French: the descriptions GET /preferences shows (a test
# checks every event type of AUDIENCES has one). The event type stays the machine code.
DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "fr.maillage.registry.partner.registered.v1": "Un partenaire s'est inscrit (en attente "
        "de vérification, ou vérifié d'emblée par son UAI).",
        "fr.maillage.registry.partner.verified.v1": "Un opérateur a vérifié le partenaire, ou "
        "l'a rétabli après une suspension.",
        "fr.maillage.registry.partner.updated.v1": "Le partenaire a modifié sa fiche.",
        "fr.maillage.registry.partner.suspended.v1": "Un opérateur a suspendu le partenaire.",
        "fr.maillage.registry.partner.rejected.v1": "Un opérateur a refusé l'inscription du "
        "partenaire.",
        "fr.maillage.cordees.offer.opened.v1": "Une tête de cordée a ouvert une offre de cordée.",
        "fr.maillage.cordees.offer.updated.v1": "Une tête de cordée a modifié une offre ouverte "
        "(places, niveaux, thématiques, territoire).",
        "fr.maillage.cordees.offer.closed.v1": "Une tête de cordée a fermé une offre : plus de "
        "nouvelle proposition, les cordées établies continuent.",
        "fr.maillage.cordees.match-request.requested.v1": "Un collège ou un lycée a demandé une "
        "cordée.",
        "fr.maillage.cordees.match-request.proposed.v1": "Une tête de cordée est proposée à un "
        "établissement ; elle accepte ou décline dans les 14 jours. Si la proposition vient "
        "d'une autre offre, cette tête-là est prévenue aussi.",
        "fr.maillage.cordees.match-request.declined.v1": "La tête de cordée a décliné la "
        "proposition, ou l'a laissée sans réponse 14 jours ; le candidat suivant est proposé, "
        "s'il y en a un.",
        "fr.maillage.cordees.match-request.withdrawn.v1": "L'établissement a retiré sa demande.",
        "fr.maillage.cordees.match-request.unmatched.v1": "Aucune offre ouverte ne peut accueillir "
        "la demande pour l'instant, ou sa place est allée à un établissement plus prioritaire "
        "(la tête qui perd la proposition est prévenue) ; elle attend qu'une place se libère.",
        "fr.maillage.cordees.pairing.established.v1": "La tête de cordée a accepté : "
        "l'établissement est encordé.",
        "fr.maillage.cordees.pairing.ended.v1": "Une cordée a pris fin : en fin d'année scolaire, "
        "ou à la demande de la tête de cordée ou de l'établissement.",
        "fr.maillage.stages3e.offer.published.v1": "Un partenaire a publié une offre de stage de "
        "3e.",
        "fr.maillage.stages3e.offer.withdrawn.v1": "Un partenaire a retiré son offre de stage.",
        "fr.maillage.stages3e.offer.updated.v1": "Un partenaire a modifié son offre de stage "
        "(semaines, places, description).",
        "fr.maillage.stages3e.offer.unpublished.v1": "Un partenaire a retiré son offre de stage "
        "de la recherche ; les candidatures en cours continuent.",
        "fr.maillage.stages3e.offer.closed.v1": "Une offre de stage s'est fermée d'elle-même : "
        "sa dernière semaine a commencé, ou toutes ses places sont prises.",
        "fr.maillage.stages3e.application.submitted.v1": "Un établissement a candidaté à une "
        "offre de stage pour l'un de ses élèves.",
        "fr.maillage.stages3e.application.accepted.v1": "Le partenaire qui offre le stage a "
        "accepté la candidature.",
        "fr.maillage.stages3e.application.declined.v1": "Le partenaire qui offre le stage a "
        "décliné la candidature.",
        "fr.maillage.stages3e.application.confirmed.v1": "L'établissement a confirmé le stage "
        "pour l'élève et sa famille.",
        "fr.maillage.stages3e.application.withdrawn.v1": "L'établissement a retiré la candidature.",
        "fr.maillage.stages3e.application.cancelled.v1": "Le partenaire qui offre le stage l'a "
        "annulé, avec un motif.",
        "fr.maillage.stages3e.application.expired.v1": "La candidature a expiré faute de réponse "
        "ou de confirmation dans les délais ; la place est libérée.",
        "fr.maillage.funding.convention.signed.v1": "Un agent chargé des financements a "
        "enregistré une convention signée.",
        "fr.maillage.funding.tranche.requested.v1": "Le bénéficiaire a demandé une tranche.",
        "fr.maillage.funding.tranche.approved.v1": "Un agent chargé des financements a approuvé "
        "la tranche.",
        "fr.maillage.funding.tranche.paid.v1": "Un agent chargé des financements a enregistré le "
        "paiement de la tranche.",
        "fr.maillage.funding.convention.programmed.v1": "Le comité de pilotage a programmé la "
        "convention.",
        "fr.maillage.funding.convention.cancelled.v1": "L'ordonnateur a annulé la convention "
        "avant sa signature.",
        "fr.maillage.funding.convention.closed.v1": "L'ordonnateur a clôturé la convention : "
        "plus aucun versement.",
        "fr.maillage.funding.tranche.rejected.v1": "L'ordonnateur a refusé la tranche demandée ; "
        "le bénéficiaire peut la demander de nouveau.",
        "fr.maillage.funding.report.filed.v1": "Le bénéficiaire a déposé son compte rendu "
        "financier de l'année.",
        "fr.maillage.funding.report.accepted.v1": "Le service instructeur a accepté le compte "
        "rendu financier.",
        "fr.maillage.funding.reversement.ordered.v1": "Une part non dépensée de la subvention "
        "est à reverser à l'État.",
    }
)

# Partners in these states hear nothing more, except the event that put them there: they are
# told why they were suspended or rejected.
SILENCED_STATUSES = frozenset({"suspended", "rejected"})
SILENCING_EVENTS = frozenset(
    {
        "fr.maillage.registry.partner.suspended.v1",
        "fr.maillage.registry.partner.rejected.v1",
    }
)
# Who may follow stage offers: collèges, and lycées (3e prépa-métiers in lycées professionnels).
SCHOOL_KINDS = frozenset({"college", "lycee"})
EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG)


class UnknownEventType(LookupError):
    """An event type the audience table does not know: a new type was added to the catalog
    without saying who is concerned."""


@dataclass(frozen=True)
class GeoPoint:
    latitude: float
    longitude: float


@dataclass(frozen=True)
class OfferFollower:
    """A school that hears of stage offers within ``within_km`` of where it is."""

    partner_id: UUID
    location: GeoPoint
    within_km: float


def haversine_km(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance on the mean Earth sphere (error under 0.5 %: plenty for a radius)."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat = lat2 - lat1
    dlon = math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def schools_near(offer: GeoPoint | None, followers: Iterable[OfferFollower]) -> frozenset[UUID]:
    """The followers within their own chosen distance of the offer (none when it has no place)."""
    if offer is None:
        return frozenset()
    return frozenset(
        follower.partner_id
        for follower in followers
        if haversine_km(offer, follower.location) <= follower.within_km
    )


def concerned(event_type: str) -> Concerned:
    try:
        return AUDIENCES[event_type]
    except KeyError:
        raise UnknownEventType(f"no audience is declared for {event_type}") from None


def audience(
    event_type: str,
    data: Mapping[str, Any],
    *,
    offer_location: GeoPoint | None = None,
    followers: Iterable[OfferFollower] = (),
) -> frozenset[UUID]:
    """The partners an event concerns, by the table above.

    ``data`` is the event's data (its model's fields). For stage offers, ``offer_location`` is
    where the offer is and ``followers`` the schools following offers (the caller may pass more
    than are near: the distance rule is applied here).
    """
    rule = concerned(event_type)
    found: set[UUID] = set()
    for name in rule.fields:
        value = data[name]
        values = value if isinstance(value, (tuple, list, frozenset, set)) else (value,)
        found.update(UUID(str(item)) for item in values if item is not None)
    if rule.schools_following_offers:
        found |= schools_near(offer_location, followers)
    return frozenset(found)


def silenced(
    partner_id: UUID, status: str | None, event_type: str, data: Mapping[str, Any]
) -> bool:
    """Whether a partner of this status hears nothing of this event (None: status unknown yet)."""
    if status not in SILENCED_STATUSES:
        return False
    told_why = event_type in SILENCING_EVENTS and str(data.get("partner_id")) == str(partner_id)
    return not told_why


# --- e-mail --------------------------------------------------------------------------------------

# While the SMTP server refuses or is down, a mail waits this long, doubling, up to the cap; it is
# never given up for an outage.
MAIL_RETRY_FIRST = timedelta(seconds=30)
MAIL_RETRY_CAP = timedelta(minutes=15)


def mail_retry_delay(
    attempts: int,
    *,
    first: timedelta = MAIL_RETRY_FIRST,
    cap: timedelta = MAIL_RETRY_CAP,
) -> timedelta:
    """How long a mail waits after its ``attempts``-th failed attempt (1 for the first)."""
    if attempts < 1:
        raise ValueError("a retry follows at least one attempt")
    # 2**30 × 30 s is far past any cap: bounding the exponent keeps timedelta in range.
    delay: timedelta = first * 2 ** min(attempts - 1, 30)
    return min(delay, cap)


# The largest distance a school may choose for stage offers (migration 0003 checks it too).
MAX_OFFERS_WITHIN_KM = 200.0


def latitude_degrees(km: float) -> float:
    """How many degrees of latitude span ``km`` (a degree of latitude is the same everywhere)."""
    return math.degrees(km / EARTH_RADIUS_KM)
