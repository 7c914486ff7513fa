"""What happens when someone acts on stages de 3e: checks, locks, writes, events.

Each use case takes a connection already inside a transaction (the entry point opens it, so an
Idempotency-Key's stored answer or a consumer's inbox row commits with the effect) and runs in
this order: who acts, take the locks (``store`` gives the order), check, write, publish, return.
Arguments are plain values: routes, workers and tests call them the same way.

Who may act, against the read model of partners (a partner the registry suspended can no longer
act): a verified partner that is not a school (``domain.HOST_KINDS``, token role ``partner``)
hosts stages; a verified collège (role ``school``) applies for its pupils. Pupils are named only
by the school's own reference, which appears in no event, no log line and no URL, and only the
school itself reads it back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from maillage.common.auth import BARRED_STATUSES, Caller, not_in_good_standing
from maillage.common.catalog import (
    StageApplicationAccepted,
    StageApplicationCancelled,
    StageApplicationConfirmed,
    StageApplicationDeclined,
    StageApplicationExpired,
    StageApplicationFacts,
    StageApplicationSubmitted,
    StageApplicationWithdrawn,
    StageOfferClosed,
    StageOfferPublished,
    StageOfferUnpublished,
    StageOfferUpdated,
    StageOfferWithdrawn,
)
from maillage.common.geography import academie_of
from maillage.common.logging import get_logger
from maillage.common.messages import status_label
from maillage.common.outbox import publish
from maillage.common.problems import Problem
from maillage.stages3e import domain, store
from maillage.stages3e.domain import ApplicationStatus, IsoWeek, NotAllowed, OfferStatus
from maillage.stages3e.store import KnownPartner

log = get_logger(__name__)

STAFF_ROLES = frozenset({"operator", "admin"})

# --- problems, one function per code -----------------------------------------------------------


def _forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Accès refusé", detail=detail)


def _offer_not_found(offer_id: uuid.UUID | str) -> Problem:
    return Problem(404, "offer_not_found", "Offre introuvable", detail=f"Aucune offre {offer_id}.")


def application_not_found(application_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        "application_not_found",
        "Candidature introuvable",
        detail=f"Aucune candidature {application_id} parmi les vôtres.",
    )


def _offer_status_conflict(error: NotAllowed) -> Problem:
    return Problem(
        409,
        "offer_status_conflict",
        "Action impossible sur cette offre",
        detail=f"L'offre a le statut {status_label(error.status)}.",
        offer_status=error.status,
    )


def _application_status_conflict(error: NotAllowed) -> Problem:
    return Problem(
        409,
        "application_status_conflict",
        "Action impossible sur cette candidature",
        detail=f"La candidature a le statut {status_label(error.status)}.",
        application_status=error.status,
    )


def _invalid_weeks(detail: str) -> Problem:
    return Problem(422, "invalid_weeks", "Semaines non valides", detail=detail)


def _location_required() -> Problem:
    return Problem(
        422,
        "location_required",
        "Lieu du stage manquant",
        detail="Donnez latitude et longitude : votre fiche de partenaire n'en a pas.",
    )


def _seats_below_held(week: str, held: int) -> Problem:
    return Problem(
        409,
        "seats_below_held",
        "Places déjà prises",
        detail=f"La semaine {week} a déjà {held} place(s) prise(s) : pas moins de places.",
        week=week,
        held=held,
    )


def _week_has_applications(week: str) -> Problem:
    return Problem(
        409,
        "week_has_applications",
        "Semaine déjà demandée",
        detail=f"Des candidatures portent sur la semaine {week} : elle reste dans l'offre.",
        week=week,
    )


def _week_not_offered(week: str) -> Problem:
    return Problem(
        409,
        "week_not_offered",
        "Semaine non proposée",
        detail=f"L'offre ne propose pas la semaine {week}.",
        week=week,
    )


def _week_begun(week: str) -> Problem:
    return Problem(
        409, "week_begun", "Semaine commencée", detail=f"La semaine {week} a commencé.", week=week
    )


def _week_full(week: str) -> Problem:
    return Problem(
        409,
        "week_full",
        "Plus de place",
        detail=f"Toutes les places de la semaine {week} sont prises.",
        week=week,
    )


def _reserved_seats_only(week: str, opens_on: date) -> Problem:
    return Problem(
        409,
        "reserved_seats_only",
        "Places réservées",
        detail=f"Les places libres de la semaine {week} sont réservées aux collèges REP+, REP "
        f"ou proches d'un QPV jusqu'au {opens_on.strftime('%d/%m/%Y')}.",
        week=week,
        opens_on=opens_on.isoformat(),
    )


def _too_many_candidates(max_candidates: int) -> Problem:
    return Problem(
        409,
        "max_candidates_reached",
        "Candidatures complètes",
        detail=f"L'offre reçoit au plus {max_candidates} candidatures en cours.",
        max_candidates=max_candidates,
    )


def _already_applied() -> Problem:
    return Problem(
        409,
        "already_applied",
        "Candidature déjà en cours",
        detail="Cet élève a déjà une candidature en cours pour cette offre et cette semaine.",
    )


def _already_confirmed() -> Problem:
    return Problem(
        409,
        "stage_already_confirmed",
        "Stage déjà confirmé",
        detail="Cet élève a déjà un stage confirmé cette année scolaire.",
    )


# --- who acts -----------------------------------------------------------------------------------


def caller_partner_id(caller: Caller) -> uuid.UUID | None:
    try:
        return uuid.UUID(caller.partner_id) if caller.partner_id else None
    except ValueError:
        return None


async def _acting_partner(
    connection: asyncpg.Connection, caller: Caller, kinds: frozenset[str], role: str, what: str
) -> KnownPartner:
    """The caller's partner from the read model: it must hold ``role``, be of one of ``kinds``
    and be verified. 403 otherwise."""
    partner_id = caller_partner_id(caller)
    if partner_id is None or not caller.has_role(role):
        raise _forbidden(f"Réservé à {what} (rôle {role}, avec son partner_id).")
    partner = await store.get_partner(connection, partner_id)
    if partner is None or partner.kind not in kinds:
        raise _forbidden(f"Votre partenaire n'est pas connu ici comme {what}.")
    if partner.status in BARRED_STATUSES:
        raise not_in_good_standing(partner_id, partner.status)
    if partner.status != "verified":
        raise _forbidden(
            f"Votre partenaire a le statut {status_label(partner.status)} : seuls les "
            "partenaires vérifiés agissent."
        )
    return partner


async def acting_host(connection: asyncpg.Connection, caller: Caller) -> KnownPartner:
    """A verified partner that is not a school (role ``partner``); 403 otherwise."""
    return await _acting_partner(
        connection, caller, domain.HOST_KINDS, "partner", "un organisme d'accueil"
    )


async def acting_school(connection: asyncpg.Connection, caller: Caller) -> KnownPartner:
    """A verified collège (role ``school``); 403 otherwise."""
    return await _acting_partner(connection, caller, domain.SCHOOL_KINDS, "school", "un collège")


# --- facts for events and answers ---------------------------------------------------------------


def offer_facts(offer: dict[str, Any], weeks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    mondays = sorted(week["monday"] for week in weeks)
    return {
        "offer_id": offer["id"],
        "partner_id": offer["partner_id"],
        "title": offer["title"],
        "sector": offer["sector"],
        "week_start": mondays[0].isoformat() if mondays else "",
        "places": sum(week["seats"] for week in weeks),
        "reserved_places": sum(week["reserved"] for week in weeks),
        "weeks": tuple(week["week"] for week in sorted(weeks, key=lambda w: w["monday"])),
        "commune_code": offer["commune_code"],
        "departement": offer["departement"],
        "latitude": offer["latitude"],
        "longitude": offer["longitude"],
        "status": offer["status"],
        "school_year": domain.school_year_label(offer["school_year"]),
        "version": offer["version"],
    }


def application_facts(application: dict[str, Any]) -> dict[str, Any]:
    """What the bus may know of an application: never the pupil's reference."""
    return {
        "application_id": application["id"],
        "offer_id": application["offer_id"],
        "offer_partner_id": application["host_partner_id"],
        "school_partner_id": application["school_partner_id"],
        "status": application["status"],
        "week": application["week"],
        "school_year": domain.school_year_label(application["school_year"]),
    }


@dataclass(frozen=True)
class SeatView:
    """How a caller sees the seats: a school that is not eligible does not see reserved seats
    as free until they open."""

    school_eligible: bool
    today: date
    reserved_open_days: int

    def free(self, week: dict[str, Any]) -> int:
        monday = week["monday"]
        return domain.free_seats(
            seats=week["seats"],
            reserved=week["reserved"],
            held=week["held"],
            held_by_ineligible=week["held_by_ineligible"],
            school_eligible=self.school_eligible,
            reserved_open=self.today
            >= domain.reserved_open_on(IsoWeek.of(monday), self.reserved_open_days),
        )


def offer_out(
    offer: dict[str, Any], weeks: Sequence[dict[str, Any]], view: SeatView
) -> dict[str, Any]:
    """An offer as the API shows it, with its weeks and the seats the caller may take."""
    return {
        **offer,
        "school_year": domain.school_year_label(offer["school_year"]),
        "weeks": [
            {
                "week": week["week"],
                "monday": week["monday"],
                "seats": week["seats"],
                "reserved": week["reserved"],
                "held": week["held"],
                "free": view.free(week),
            }
            for week in sorted(weeks, key=lambda w: w["monday"])
        ],
    }


def application_out(application: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """The pupil's reference is shown only to the school that gave it."""
    own = caller_partner_id(caller) == application["school_partner_id"]
    return {
        **application,
        "school_year": domain.school_year_label(application["school_year"]),
        "pupil_reference": application["pupil_reference"] if own else None,
    }


# --- offers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeekSeats:
    week: IsoWeek
    seats: int
    reserved: int


def _parse_weeks(weeks: Sequence[dict[str, Any]], today: date) -> tuple[int, list[WeekSeats]]:
    """The weeks of an offer, checked: ISO weeks of one school year's window, each once, with
    ``reserved <= seats``. Returns the school year and the weeks in order. 422 otherwise."""
    parsed: list[WeekSeats] = []
    for item in weeks:
        try:
            week = IsoWeek.parse(item["week"])
        except ValueError:
            raise _invalid_weeks(f"{item['week']} n'est pas une semaine ISO (2027-W05).") from None
        if item["reserved"] > item["seats"]:
            raise _invalid_weeks(f"Semaine {week} : plus de places réservées que de places.")
        parsed.append(WeekSeats(week, item["seats"], item["reserved"]))
    if len({item.week for item in parsed}) != len(parsed):
        raise _invalid_weeks("Chaque semaine n'apparaît qu'une fois.")
    years = {domain.school_year_of_week(item.week) for item in parsed}
    if None in years:
        outside = [
            str(item.week) for item in parsed if domain.school_year_of_week(item.week) is None
        ]
        raise _invalid_weeks(
            "Hors de la période des stages de 3e (du premier lundi de septembre au dernier "
            f"vendredi de mai) : {', '.join(outside)}."
        )
    if len(years) != 1:
        raise _invalid_weeks("Toutes les semaines d'une offre sont de la même année scolaire.")
    [year] = years
    assert year is not None
    return year, sorted(parsed, key=lambda item: item.week)


def _offer_values(host: KnownPartner, fields: dict[str, Any], school_year: int) -> dict[str, Any]:
    latitude, longitude = fields.get("latitude"), fields.get("longitude")
    if latitude is None or longitude is None:
        latitude, longitude = host.latitude, host.longitude
        if latitude is None or longitude is None:
            raise _location_required()
    commune_code = fields.get("commune_code") or host.commune_code
    departement = fields.get("departement") or host.departement
    if fields.get("commune_code") and not fields.get("departement"):
        code = fields["commune_code"]
        departement = code[:3] if code.startswith("97") else code[:2]
    return {
        "title": fields["title"],
        "description": fields["description"],
        "sector": fields["sector"],
        "address": fields.get("address"),
        "commune_code": commune_code,
        "commune_name": fields.get("commune_name") or host.commune_name,
        "departement": departement,
        "academie": academie_of(departement) if departement else None,
        "latitude": latitude,
        "longitude": longitude,
        "daily_hours": fields.get("daily_hours"),
        "accessible": fields.get("accessible", False),
        "accessibility": fields.get("accessibility"),
        "max_candidates": fields.get("max_candidates"),
        "school_year": school_year,
    }


async def _write_new_offer(
    connection: asyncpg.Connection,
    host: KnownPartner,
    remote_id: str | None,
    fields: dict[str, Any],
    today: date,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    school_year, weeks = _parse_weeks(fields["weeks"], today)
    begun = [str(item.week) for item in weeks if item.week.monday <= today]
    if begun:
        raise _invalid_weeks(f"Semaines déjà commencées : {', '.join(begun)}.")
    values = _offer_values(host, fields, school_year)
    offer = await store.insert_offer(
        connection,
        {"id": uuid.uuid4(), "partner_id": host.partner_id, "remote_id": remote_id, **values},
    )
    for item in weeks:
        await store.put_week(
            connection, offer["id"], item.week.monday, str(item.week), item.seats, item.reserved
        )
    written = await store.weeks_of(connection, [offer["id"]])
    await publish(connection, StageOfferPublished(**offer_facts(offer, written)))
    return offer, written


async def publish_offer(
    connection: asyncpg.Connection, caller: Caller, today: date, **fields: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A verified host publishes an offer over some weeks. 403 for anyone else; 422
    ``invalid_weeks`` (outside the school year's window, mixed school years, begun, reserved >
    seats), ``location_required``. Publishes StageOfferPublished. Returns (offer, weeks)."""
    host = await acting_host(connection, caller)
    return await _write_new_offer(connection, host, None, fields, today)


async def _rewrite_offer(
    connection: asyncpg.Connection,
    host: KnownPartner,
    offer: dict[str, Any],
    fields: dict[str, Any],
    today: date,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Replace a locked offer's fields and weeks: a week with applications stays, no week
    goes below its held seats, a new week has not begun. Publishes StageOfferUpdated."""
    try:
        domain.offer_after(offer["status"], "update")
    except NotAllowed as error:
        raise _offer_status_conflict(error) from None
    school_year, weeks = _parse_weeks(fields["weeks"], today)
    current = {
        week["monday"]: week
        for week in await store.weeks_of(connection, [offer["id"]], for_update=True)
    }
    wanted = {item.week.monday: item for item in weeks}
    for monday, week in current.items():
        if monday not in wanted and monday in await store.weeks_with_applications(
            connection, offer["id"]
        ):
            raise _week_has_applications(week["week"])
    for monday, item in wanted.items():
        if monday in current:
            if item.seats < current[monday]["held"]:
                raise _seats_below_held(str(item.week), current[monday]["held"])
        elif monday <= today:
            raise _invalid_weeks(f"Semaine déjà commencée : {item.week}.")
    if school_year != offer["school_year"] and current:
        raise _invalid_weeks("Une offre garde son année scolaire.")
    values = _offer_values(host, fields, school_year)
    updated = await store.update_offer(connection, offer["id"], values)
    for monday in current.keys() - wanted.keys():
        await store.delete_week(connection, offer["id"], monday)
    for item in weeks:
        await store.put_week(
            connection, offer["id"], item.week.monday, str(item.week), item.seats, item.reserved
        )
    written = await store.weeks_of(connection, [offer["id"]])
    await publish(connection, StageOfferUpdated(**offer_facts(updated, written)))
    return updated, written


async def _own_offer(
    connection: asyncpg.Connection, host: KnownPartner, offer_id: uuid.UUID
) -> dict[str, Any]:
    """The host's own offer, locked; 404 for another's (it may not even learn it exists… but
    offers are public: 403 for another host's visible offer)."""
    offer = await store.get_offer(connection, offer_id, lock="update")
    if offer is None:
        raise _offer_not_found(offer_id)
    if offer["partner_id"] != host.partner_id:
        raise _forbidden("Seul l'organisme d'accueil d'une offre la modifie.")
    return offer


async def update_offer(
    connection: asyncpg.Connection,
    caller: Caller,
    offer_id: uuid.UUID,
    today: date,
    **fields: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The host replaces its offer (PUT semantics). 403 for another host's, 404 unknown, 409
    ``offer_status_conflict`` once withdrawn or closed, ``seats_below_held``,
    ``week_has_applications``; 422 ``invalid_weeks``."""
    host = await acting_host(connection, caller)
    offer = await _own_offer(connection, host, offer_id)
    return await _rewrite_offer(connection, host, offer, fields, today)


async def upsert_offer_by_remote_id(
    connection: asyncpg.Connection, caller: Caller, remote_id: str, today: date, **fields: Any
) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """Create or replace the caller's offer known by its own ``remote_id``. Scoped to the
    calling partner: another partner's offer with the same remote id is neither seen nor
    touched. Concurrent upserts of one remote id run one after the other. Returns (offer, weeks,
    created)."""
    host = await acting_host(connection, caller)
    await store.lock_remote_id(connection, host.partner_id, remote_id)
    offer = await store.offer_by_remote_id(connection, host.partner_id, remote_id, for_update=True)
    if offer is None:
        created, weeks = await _write_new_offer(connection, host, remote_id, fields, today)
        return created, weeks, True
    updated, weeks = await _rewrite_offer(connection, host, offer, fields, today)
    return updated, weeks, False


async def _move_offer(
    connection: asyncpg.Connection, caller: Caller, offer_id: uuid.UUID, action: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    host = await acting_host(connection, caller)
    offer = await _own_offer(connection, host, offer_id)
    try:
        status = domain.offer_after(offer["status"], action)
    except NotAllowed as error:
        raise _offer_status_conflict(error) from None
    moved = await store.set_offer_status(connection, offer_id, status)
    return moved, await store.weeks_of(connection, [offer_id], for_update=True)


async def unpublish_offer(
    connection: asyncpg.Connection, caller: Caller, offer_id: uuid.UUID
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Out of search; its applications go on. 409 unless published. StageOfferUnpublished."""
    offer, weeks = await _move_offer(connection, caller, offer_id, "unpublish")
    await publish(connection, StageOfferUnpublished(**offer_facts(offer, weeks)))
    return offer, weeks


async def republish_offer(
    connection: asyncpg.Connection, caller: Caller, offer_id: uuid.UUID
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Back in search. 409 unless unpublished. Publishes StageOfferPublished."""
    offer, weeks = await _move_offer(connection, caller, offer_id, "publish")
    await publish(connection, StageOfferPublished(**offer_facts(offer, weeks)))
    return offer, weeks


async def withdraw_offer(
    connection: asyncpg.Connection, caller: Caller, offer_id: uuid.UUID, now: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The host withdraws its offer: every live application is cancelled (reason
    ``offer_withdrawn``, each with its event, seats freed). StageOfferWithdrawn."""
    offer, weeks = await _move_offer(connection, caller, offer_id, "withdraw")
    for application in await store.live_applications_of_offer(
        connection, offer_id, for_update=True
    ):
        await _leave(connection, application, ApplicationStatus.CANCELLED, "offer_withdrawn")
    weeks = await store.weeks_of(connection, [offer_id])
    await publish(connection, StageOfferWithdrawn(**offer_facts(offer, weeks)))
    return offer, weeks


async def close_finished_offers(connection: asyncpg.Connection, today: date) -> int:
    """Close offers whose last week has begun or whose weeks to come are full (a worker's pass;
    offers another pass holds are skipped). Publishes StageOfferClosed. Returns how many."""
    closed = 0
    for row in await store.offers_to_close(connection, today, limit=500):
        offer = await store.set_offer_status(
            connection, row["id"], OfferStatus.CLOSED, closed_reason=row["reason"]
        )
        weeks = await store.weeks_of(connection, [row["id"]])
        await publish(
            connection, StageOfferClosed(**offer_facts(offer, weeks), reason=row["reason"])
        )
        closed += 1
    return closed


# --- applications -------------------------------------------------------------------------------


async def apply(
    connection: asyncpg.Connection,
    caller: Caller,
    now: datetime,
    reserved_open_days: int,
    *,
    offer_id: uuid.UUID,
    week: str,
    pupil_reference: str,
) -> dict[str, Any]:
    """A verified collège applies for one of its pupils to one week of a published offer.
    403 for anyone else; 404 unknown offer; 409 ``offer_status_conflict`` (not published),
    ``week_not_offered``, ``week_begun``, ``week_full``, ``reserved_seats_only``,
    ``max_candidates_reached``, ``already_applied``, ``stage_already_confirmed``.
    Publishes StageApplicationSubmitted (without the pupil's reference)."""
    school = await acting_school(connection, caller)
    today = now.date()
    await store.lock_pupil(connection, school.partner_id, pupil_reference)
    # Applications to one offer, one at a time: the count against max_candidates below is then
    # the count of committed applications (decision 60). The lock does not depend on the offer
    # having a cap: an update may set one between a read and a lock.
    offer = await store.get_offer(connection, offer_id, lock="apply")
    if offer is None:
        raise _offer_not_found(offer_id)
    if offer["status"] != OfferStatus.PUBLISHED:
        raise _offer_status_conflict(NotAllowed(offer["status"], "apply"))
    try:
        iso = IsoWeek.parse(week)
    except ValueError:
        raise _week_not_offered(week) from None
    weeks = {w["monday"]: w for w in await store.weeks_of(connection, [offer_id])}
    if iso.monday not in weeks:
        raise _week_not_offered(week)
    if iso.monday <= today:
        raise _week_begun(week)
    eligible = domain.eligible(school.education_prioritaire, school.qpv_proximity)
    _check_seat(weeks[iso.monday], eligible, today, reserved_open_days)
    if offer["max_candidates"] is not None and (
        await store.candidates_of_offer(connection, offer_id) >= offer["max_candidates"]
    ):
        raise _too_many_candidates(offer["max_candidates"])
    live = await store.live_applications_of_pupil(connection, school.partner_id, pupil_reference)
    if any(a["status"] == "confirmed" and a["school_year"] == offer["school_year"] for a in live):
        raise _already_confirmed()
    if any(a["offer_id"] == offer_id and a["monday"] == iso.monday for a in live):
        raise _already_applied()
    application = await store.insert_application(
        connection,
        {
            "id": uuid.uuid4(),
            "offer_id": offer_id,
            "monday": iso.monday,
            "week": str(iso),
            "host_partner_id": offer["partner_id"],
            "school_partner_id": school.partner_id,
            "school_eligible": eligible,
            "school_year": offer["school_year"],
            "pupil_reference": pupil_reference,
            "expires_at": domain.expires_at(ApplicationStatus.SUBMITTED, now),
        },
    )
    await publish(connection, StageApplicationSubmitted(**application_facts(application)))
    return application


def _check_seat(
    week: dict[str, Any], school_eligible: bool, today: date, reserved_open_days: int
) -> None:
    """409 ``week_full`` or ``reserved_seats_only`` unless one more seat may be held."""
    opens_on = domain.reserved_open_on(IsoWeek.of(week["monday"]), reserved_open_days)
    counts = {
        "seats": week["seats"],
        "reserved": week["reserved"],
        "held": week["held"],
        "held_by_ineligible": week["held_by_ineligible"],
    }
    if domain.may_hold(**counts, school_eligible=school_eligible, reserved_open=today >= opens_on):
        return
    if week["held"] >= week["seats"]:
        raise _week_full(week["week"])
    raise _reserved_seats_only(week["week"], opens_on)


async def _lock_week_then_application(
    connection: asyncpg.Connection, application_id: uuid.UUID, partner_id: uuid.UUID
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The week of an application, then the application, both locked (the lock order); 404
    when the application is neither the partner's school's nor its offers'."""
    found = await store.get_application(connection, application_id, partner_id=partner_id)
    if found is None:
        raise application_not_found(application_id)
    week = await store.lock_week(connection, found["offer_id"], found["monday"])
    application = await store.get_application(connection, application_id, for_update=True)
    assert application is not None
    return week, application


async def _leave(
    connection: asyncpg.Connection,
    application: dict[str, Any],
    status: ApplicationStatus,
    reason: str | None,
) -> dict[str, Any]:
    """Move a live application (its week locked) to a final status, freeing its seat if it held
    one, and publish the event of that status."""
    if application["status"] in domain.HOLDING:
        await store.move_held(
            connection,
            application["offer_id"],
            application["monday"],
            held=-1,
            by_ineligible=0 if application["school_eligible"] else -1,
        )
    moved = await store.set_application_status(connection, application["id"], status, reason=reason)
    facts = application_facts(moved)
    event: StageApplicationFacts
    if status is ApplicationStatus.WITHDRAWN:
        event = StageApplicationWithdrawn(**facts, reason=reason or "school_request")
    elif status is ApplicationStatus.CANCELLED:
        event = StageApplicationCancelled(**facts, reason=reason or "other")
    elif status is ApplicationStatus.EXPIRED:
        event = StageApplicationExpired(**facts)
    else:
        event = StageApplicationDeclined(**facts)
    await publish(connection, event)
    return moved


async def accept(
    connection: asyncpg.Connection,
    caller: Caller,
    application_id: uuid.UUID,
    now: datetime,
    reserved_open_days: int,
) -> dict[str, Any]:
    """The host accepts: a seat of the week is held, under the week's row lock, so parallel
    acceptances never hold more seats than the week has. 404 unless an application to the
    caller's offers; 403 for the school; 409 ``application_status_conflict``, ``week_begun``,
    ``week_full``, ``reserved_seats_only``. Publishes StageApplicationAccepted."""
    host = await acting_host(connection, caller)
    found = await store.get_application(connection, application_id, partner_id=host.partner_id)
    if found is None:
        raise application_not_found(application_id)
    if found["host_partner_id"] != host.partner_id:
        raise _forbidden("Seul l'organisme d'accueil répond à une candidature.")
    offer = await store.get_offer(connection, found["offer_id"], lock="share")
    assert offer is not None
    week, application = await _lock_week_then_application(
        connection, application_id, host.partner_id
    )
    try:
        status = domain.after(application["status"], "accept")
    except NotAllowed as error:
        raise _application_status_conflict(error) from None
    if offer["status"] == OfferStatus.WITHDRAWN:
        raise _offer_status_conflict(NotAllowed(offer["status"], "accept"))
    if week["monday"] <= now.date():
        raise _week_begun(week["week"])
    _check_seat(week, application["school_eligible"], now.date(), reserved_open_days)
    await store.move_held(
        connection,
        week["offer_id"],
        week["monday"],
        held=1,
        by_ineligible=0 if application["school_eligible"] else 1,
    )
    accepted = await store.set_application_status(
        connection, application_id, status, expires_at=domain.expires_at(status, now)
    )
    await publish(connection, StageApplicationAccepted(**application_facts(accepted)))
    return accepted


async def decline(
    connection: asyncpg.Connection, caller: Caller, application_id: uuid.UUID
) -> dict[str, Any]:
    """The host declines a submitted application. 404/403 as :func:`accept`; 409
    ``application_status_conflict``. Publishes StageApplicationDeclined."""
    return await _host_ends(connection, caller, application_id, "decline", None)


async def cancel(
    connection: asyncpg.Connection, caller: Caller, application_id: uuid.UUID, reason: str
) -> dict[str, Any]:
    """The host cancels an accepted or confirmed stage, with a reason code; the seat is freed.
    404/403 as :func:`accept`; 409 ``application_status_conflict``. StageApplicationCancelled."""
    return await _host_ends(connection, caller, application_id, "cancel", reason)


async def _host_ends(
    connection: asyncpg.Connection,
    caller: Caller,
    application_id: uuid.UUID,
    action: str,
    reason: str | None,
) -> dict[str, Any]:
    host = await acting_host(connection, caller)
    _, application = await _lock_week_then_application(connection, application_id, host.partner_id)
    if application["host_partner_id"] != host.partner_id:
        raise _forbidden("Seul l'organisme d'accueil répond à une candidature.")
    try:
        status = domain.after(application["status"], action)
    except NotAllowed as error:
        raise _application_status_conflict(error) from None
    return await _leave(connection, application, status, reason)


async def withdraw(
    connection: asyncpg.Connection, caller: Caller, application_id: uuid.UUID, today: date
) -> dict[str, Any]:
    """The school withdraws its application, any time before the week. 404 unless the
    caller's; 403 for the host; 409 ``application_status_conflict``, ``week_begun``.
    Publishes StageApplicationWithdrawn (reason ``school_request``)."""
    school = await acting_school(connection, caller)
    week, application = await _lock_week_then_application(
        connection, application_id, school.partner_id
    )
    if application["school_partner_id"] != school.partner_id:
        raise _forbidden("Seul l'établissement retire sa candidature.")
    try:
        status = domain.after(application["status"], "withdraw")
    except NotAllowed as error:
        raise _application_status_conflict(error) from None
    if not domain.withdrawable(IsoWeek.of(week["monday"]), today):
        raise _week_begun(week["week"])
    return await _leave(connection, application, status, "school_request")


async def confirm(
    connection: asyncpg.Connection, caller: Caller, application_id: uuid.UUID, now: datetime
) -> dict[str, Any]:
    """The school confirms an accepted stage for the pupil and the family. The pupil's other
    live applications of that school year are withdrawn (reason ``other_stage_confirmed``, each
    with its event, seats freed). 404 unless the caller's; 409 ``application_status_conflict``,
    ``stage_already_confirmed``. Publishes StageApplicationConfirmed."""
    school = await acting_school(connection, caller)
    found = await store.get_application(connection, application_id, partner_id=school.partner_id)
    if found is None or found["school_partner_id"] != school.partner_id:
        raise application_not_found(application_id)
    reference = found["pupil_reference"]
    if reference is None:  # erased: the pupil is no longer known
        raise _application_status_conflict(NotAllowed("erased", "confirm"))
    await store.lock_pupil(connection, school.partner_id, reference)
    live = await store.live_applications_of_pupil(connection, school.partner_id, reference)
    await store.lock_weeks(connection, [(a["offer_id"], a["monday"]) for a in live])
    application = await store.get_application(connection, application_id, for_update=True)
    assert application is not None
    try:
        status = domain.after(application["status"], "confirm")
    except NotAllowed as error:
        raise _application_status_conflict(error) from None
    others = [
        a for a in live if a["id"] != application_id and a["school_year"] == found["school_year"]
    ]
    if any(a["status"] == ApplicationStatus.CONFIRMED for a in others):
        raise _already_confirmed()
    confirmed = await store.set_application_status(connection, application_id, status)
    await publish(connection, StageApplicationConfirmed(**application_facts(confirmed)))
    for other in others:
        locked = await store.get_application(connection, other["id"], for_update=True)
        assert locked is not None
        if locked["status"] in domain.LIVE:
            await _leave(connection, locked, ApplicationStatus.WITHDRAWN, "other_stage_confirmed")
    return confirmed


async def expire_due(connection: asyncpg.Connection, now: datetime, limit: int = 200) -> int:
    """Expire applications past their timer (no answer within 15 days, no confirmation within
    7 days of acceptance), freeing their seats; one transaction for the pass. Publishes
    StageApplicationExpired for each. Returns how many."""
    expired = 0
    for application_id in await store.due_applications(connection, now, limit):
        found = await store.get_application(connection, application_id)
        if found is None:
            continue
        await store.lock_week(connection, found["offer_id"], found["monday"])
        application = await store.get_application(connection, application_id, for_update=True)
        assert application is not None
        if (
            application["status"] not in (ApplicationStatus.SUBMITTED, ApplicationStatus.ACCEPTED)
            or application["expires_at"] is None
            or application["expires_at"] > now
        ):
            continue  # answered meanwhile
        await _leave(connection, application, ApplicationStatus.EXPIRED, None)
        expired += 1
    return expired


# --- minors' data -------------------------------------------------------------------------------


async def erase_finished_school_years(
    connection: asyncpg.Connection, now: datetime, month: int = 7, day: int = 31
) -> int:
    """Erase the pupils' references of every school year whose erasure day has come (31 July
    after its end by default). The applications keep their facts. Returns how many."""
    year = domain.current_school_year(now.date())
    # The school year that ended this spring is erased from its erasure day on.
    last_due = year - 1 if now.date() >= domain.erasure_due(year - 1, month, day) else year - 2
    return await store.erase_references(connection, now, school_years_up_to=last_due)


async def erase_pupil(
    connection: asyncpg.Connection, caller: Caller, now: datetime, pupil_reference: str | None
) -> int:
    """On the school's request: erase one of its pupils' references (or, with None, all of
    them). Its live applications stay as facts; returns how many references were erased."""
    school = await acting_school(connection, caller)
    return await store.erase_references(
        connection, now, school_partner_id=school.partner_id, pupil_reference=pupil_reference
    )


# --- schools' weeks -----------------------------------------------------------------------------


async def put_school_weeks(
    connection: asyncpg.Connection, caller: Caller, weeks: Sequence[str]
) -> list[str]:
    """A collège declares the weeks its 3e pupils go on stage (search defaults to them). 403
    unless a verified collège; 422 ``invalid_weeks`` outside every school year's window."""
    school = await acting_school(connection, caller)
    parsed: list[IsoWeek] = []
    for text in weeks:
        try:
            week = IsoWeek.parse(text)
        except ValueError:
            raise _invalid_weeks(f"{text} n'est pas une semaine ISO (2027-W05).") from None
        if domain.school_year_of_week(week) is None:
            raise _invalid_weeks(f"{week} est hors de la période des stages de 3e.")
        parsed.append(week)
    unique = sorted(set(parsed))
    await store.put_school_mondays(connection, school.partner_id, [w.monday for w in unique])
    return [str(week) for week in unique]
