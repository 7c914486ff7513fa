"""Pure rules of the stages de 3e: no I/O, no framework.

A partner publishes a one-week observation internship offer over some ISO weeks of the school
year; a school applies for a pupil it refers to by an opaque reference of its own (pupils are
minors: no names leave the school, and the reference never leaves this service).

The rules, and where they come from
-----------------------------------
1. **Weeks** are ISO 8601 weeks written ``2027-W05`` (:class:`IsoWeek`), always read in the ISO
   week-year: 2026-12-28 is in 2026-W53, 2027-01-01 too, 2025-12-29 is in 2026-W01. The national
   platform computed weeks from the calendar year (brief ``stages3e.md``, its weaknesses).
2. **The school year's window** for 3e stages runs from the first Monday on or after 1 September
   to the last Friday before 1 June (:func:`window`). A week belongs to school year ``Y-(Y+1)``
   when its Monday to Friday lie inside that window (:func:`school_year_of_week`); weeks of June,
   July, August and the last days of May after the last Friday belong to none.
3. **Seats** are counted per week. Held seats (applications ``accepted`` or ``confirmed``) never
   exceed the week's seats (:func:`may_hold`).
4. **Reserved seats**: ``reserved`` of a week's seats go only to pupils of eligible collèges
   (:func:`eligible`: REP+ or REP in the reference data, or near a QPV) until
   ``reserved_open_days`` days (default 14) before the week's Monday (:func:`reserved_open_on`);
   from that day, unused reserved seats open to every school. Before then, the seats held by
   ineligible schools never exceed ``seats - reserved``.
5. **Applications** move by :data:`TRANSITIONS` (:func:`after`): ``submitted`` → ``accepted``
   (host) → ``confirmed`` (school); ``declined`` (host), ``withdrawn`` (school, before the week),
   ``cancelled`` (host, with a reason, even after confirmation), ``expired`` (no answer within
   :data:`ANSWER_DAYS`, or no confirmation within :data:`CONFIRM_DAYS` of acceptance).
6. **Offers** move by :data:`OFFER_TRANSITIONS`: ``published`` ⇄ ``unpublished``, either →
   ``withdrawn`` (by the partner) or ``closed`` (automatically, when the last week has begun or
   every seat of every week is held).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

STAGE_LENGTH_DAYS = 5  # one school week of observation
ANSWER_DAYS = 15  # a submitted application without the host's answer expires (monstage: 15)
CONFIRM_DAYS = 7  # an accepted application the school does not confirm expires
RESERVED_OPEN_DAYS = 14  # reserved seats still free open to every school this long before
MAX_WEEKS = 40  # a school year has at most 40 stage weeks (36 to 39 in practice)
MAX_SEATS_PER_WEEK = 500
PUPIL_REFERENCE_MAX = 40
PUPIL_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/-]{0,39}$")
"""A school's own opaque reference for a pupil (``3B-07``): level 1, never a name."""

ELIGIBLE_EDUCATION_PRIORITAIRE = frozenset({"REP+", "REP"})

# ONISEP's "groupes formation emploi": the 20 sector codes (brief stages3e.md).
SECTORS: dict[str, str] = {
    "A": "Agriculture",
    "B": "Pêche, mer",
    "C": "Bâtiment",
    "E": "Travail des métaux",
    "F": "Mécanique",
    "H": "Électricité, énergie, électronique",
    "J": "Transformation des matériaux, procédés",
    "K": "Production alimentaire",
    "L": "Textile, habillement, cuir",
    "M": "Travail du bois",
    "N": "Techniques graphiques, impression",
    "O": "Transport, logistique",
    "P": "Gestion et traitement de l'information",
    "Q": "Commerce, gestion, finances",
    "R": "Santé, social, soins personnels",
    "S": "Hôtellerie, tourisme, loisirs",
    "T": "Environnement, nettoyage, sécurité",
    "U": "Communication, médias",
    "V": "Arts, spectacle, audiovisuel",
    "W": "Droit, enseignement, recherche en sciences humaines",
}

# Partners who may host a stage: every verified partner that is not a school.
HOST_KINDS = frozenset(
    {
        "entreprise",
        "association",
        "collectivite",
        "service_etat",
        "etablissement_superieur",
        "caf",
        "autre",
    }
)
SCHOOL_KINDS = frozenset({"college"})


class NotAllowed(ValueError):
    """A transition the state table does not have; the use case answers 409."""

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"{action} is not allowed from {status}")
        self.status = status
        self.action = action


# --- weeks --------------------------------------------------------------------------------------

_WEEK = re.compile(r"^(?P<year>[0-9]{4})-W(?P<week>[0-9]{2})$")


@dataclass(frozen=True, order=True)
class IsoWeek:
    """An ISO 8601 week: ``year`` is the ISO week-year (not the calendar year of its days)."""

    year: int
    week: int

    def __post_init__(self) -> None:
        date.fromisocalendar(self.year, self.week, 1)  # ValueError for 2027-W53, W00…

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        """``2027-W05`` → IsoWeek(2027, 5); ValueError for anything else, or a week 53 of a year
        that has none."""
        match = _WEEK.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not an ISO week (2027-W05)")
        return cls(int(match["year"]), int(match["week"]))

    @classmethod
    def of(cls, day: date) -> IsoWeek:
        year, week, _ = day.isocalendar()
        return cls(year, week)

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.week, 1)

    @property
    def friday(self) -> date:
        return date.fromisocalendar(self.year, self.week, 5)

    def __str__(self) -> str:
        return f"{self.year:04d}-W{self.week:02d}"


def first_monday(start_year: int) -> date:
    """The first Monday on or after 1 September of ``start_year``: the window's first day."""
    first = date(start_year, 9, 1)
    return first + timedelta(days=(7 - first.weekday()) % 7)


def last_friday(start_year: int) -> date:
    """The last Friday before 1 June of ``start_year + 1``: the window's last day."""
    last = date(start_year + 1, 5, 31)
    return last - timedelta(days=(last.weekday() - 4) % 7)


def window(start_year: int) -> tuple[date, date]:
    """The school year ``start_year``-``start_year + 1``'s window: (first Monday, last Friday)."""
    return first_monday(start_year), last_friday(start_year)


def weeks_of_school_year(start_year: int) -> list[IsoWeek]:
    """Every stage week of the school year, in order."""
    first, last = window(start_year)
    count = (last - first).days // 7 + 1
    return [IsoWeek.of(first + timedelta(weeks=n)) for n in range(count)]


def school_year_of_week(week: IsoWeek) -> int | None:
    """The first calendar year of the school year whose window holds ``week``; None when the
    week falls outside every window (summer, the end of May after the last Friday)."""
    monday = week.monday
    start_year = monday.year if monday.month >= 6 else monday.year - 1
    if not 1 <= start_year < 9999:  # no window fits the calendar's range (date's 1 to 9999)
        return None
    first, last = window(start_year)
    return start_year if first <= monday and week.friday <= last else None


def school_year_label(start_year: int) -> str:
    return f"{start_year}-{start_year + 1}"


def current_school_year(today: date) -> int:
    """The school year ``today`` belongs to for planning: from 1 June on, the next one."""
    return today.year if today.month >= 6 else today.year - 1


# --- seats --------------------------------------------------------------------------------------


def eligible(education_prioritaire: str | None, qpv_proximity: bool | None) -> bool:
    """Whether a school's pupils may take reserved seats: REP+ or REP in the reference data, or a
    collège near a QPV (never self-declared: the registry sets both from the reference)."""
    status = (education_prioritaire or "").strip().upper()
    return status in ELIGIBLE_EDUCATION_PRIORITAIRE or bool(qpv_proximity)


def reserved_open_on(week: IsoWeek, days_before: int = RESERVED_OPEN_DAYS) -> date:
    """The day reserved seats still free open to every school."""
    return week.monday - timedelta(days=days_before)


def free_seats(
    *,
    seats: int,
    reserved: int,
    held: int,
    held_by_ineligible: int,
    school_eligible: bool,
    reserved_open: bool,
) -> int:
    """Seats of one week a school may still take (never negative): every free seat for an
    eligible school or once reserved seats are open, otherwise the unreserved ones left."""
    free = seats - held
    if not (school_eligible or reserved_open):
        free = min(free, seats - reserved - held_by_ineligible)
    return max(free, 0)


def may_hold(
    *,
    seats: int,
    reserved: int,
    held: int,
    held_by_ineligible: int,
    school_eligible: bool,
    reserved_open: bool,
) -> bool:
    """Whether one more seat of the week may be held for this school (rules 3 and 4)."""
    return (
        free_seats(
            seats=seats,
            reserved=reserved,
            held=held,
            held_by_ineligible=held_by_ineligible,
            school_eligible=school_eligible,
            reserved_open=reserved_open,
        )
        > 0
    )


# --- offers -------------------------------------------------------------------------------------


class OfferStatus(StrEnum):
    PUBLISHED = "published"
    UNPUBLISHED = "unpublished"
    WITHDRAWN = "withdrawn"
    CLOSED = "closed"


OFFER_TRANSITIONS: dict[tuple[OfferStatus, str], OfferStatus] = {
    (OfferStatus.PUBLISHED, "update"): OfferStatus.PUBLISHED,
    (OfferStatus.UNPUBLISHED, "update"): OfferStatus.UNPUBLISHED,
    (OfferStatus.PUBLISHED, "unpublish"): OfferStatus.UNPUBLISHED,
    (OfferStatus.UNPUBLISHED, "publish"): OfferStatus.PUBLISHED,
    (OfferStatus.PUBLISHED, "withdraw"): OfferStatus.WITHDRAWN,
    (OfferStatus.UNPUBLISHED, "withdraw"): OfferStatus.WITHDRAWN,
    (OfferStatus.PUBLISHED, "close"): OfferStatus.CLOSED,
    (OfferStatus.UNPUBLISHED, "close"): OfferStatus.CLOSED,
}


def offer_after(status: OfferStatus | str, action: str) -> OfferStatus:
    """The offer's status after ``action``; NotAllowed when the table has no such move."""
    try:
        return OFFER_TRANSITIONS[(OfferStatus(status), action)]
    except KeyError:
        raise NotAllowed(str(status), action) from None


# --- applications -------------------------------------------------------------------------------


class ApplicationStatus(StrEnum):
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    CONFIRMED = "confirmed"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


LIVE = frozenset(
    {ApplicationStatus.SUBMITTED, ApplicationStatus.ACCEPTED, ApplicationStatus.CONFIRMED}
)
"""At most one live application per pupil, offer and week (a partial unique index)."""
HOLDING = frozenset({ApplicationStatus.ACCEPTED, ApplicationStatus.CONFIRMED})
"""The statuses that hold a seat of the week."""

TRANSITIONS: dict[tuple[ApplicationStatus, str], ApplicationStatus] = {
    (ApplicationStatus.SUBMITTED, "accept"): ApplicationStatus.ACCEPTED,
    (ApplicationStatus.SUBMITTED, "decline"): ApplicationStatus.DECLINED,
    (ApplicationStatus.ACCEPTED, "confirm"): ApplicationStatus.CONFIRMED,
    (ApplicationStatus.SUBMITTED, "withdraw"): ApplicationStatus.WITHDRAWN,
    (ApplicationStatus.ACCEPTED, "withdraw"): ApplicationStatus.WITHDRAWN,
    (ApplicationStatus.CONFIRMED, "withdraw"): ApplicationStatus.WITHDRAWN,
    (ApplicationStatus.ACCEPTED, "cancel"): ApplicationStatus.CANCELLED,
    (ApplicationStatus.CONFIRMED, "cancel"): ApplicationStatus.CANCELLED,
    (ApplicationStatus.SUBMITTED, "expire"): ApplicationStatus.EXPIRED,
    (ApplicationStatus.ACCEPTED, "expire"): ApplicationStatus.EXPIRED,
}


def after(status: ApplicationStatus | str, action: str) -> ApplicationStatus:
    """The application's status after ``action``; NotAllowed when the table has no such move."""
    try:
        return TRANSITIONS[(ApplicationStatus(status), action)]
    except KeyError:
        raise NotAllowed(str(status), action) from None


def expires_at(status: ApplicationStatus | str, since: datetime) -> datetime | None:
    """When an application in ``status`` since ``since`` expires: 15 days without the host's
    answer, 7 days without the school's confirmation; never in any other status."""
    if status == ApplicationStatus.SUBMITTED:
        return since + timedelta(days=ANSWER_DAYS)
    if status == ApplicationStatus.ACCEPTED:
        return since + timedelta(days=CONFIRM_DAYS)
    return None


def withdrawable(week: IsoWeek, today: date) -> bool:
    """A school withdraws an application any time before the week's Monday."""
    return today < week.monday


def erasure_due(start_year: int, month: int = 7, day: int = 31) -> date:
    """The day pupils' references of the school year ``start_year`` are erased: 31 July after
    its end by default (the national platform's year-end anonymisation)."""
    return date(start_year + 1, month, day)
