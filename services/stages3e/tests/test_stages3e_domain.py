"""The pure rules of the stages de 3e: ISO weeks and the school year's window, seats and reserved
seats, the status tables (hypothesis properties, bounded)."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maillage.stages3e import domain
from maillage.stages3e.domain import ApplicationStatus, IsoWeek, NotAllowed, OfferStatus

FAST = settings(max_examples=200, deadline=None)
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
start_years = st.integers(min_value=2000, max_value=2098)


def test_a_stage_de_3e_lasts_one_school_week() -> None:
    assert domain.STAGE_LENGTH_DAYS == 5
    assert len(domain.SECTORS) == 20


# --- ISO weeks, at their edges ------------------------------------------------------------------


def test_december_days_can_belong_to_the_next_iso_year() -> None:
    assert IsoWeek.of(date(2025, 12, 29)) == IsoWeek(2026, 1)
    assert IsoWeek.of(date(2026, 12, 31)) == IsoWeek(2026, 53)
    assert IsoWeek.of(date(2027, 1, 1)) == IsoWeek(2026, 53)
    assert IsoWeek.of(date(2027, 1, 4)) == IsoWeek(2027, 1)


def test_week_53_exists_only_in_long_iso_years() -> None:
    assert IsoWeek.parse("2026-W53").monday == date(2026, 12, 28)
    for text in ("2027-W53", "2026-W00", "2026-W54", "2026-W5", "26-W05", "2026W05"):
        with pytest.raises(ValueError, match="week"):
            IsoWeek.parse(text)


def test_the_2026_2027_window() -> None:
    first, last = domain.window(2026)
    assert first == date(2026, 9, 7)  # 1 September 2026 is a Tuesday
    assert last == date(2027, 5, 28)  # 31 May 2027 is a Monday
    weeks = domain.weeks_of_school_year(2026)
    assert weeks[0] == IsoWeek(2026, 37)
    assert IsoWeek(2026, 53) in weeks  # the week of 28 December 2026
    assert weeks[-1] == IsoWeek(2027, 21)
    assert domain.school_year_of_week(IsoWeek(2026, 53)) == 2026
    assert domain.school_year_of_week(IsoWeek(2027, 22)) is None  # 31 May to 4 June: out
    assert domain.school_year_of_week(IsoWeek(2026, 36)) is None  # 31 August: before


def test_weeks_at_the_ends_of_the_calendar_belong_to_no_school_year() -> None:
    for text in ("9999-W52", "0001-W01"):
        assert domain.school_year_of_week(IsoWeek.parse(text)) is None


def test_the_window_ends_on_31_may_when_it_is_a_friday() -> None:
    # 31 May 2024 was a Friday: the window 2023-2024 ends that day.
    assert domain.last_friday(2023) == date(2024, 5, 31)
    assert domain.school_year_of_week(IsoWeek.of(date(2024, 5, 27))) == 2023
    # 1 September 2025 was a Monday: the window starts that day.
    assert domain.first_monday(2025) == date(2025, 9, 1)


@FAST
@given(days)
def test_a_day_is_in_its_iso_week(day: date) -> None:
    week = IsoWeek.of(day)
    assert week.monday <= day < week.monday + timedelta(days=7)
    assert IsoWeek.parse(str(week)) == week
    assert week.friday == week.monday + timedelta(days=4)


@FAST
@given(start_years)
def test_the_weeks_of_a_school_year_are_consecutive_and_inside_its_window(year: int) -> None:
    first, last = domain.window(year)
    weeks = domain.weeks_of_school_year(year)
    assert first.weekday() == 0
    assert date(year, 9, 1) <= first < date(year, 9, 8)
    assert last.weekday() == 4
    assert date(year + 1, 5, 25) <= last <= date(year + 1, 5, 31)
    assert weeks[0].monday == first
    assert weeks[-1].friday == last
    assert 37 <= len(weeks) <= 40
    for before, following in itertools.pairwise(weeks):
        assert following.monday - before.monday == timedelta(days=7)
    assert all(domain.school_year_of_week(week) == year for week in weeks)


@FAST
@given(days)
def test_a_week_outside_every_window_is_in_summer_or_late_may(day: date) -> None:
    week = IsoWeek.of(day)
    year = domain.school_year_of_week(week)
    if year is None:
        assert week.monday.month in (5, 6, 7, 8, 9)
        assert all(week not in domain.weeks_of_school_year(y) for y in (day.year - 1, day.year))
    else:
        assert week in domain.weeks_of_school_year(year)


# --- seats and reserved seats -------------------------------------------------------------------


@FAST
@given(
    seats=st.integers(1, 12),
    reserved_share=st.integers(0, 12),
    schools=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=40),
)
def test_held_seats_never_exceed_seats_and_reserved_seats_stay_for_eligible_schools(
    seats: int, reserved_share: int, schools: list[tuple[bool, bool]]
) -> None:
    """Any sequence of acceptances (school eligible?, reserved seats open yet?): what may_hold
    lets through never holds more than the seats, and before opening never more than
    seats - reserved for ineligible schools."""
    reserved = min(reserved_share, seats)
    held = held_by_ineligible = 0
    opened = False
    for school_eligible, opens_now in schools:
        opened = opened or opens_now
        if domain.may_hold(
            seats=seats,
            reserved=reserved,
            held=held,
            held_by_ineligible=held_by_ineligible,
            school_eligible=school_eligible,
            reserved_open=opened,
        ):
            held += 1
            held_by_ineligible += 0 if school_eligible else 1
        assert held <= seats
        if not opened:
            assert held_by_ineligible <= seats - reserved
    # Eligible schools alone always fill every seat.
    if all(eligible for eligible, _ in schools) and len(schools) >= seats:
        assert held == seats


def test_reserved_seats_open_14_days_before_the_week() -> None:
    week = IsoWeek(2027, 5)
    assert domain.reserved_open_on(week) == date(2027, 1, 18)
    assert domain.reserved_open_on(week, 3) == date(2027, 1, 29)
    closed = {"seats": 3, "reserved": 2, "held": 1, "held_by_ineligible": 1}
    assert domain.free_seats(**closed, school_eligible=False, reserved_open=False) == 0
    assert domain.free_seats(**closed, school_eligible=True, reserved_open=False) == 2
    assert domain.free_seats(**closed, school_eligible=False, reserved_open=True) == 2


def test_eligibility_comes_from_the_reference_status() -> None:
    assert domain.eligible("REP+", None)
    assert domain.eligible("rep", False)
    assert domain.eligible(None, True)
    assert not domain.eligible(None, None)
    assert not domain.eligible("", False)


# --- status tables ------------------------------------------------------------------------------


def test_the_application_flow() -> None:
    status = domain.after(ApplicationStatus.SUBMITTED, "accept")
    assert status is ApplicationStatus.ACCEPTED
    assert domain.after(status, "confirm") is ApplicationStatus.CONFIRMED
    assert domain.after(ApplicationStatus.CONFIRMED, "cancel") is ApplicationStatus.CANCELLED
    with pytest.raises(NotAllowed) as refused:
        domain.after(ApplicationStatus.CONFIRMED, "confirm")
    assert refused.value.status == "confirmed"


@FAST
@given(
    st.sampled_from(list(ApplicationStatus)),
    st.sampled_from(["accept", "decline", "confirm", "withdraw", "cancel", "expire"]),
)
def test_final_statuses_never_move_and_live_ones_are_the_first_three(
    status: ApplicationStatus, action: str
) -> None:
    final = status not in domain.LIVE
    if final:
        with pytest.raises(NotAllowed):
            domain.after(status, action)
    else:
        try:
            moved = domain.after(status, action)
        except NotAllowed:
            return
        assert (moved in domain.HOLDING) <= (action in ("accept", "confirm"))


def test_expiry_timers() -> None:
    since = datetime(2027, 1, 4, 9, 0)
    assert domain.expires_at("submitted", since) == since + timedelta(days=15)
    assert domain.expires_at("accepted", since) == since + timedelta(days=7)
    assert domain.expires_at("confirmed", since) is None


def test_the_offer_flow() -> None:
    assert domain.offer_after("published", "unpublish") is OfferStatus.UNPUBLISHED
    assert domain.offer_after("unpublished", "publish") is OfferStatus.PUBLISHED
    assert domain.offer_after("published", "close") is OfferStatus.CLOSED
    for final in (OfferStatus.WITHDRAWN, OfferStatus.CLOSED):
        with pytest.raises(NotAllowed):
            domain.offer_after(final, "update")


def test_erasure_defaults_to_31_july_after_the_school_year() -> None:
    assert domain.erasure_due(2026) == date(2027, 7, 31)
    assert domain.erasure_due(2026, 8, 15) == date(2027, 8, 15)


@given(st.from_regex(domain.PUPIL_REFERENCE, fullmatch=True))
@settings(max_examples=50, deadline=None)
def test_pupil_references_are_short(reference: str) -> None:
    assert 1 <= len(reference) <= domain.PUPIL_REFERENCE_MAX
