"""Pure rules of programme 147 funding: no I/O, no framework. Amounts are integer cents.

Rules, and where they come from (``../shared/brief/funding.md``):

1. **Separated duties** (décret 2012-1246 "GBCP", art. 9: ordonnateur and comptable are different
   people). Each action needs one staff role (:data:`ACTION_ROLES`): the ``officer`` (service
   instructeur) records, instructs and proposes; the ``ordonnateur`` (the préfet's delegate)
   programmes, signs, approves; the ``comptable`` records payments. On one convention or one
   tranche, the person who instructed never approves, signs or pays, and the approver never pays
   (:func:`check_separation`, :data:`NEVER_THE_SAME`), whatever roles their account holds.
2. **The legal act** (loi 2000-321 art. 10, décret 2001-495): a grant above 23,000 EUR a year for
   one beneficiary needs a convention; at or below, an arrêté attributif (:func:`legal_act`).
3. **The plan de financement** balances: the State's share (programme 147, the yearly amounts)
   plus every co-financer's amount equals the budget (:func:`plan_difference`).
4. **Tranches** (:func:`schedule`): for each year, an advance of ``advance_percent`` of the year's
   amount (default 50 %, the usual rule of multi-year conventions; at most 50 %), due at
   signature; the balance once the year's compte-rendu financier is accepted. A convention never
   pays more than its amount.
5. **States** of conventions and tranches are the tables :data:`CONVENTION_TRANSITIONS` and
   :data:`TRANCHE_TRANSITIONS`; :func:`convention_after` and :func:`tranche_after` raise
   :class:`NotAllowed` for anything else.
6. **Conflicts of interest** (the Val-de-Marne case of 2022): an approval carries the approver's
   declaration of no interest in the beneficiary, and an approver declared linked to it is
   refused (:func:`conflict_of_interest`).
7. **Compte-rendu financier** (CERFA 15059): the State's part of what was spent is the spending
   times the State's share of the budget; what was paid beyond it is due back
   (:func:`unspent_due_back`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

CONVENTION_THRESHOLD_CENTS = 2_300_000
"""23,000 EUR a year: strictly above, a convention is required (loi 2000-321, art. 10)."""
MAX_YEARS = 4
"""Multi-year conventions (CPO) run up to 4 years."""
DEFAULT_ADVANCE_PERCENT = 50
MAX_ADVANCE_PERCENT = 50
"""The advance of a year is at most 50 % of its amount (the usual rule of CPOs)."""
MAX_AMOUNT_CENTS = 10**13
"""100 billion euros: far above any envelope, and within PostgreSQL's bigint and JSON numbers."""


class Role(StrEnum):
    """Staff roles of funding (the registry issues them; decision 45)."""

    OFFICER = "officer"
    ORDONNATEUR = "ordonnateur"
    COMPTABLE = "comptable"
    OPERATOR = "operator"
    ADMIN = "admin"


FUNDING_STAFF = frozenset({Role.OFFICER, Role.ORDONNATEUR, Role.COMPTABLE})
PLATFORM_STAFF = frozenset({Role.OPERATOR, Role.ADMIN})
STAFF_ROLES = frozenset(FUNDING_STAFF | PLATFORM_STAFF)


class ConventionStatus(StrEnum):
    DRAFT = "draft"
    INSTRUCTING = "instructing"
    PROGRAMMED = "programmed"
    SIGNED = "signed"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class TrancheStatus(StrEnum):
    PLANNED = "planned"
    REQUESTED = "requested"
    INSTRUCTED = "instructed"
    APPROVED = "approved"
    PAID = "paid"
    REJECTED = "rejected"


class LegalAct(StrEnum):
    CONVENTION = "convention"
    ARRETE_ATTRIBUTIF = "arrete_attributif"


# --- 1. separated duties -------------------------------------------------------------------------

# Who may take each action. The beneficiary ("partner") only requests and reports.
ACTION_ROLES: Mapping[str, Role | None] = {
    "open_envelope": Role.ORDONNATEUR,  # the credits delegated to a département for a year
    "record": Role.OFFICER,  # a convention, as a draft
    "instruct": Role.OFFICER,  # a convention, or a requested tranche
    "programme": Role.ORDONNATEUR,  # the comité de pilotage's decision
    "sign": Role.ORDONNATEUR,  # engages: AE consumed, EJ recorded
    "cancel": Role.ORDONNATEUR,
    "close": Role.ORDONNATEUR,
    "approve": Role.ORDONNATEUR,  # a tranche
    "reject": Role.ORDONNATEUR,  # a tranche (the officer rejects by not instructing)
    "pay": Role.COMPTABLE,
    "receive_reversement": Role.COMPTABLE,  # the amount due back came in (titre de recette)
    "accept_report": Role.OFFICER,
    "return_report": Role.OFFICER,
    "request": None,  # the beneficiary, not staff
    "file_report": None,
}

# On one convention, or one tranche: the actor of the left action never takes the right one.
NEVER_THE_SAME: tuple[tuple[str, str], ...] = (
    ("instruct", "programme"),
    ("instruct", "sign"),
    ("instruct", "approve"),
    ("instruct", "pay"),
    ("approve", "pay"),
    ("sign", "pay"),
)


class SeparationOfDuties(Exception):
    """The actor already took an action on this object that excludes this one."""

    def __init__(self, action: str, earlier: str) -> None:
        super().__init__(f"{action} by the one who did {earlier}")
        self.action = action
        self.earlier = earlier


class WrongRole(Exception):
    """The caller's roles do not include the one the action needs."""

    def __init__(self, action: str, role: Role) -> None:
        super().__init__(f"{action} needs {role}")
        self.action = action
        self.role = role


def required_role(action: str) -> Role | None:
    """The staff role ``action`` needs (None: the beneficiary's own action)."""
    return ACTION_ROLES[action]


def check_role(action: str, roles: Iterable[str]) -> None:
    """Raises :class:`WrongRole` unless ``roles`` hold the role ``action`` needs."""
    role = ACTION_ROLES[action]
    if role is not None and role not in set(roles):
        raise WrongRole(action, role)


def check_separation(action: str, actor: str, done_by: Mapping[str, str | None]) -> None:
    """Raises :class:`SeparationOfDuties` when ``actor`` took an earlier action (``done_by``:
    action → who took it, on the same convention or tranche) that rule 1 keeps apart from
    ``action``."""
    for earlier, later in NEVER_THE_SAME:
        if later == action and done_by.get(earlier) == actor:
            raise SeparationOfDuties(action, earlier)


# --- 2. the legal act ----------------------------------------------------------------------------


def legal_act(yearly_amounts_cents: Sequence[int]) -> LegalAct:
    """A convention when some year's grant exceeds 23,000 EUR, an arrêté attributif otherwise."""
    if max(yearly_amounts_cents, default=0) > CONVENTION_THRESHOLD_CENTS:
        return LegalAct.CONVENTION
    return LegalAct.ARRETE_ATTRIBUTIF


def requires_convention(amount_cents: int) -> bool:
    """A yearly grant strictly above the threshold requires a convention."""
    return amount_cents > CONVENTION_THRESHOLD_CENTS


# --- 3. the plan de financement ------------------------------------------------------------------


def plan_difference(
    budget_cents: int, yearly_amounts_cents: Sequence[int], cofinancing_cents: Iterable[int]
) -> int:
    """Budget minus (the State's share + the co-financers'): 0 when the plan balances; positive
    when money is missing, negative when the plan finances more than the budget."""
    return budget_cents - sum(yearly_amounts_cents) - sum(cofinancing_cents)


# --- 4. tranches ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedTranche:
    number: int  # 1, 2, … over the whole convention
    year: int
    kind: str  # "advance" (at signature) or "balance" (after the year's compte-rendu)
    amount_cents: int


def schedule(
    first_year: int, yearly_amounts_cents: Sequence[int], advance_percent: int
) -> list[PlannedTranche]:
    """The tranches of a convention (rule 4). The advance is rounded down to the cent; a year's
    tranches add up to its amount exactly, and an empty tranche is left out."""
    if not 0 <= advance_percent <= MAX_ADVANCE_PERCENT:
        raise ValueError(f"advance_percent is between 0 and {MAX_ADVANCE_PERCENT}")
    tranches: list[PlannedTranche] = []
    for offset, amount in enumerate(yearly_amounts_cents):
        advance = amount * advance_percent // 100
        for kind, part in (("advance", advance), ("balance", amount - advance)):
            if part > 0:
                tranches.append(PlannedTranche(len(tranches) + 1, first_year + offset, kind, part))
    return tranches


def can_pay(convention_amount_cents: int, paid_cents: int, amount_cents: int) -> bool:
    """A payment never takes what the convention paid beyond its amount."""
    return amount_cents > 0 and paid_cents + amount_cents <= convention_amount_cents


# --- 5. states -----------------------------------------------------------------------------------


class NotAllowed(Exception):
    """This action is not possible from this status."""

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"{action} from {status}")
        self.status = status
        self.action = action


CONVENTION_TRANSITIONS: Mapping[tuple[ConventionStatus, str], ConventionStatus] = {
    (ConventionStatus.DRAFT, "instruct"): ConventionStatus.INSTRUCTING,
    (ConventionStatus.INSTRUCTING, "programme"): ConventionStatus.PROGRAMMED,
    (ConventionStatus.PROGRAMMED, "sign"): ConventionStatus.SIGNED,
    (ConventionStatus.SIGNED, "close"): ConventionStatus.CLOSED,
    (ConventionStatus.DRAFT, "cancel"): ConventionStatus.CANCELLED,
    (ConventionStatus.INSTRUCTING, "cancel"): ConventionStatus.CANCELLED,
    (ConventionStatus.PROGRAMMED, "cancel"): ConventionStatus.CANCELLED,
}

TRANCHE_TRANSITIONS: Mapping[tuple[TrancheStatus, str], TrancheStatus] = {
    (TrancheStatus.PLANNED, "request"): TrancheStatus.REQUESTED,
    (TrancheStatus.REJECTED, "request"): TrancheStatus.REQUESTED,
    (TrancheStatus.REQUESTED, "instruct"): TrancheStatus.INSTRUCTED,
    (TrancheStatus.INSTRUCTED, "approve"): TrancheStatus.APPROVED,
    (TrancheStatus.APPROVED, "pay"): TrancheStatus.PAID,
    (TrancheStatus.REQUESTED, "reject"): TrancheStatus.REJECTED,
    (TrancheStatus.INSTRUCTED, "reject"): TrancheStatus.REJECTED,
}


def convention_after(status: str, action: str) -> ConventionStatus:
    """The convention's status after ``action``; :class:`NotAllowed` when not possible."""
    try:
        return CONVENTION_TRANSITIONS[(ConventionStatus(status), action)]
    except (KeyError, ValueError):
        raise NotAllowed(status, action) from None


def tranche_after(status: str, action: str) -> TrancheStatus:
    """The tranche's status after ``action``; :class:`NotAllowed` when not possible."""
    try:
        return TRANCHE_TRANSITIONS[(TrancheStatus(status), action)]
    except (KeyError, ValueError):
        raise NotAllowed(status, action) from None


def balance_requestable(kind: str, report_status: str | None) -> bool:
    """An advance may be requested once signed; a balance once its year's compte-rendu is
    accepted (rule 4)."""
    return kind == "advance" or report_status == "accepted"


# --- 6. conflicts of interest --------------------------------------------------------------------


def conflict_of_interest(
    declared_no_interest: bool, beneficiary_partner_id: str, linked_partner_ids: Iterable[str]
) -> str | None:
    """Why an approval is refused (``"no_declaration"`` or ``"declared_interest"``), or None."""
    if not declared_no_interest:
        return "no_declaration"
    if beneficiary_partner_id in set(linked_partner_ids):
        return "declared_interest"
    return None


# --- 7. compte-rendu financier -------------------------------------------------------------------


def unspent_due_back(
    paid_in_year_cents: int, spent_cents: int, state_share_cents: int, budget_cents: int
) -> int:
    """What the beneficiary owes back for a year: paid minus the State's part of the spending
    (spending × State share / budget, rounded up in the beneficiary's favour); never negative."""
    if budget_cents <= 0:
        return paid_in_year_cents
    state_part = -(-spent_cents * state_share_cents // budget_cents)  # ceiling division
    return max(0, paid_in_year_cents - state_part)
