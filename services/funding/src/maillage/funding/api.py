"""HTTP routes of the funding service: envelopes, conventions, tranches, comptes-rendus, the audit
log and the exports. Amounts are integer cents (`*_cents`), never floats.

Who may do what (static roles at the route, ownership in the query, duties in `usecases`):

- the `officer` records and instructs conventions, instructs tranches, decides on
  comptes-rendus; the `ordonnateur` opens envelopes, programmes, signs, cancels and closes
  conventions, approves and rejects tranches; the `comptable` records payments; the same
  person never takes two separated decisions on one object (403 `separation_of_duties`);
- every staff role (and operators, admins) reads envelopes, conventions and tranches; the audit
  log is for ordonnateurs, operators and admins;
- a staff member acts in the départements of their token, or everywhere with a national account
  (decision 64): lists and exports hold only those départements, another département's envelope,
  convention, tranche or reversement answers 404 as a missing one, and creating an envelope or a
  convention in another département 403 ``departement_not_in_scope``;
- a partner reads the conventions where it is the beneficiary or a co-financer (another
  partner's answer 404); only the beneficiary requests its tranches and files its comptes-rendus;
- the SCDL export is open data: any authenticated caller.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from maillage.common import idempotency, pagination
from maillage.common.auth import Caller, require_role
from maillage.common.db import transaction
from maillage.common.geography import DEPARTEMENT_PATTERN
from maillage.common.http import Pool
from maillage.common.kinds import Bool, Int, Line, LineOrNone, Prose, ProseOrNone
from maillage.funding import domain, exports, store, usecases
from maillage.funding.domain import MAX_AMOUNT_CENTS, Role

# Every route checks a role: 403 is always possible. The others are declared route by route.
router = APIRouter(responses={403: {"description": "Not this caller's role, duty or département"}})
_NOT_FOUND = {404: {"description": "No such object, or not visible to the caller"}}
_CONFLICT = {409: {"description": "Not possible in the object's current state"}}
_BAD_CURSOR = {400: {"description": "A cursor that is not a next_cursor"}}
_REFUSED = {422: {"description": "A rule refuses the request (problem code says which)"}}

Staff = Annotated[Caller, require_role(*domain.STAFF_ROLES)]
Officer = Annotated[Caller, require_role(Role.OFFICER)]
Ordonnateur = Annotated[Caller, require_role(Role.ORDONNATEUR)]
Comptable = Annotated[Caller, require_role(Role.COMPTABLE)]
AuditReader = Annotated[Caller, require_role(Role.ORDONNATEUR, Role.OPERATOR, Role.ADMIN)]
Anyone = Annotated[Caller, require_role("partner", "school", *domain.STAFF_ROLES)]

_DEPARTEMENT = DEPARTEMENT_PATTERN
Cents = Annotated[Int, Field(ge=0, le=MAX_AMOUNT_CENTS, description="Euro cents")]
PositiveCents = Annotated[Int, Field(ge=1, le=MAX_AMOUNT_CENTS, description="Euro cents")]
Year = Annotated[Int, Field(ge=2000, le=2100)]
_IDEMPOTENT = {"parameters": [idempotency.OPENAPI_PARAMETER]}


# --- models --------------------------------------------------------------------------------------


class NewEnvelope(BaseModel):
    """Programme 147 credits delegated to a département for a year."""

    model_config = ConfigDict(extra="forbid")
    departement: str = Field(max_length=3, pattern=_DEPARTEMENT, examples=["94"])
    year: Year
    ae_cents: Cents = Field(description="Autorisations d'engagement, euro cents")
    cp_cents: Cents = Field(description="Crédits de paiement, euro cents")


class Envelope(BaseModel):
    id: uuid.UUID
    departement: str
    year: int
    ae_cents: int
    cp_cents: int
    ae_engaged_cents: int = Field(description="AE consumed by signed conventions")
    cp_paid_cents: int = Field(description="CP consumed by paid tranches")
    ae_available_cents: int
    cp_available_cents: int
    created_at: datetime
    updated_at: datetime


class EnvelopePage(BaseModel):
    items: list[Envelope]
    next_cursor: str | None


class Cofinancement(BaseModel):
    """A co-financer of the plan de financement: a registry partner (`partner_id`, told of
    the convention's events) or another financer named only."""

    model_config = ConfigDict(extra="forbid")
    name: Line = Field(min_length=1, max_length=200, examples=["Ville d'Orly"])
    partner_id: uuid.UUID | None = None
    amount_cents: PositiveCents


class NewConvention(BaseModel):
    """A convention as the officer records it (a draft). `yearly_amounts_cents` is the
    State's share (programme 147) for each year from `first_year`; the plan de financement
    balances: State share + co-financers = `budget_cents`."""

    model_config = ConfigDict(extra="forbid")
    beneficiary_partner_id: uuid.UUID
    departement: str = Field(max_length=3, pattern=_DEPARTEMENT, examples=["94"])
    object: Prose = Field(
        min_length=1, max_length=256, description="Objet (at most 256 characters, as SCDL)"
    )
    cite_educative: LineOrNone = Field(default=None, min_length=1, max_length=200)
    first_year: Year
    yearly_amounts_cents: list[PositiveCents] = Field(min_length=1, max_length=domain.MAX_YEARS)
    budget_cents: PositiveCents = Field(description="The action's whole budget, euro cents")
    cofinancements: list[Cofinancement] = Field(default_factory=list, max_length=50)
    advance_percent: Int = Field(
        default=domain.DEFAULT_ADVANCE_PERCENT, ge=0, le=domain.MAX_ADVANCE_PERCENT
    )

    @model_validator(mode="after")
    def _years_fit(self) -> NewConvention:
        if self.first_year + len(self.yearly_amounts_cents) - 1 > 2100:
            raise ValueError("La convention se termine au plus tard en 2100.")
        return self


class Tranche(BaseModel):
    id: uuid.UUID
    convention_id: uuid.UUID
    number: int
    year: int
    kind: str = Field(description="advance or balance")
    amount_cents: int
    status: str = Field(description="planned, requested, instructed, approved, paid, rejected")
    reason: str | None
    paid_amount_cents: int | None
    paid_on: date | None
    payment_reference: str | None
    requested_at: datetime | None
    updated_at: datetime


class Report(BaseModel):
    id: uuid.UUID
    year: int
    status: str = Field(description="filed, accepted, changes_requested")
    lines: list[dict[str, Any]]
    spent_cents: int
    achievements: str
    filed_at: datetime
    remarks: str | None
    due_back_cents: int | None


class Reversement(BaseModel):
    id: uuid.UUID
    year: int
    amount_cents: int
    status: str = Field(description="ordered, then received")
    ordered_at: datetime
    received_at: datetime | None = None


class Convention(BaseModel):
    id: uuid.UUID
    beneficiary_partner_id: uuid.UUID
    departement: str
    object: str
    cite_educative: str | None
    first_year: int
    yearly_amounts_cents: list[int]
    amount_cents: int = Field(description="The State's share over all years")
    budget_cents: int
    cofinancements: list[dict[str, Any]]
    legal_act: str = Field(description="convention (above 23,000 EUR a year) or arrete_attributif")
    advance_percent: int
    status: str
    committee_date: date | None
    ej_number: str | None
    signed_on: date | None
    paid_cents: int
    version: int
    created_at: datetime
    updated_at: datetime
    tranches: list[Tranche] = Field(default_factory=list)
    reports: list[Report] = Field(default_factory=list)
    reversements: list[Reversement] = Field(default_factory=list)


class ConventionPage(BaseModel):
    items: list[Convention]
    next_cursor: str | None


class Programming(BaseModel):
    model_config = ConfigDict(extra="forbid")
    committee_date: date = Field(description="The comité de pilotage's decision")


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ej_number: str = Field(
        max_length=10, pattern=r"^[0-9]{10}$", description="Chorus engagement juridique"
    )
    signed_on: date
    declares_no_interest: Bool = Field(
        description="The signer declares no interest in the beneficiary (must be true)"
    )


class Ending(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Prose = Field(min_length=1, max_length=2000)


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    declares_no_interest: Bool = Field(
        description="The approver declares no interest in the beneficiary (must be true)"
    )


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Prose = Field(min_length=1, max_length=2000)


class Payment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paid_on: date
    amount_cents: PositiveCents
    payment_reference: Line = Field(min_length=1, max_length=100)


class ReportLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budget_line: Line = Field(min_length=1, max_length=200, examples=["Frais de personnel"])
    spent_cents: Cents


class NewReport(BaseModel):
    """A compte-rendu financier (CERFA 15059 data): spending per budget line, achievements."""

    model_config = ConfigDict(extra="forbid")
    year: Year
    lines: list[ReportLine] = Field(min_length=1, max_length=100)
    achievements: Prose = Field(min_length=1, max_length=10_000)


class ReportDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accept: Bool
    remarks: ProseOrNone = Field(default=None, max_length=2000)


class Interest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partner_id: uuid.UUID
    staff_subject: LineOrNone = Field(
        default=None, min_length=1, max_length=200, description="Operators: another staff member"
    )


class AuditEntry(BaseModel):
    seq: int
    at: datetime
    actor: str
    role: str
    action: str
    object_type: str
    object_id: uuid.UUID
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    trace_id: str | None
    previous_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = Field(description="The last seq read: pass it as `after`")


# --- shapes --------------------------------------------------------------------------------------


def _envelope_out(envelope: dict[str, Any]) -> dict[str, Any]:
    return {
        **envelope,
        "ae_available_cents": envelope["ae_cents"] - envelope["ae_engaged_cents"],
        "cp_available_cents": envelope["cp_cents"] - envelope["cp_paid_cents"],
    }


async def _convention_out(connection: Any, convention: dict[str, Any]) -> dict[str, Any]:
    return {
        **convention,
        "tranches": await store.tranches_of(connection, convention["id"]),
        "reports": await store.reports_of(connection, convention["id"]),
        "reversements": await store.reversements_of(connection, convention["id"]),
    }


def _caller_scope(caller: Caller) -> str:
    return f"caller:{caller.subject}"


# --- envelopes -----------------------------------------------------------------------------------


@router.post(
    "/envelopes",
    status_code=201,
    response_model=Envelope,
    openapi_extra=_IDEMPOTENT,
    responses={409: {"description": "envelope_exists, or its Idempotency-Key in use"}},
)
async def open_envelope(
    body: NewEnvelope, request: Request, caller: Ordonnateur, pool: Pool
) -> Any:
    """The ordonnateur records the credits delegated to a département for a year."""

    async def run(connection: Any) -> tuple[Any, str]:
        envelope = await usecases.open_envelope(connection, caller, **body.model_dump())
        return _envelope_out(envelope), f"/envelopes/{envelope['id']}"

    return await idempotency.respond(
        request, pool, _caller_scope(caller), body.model_dump(mode="json"), 201, run
    )


@router.get("/envelopes", response_model=EnvelopePage, responses={**_BAD_CURSOR})
async def list_envelopes(
    caller: Staff,
    pool: Pool,
    year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
    departement: Annotated[str | None, Query(max_length=3, pattern=_DEPARTEMENT)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    """Envelopes with what is engaged and paid, and what is left, in the caller's départements."""
    async with pool.acquire() as connection:
        rows = await store.list_envelopes(
            connection,
            year=year,
            departement=departement,
            after=pagination.decode_cursor(cursor),
            limit=limit + 1,
            departements=usecases.visible_departements(caller),
        )
    found = pagination.page(rows, limit)
    return {**found, "items": [_envelope_out(row) for row in found["items"]]}


@router.get("/envelopes/{envelope_id}", response_model=Envelope, responses={**_NOT_FOUND})
async def get_envelope(envelope_id: uuid.UUID, caller: Staff, pool: Pool) -> Any:
    """The envelope; 404 for one of a département outside the caller's."""
    async with pool.acquire() as connection:
        envelope = await store.get_envelope(
            connection, envelope_id, departements=usecases.visible_departements(caller)
        )
    if envelope is None:
        raise usecases.envelope_not_found()
    return _envelope_out(envelope)


# --- conventions ---------------------------------------------------------------------------------


@router.post(
    "/conventions",
    status_code=201,
    response_model=Convention,
    openapi_extra=_IDEMPOTENT,
    responses={
        **_CONFLICT,
        422: {"description": "plan_unbalanced, beneficiary_not_verified, …"},
    },
)
async def record_convention(
    body: NewConvention, request: Request, caller: Officer, pool: Pool
) -> Any:
    """The officer records a draft convention; the legal act follows the 23,000 EUR rule."""

    async def run(connection: Any) -> tuple[Any, str]:
        values = body.model_dump()
        values["cofinancements"] = [
            {**c, "partner_id": c["partner_id"]} for c in values["cofinancements"]
        ]
        convention = await usecases.record_convention(connection, caller, **values)
        return await _convention_out(connection, convention), f"/conventions/{convention['id']}"

    return await idempotency.respond(
        request, pool, _caller_scope(caller), body.model_dump(mode="json"), 201, run
    )


@router.get("/conventions", response_model=ConventionPage, responses={**_BAD_CURSOR})
async def list_conventions(
    caller: Anyone,
    pool: Pool,
    status: Annotated[domain.ConventionStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    """Staff see the conventions of their départements (national staff: all); a partner those
    where it is beneficiary or co-financer."""
    scope = usecases.visible_partner(caller)
    async with pool.acquire() as connection:
        rows = await store.list_conventions(
            connection,
            partner_id=scope,
            status=status,
            after=pagination.decode_cursor(cursor),
            limit=limit + 1,
            departements=usecases.visible_departements(caller),
        )
        found = pagination.page(rows, limit)
        items = [await _convention_out(connection, row) for row in found["items"]]
    return {**found, "items": items}


@router.get("/conventions/{convention_id}", response_model=Convention, responses={**_NOT_FOUND})
async def get_convention(convention_id: uuid.UUID, caller: Anyone, pool: Pool) -> Any:
    """The convention with its tranches, comptes-rendus and reversements; 404 for a partner
    that is neither its beneficiary nor a co-financer, and for staff of another département."""
    async with pool.acquire() as connection:
        convention = await store.get_convention(
            connection,
            convention_id,
            partner_id=usecases.visible_partner(caller),
            departements=usecases.visible_departements(caller),
        )
        if convention is None:
            raise usecases.convention_not_found()
        return await _convention_out(connection, convention)


@router.post(
    "/conventions/{convention_id}/instruct",
    response_model=Convention,
    responses={**_NOT_FOUND, **_CONFLICT},
)
async def instruct_convention(convention_id: uuid.UUID, caller: Officer, pool: Pool) -> Any:
    """The officer puts a draft under instruction (and may then never programme or sign it)."""
    async with transaction(pool) as connection:
        convention = await usecases.instruct_convention(connection, caller, convention_id)
        return await _convention_out(connection, convention)


@router.post(
    "/conventions/{convention_id}/programme",
    response_model=Convention,
    responses={**_NOT_FOUND, **_CONFLICT},
)
async def programme_convention(
    convention_id: uuid.UUID, body: Programming, caller: Ordonnateur, pool: Pool
) -> Any:
    """The ordonnateur records the comité de pilotage's decision."""
    async with transaction(pool) as connection:
        convention = await usecases.programme_convention(
            connection, caller, convention_id, **body.model_dump()
        )
        return await _convention_out(connection, convention)


@router.post(
    "/conventions/{convention_id}/sign",
    response_model=Convention,
    responses={
        **_NOT_FOUND,
        422: {"description": "no_interest_declaration"},
        409: {"description": "envelope_exhausted, no_envelope, convention_status"},
    },
)
async def sign_convention(
    convention_id: uuid.UUID, body: Signature, caller: Ordonnateur, pool: Pool
) -> Any:
    """The ordonnateur signs: AE are engaged, tranches scheduled, the Chorus EJ kept."""
    async with transaction(pool) as connection:
        convention = await usecases.sign_convention(
            connection, caller, convention_id, **body.model_dump()
        )
        return await _convention_out(connection, convention)


@router.post(
    "/conventions/{convention_id}/cancel",
    response_model=Convention,
    responses={**_NOT_FOUND, **_CONFLICT},
)
async def cancel_convention(
    convention_id: uuid.UUID, body: Ending, caller: Ordonnateur, pool: Pool
) -> Any:
    """Before signature, with the reason kept."""
    async with transaction(pool) as connection:
        convention = await usecases.end_convention(
            connection, caller, convention_id, action="cancel", reason=body.reason
        )
        return await _convention_out(connection, convention)


@router.post(
    "/conventions/{convention_id}/close",
    response_model=Convention,
    responses={**_NOT_FOUND, **_CONFLICT},
)
async def close_convention(
    convention_id: uuid.UUID, body: Ending, caller: Ordonnateur, pool: Pool
) -> Any:
    """Once signed: nothing more is paid under it."""
    async with transaction(pool) as connection:
        convention = await usecases.end_convention(
            connection, caller, convention_id, action="close", reason=body.reason
        )
        return await _convention_out(connection, convention)


# --- tranches ------------------------------------------------------------------------------------


@router.post(
    "/tranches/{tranche_id}/request", response_model=Tranche, responses={**_NOT_FOUND, **_CONFLICT}
)
async def request_tranche(tranche_id: uuid.UUID, caller: Anyone, pool: Pool) -> Any:
    """The beneficiary asks for a tranche (a balance once the year's compte-rendu is accepted)."""
    async with transaction(pool) as connection:
        return await usecases.request_tranche(connection, caller, tranche_id)


@router.post(
    "/tranches/{tranche_id}/instruct", response_model=Tranche, responses={**_NOT_FOUND, **_CONFLICT}
)
async def instruct_tranche(tranche_id: uuid.UUID, caller: Officer, pool: Pool) -> Any:
    async with transaction(pool) as connection:
        return await usecases.instruct_tranche(connection, caller, tranche_id)


@router.post(
    "/tranches/{tranche_id}/approve",
    response_model=Tranche,
    responses={
        **_NOT_FOUND,
        **_CONFLICT,
        422: {"description": "no_interest_declaration"},
        403: {"description": "separation_of_duties, conflict_of_interest"},
    },
)
async def approve_tranche(
    tranche_id: uuid.UUID, body: Approval, caller: Ordonnateur, pool: Pool
) -> Any:
    """Never by its instructor, nor by someone linked to the beneficiary."""
    async with transaction(pool) as connection:
        return await usecases.approve_tranche(
            connection, caller, tranche_id, declares_no_interest=body.declares_no_interest
        )


@router.post(
    "/tranches/{tranche_id}/reject", response_model=Tranche, responses={**_NOT_FOUND, **_CONFLICT}
)
async def reject_tranche(
    tranche_id: uuid.UUID, body: Rejection, caller: Ordonnateur, pool: Pool
) -> Any:
    async with transaction(pool) as connection:
        return await usecases.reject_tranche(connection, caller, tranche_id, reason=body.reason)


@router.post(
    "/tranches/{tranche_id}/pay",
    response_model=Tranche,
    responses={
        **_NOT_FOUND,
        409: {"description": "overpayment, envelope_exhausted, no_envelope"},
    },
)
async def pay_tranche(tranche_id: uuid.UUID, body: Payment, caller: Comptable, pool: Pool) -> Any:
    """The comptable records the payment: CP of the payment year are consumed."""
    async with transaction(pool) as connection:
        return await usecases.pay_tranche(connection, caller, tranche_id, **body.model_dump())


# --- comptes-rendus financiers -------------------------------------------------------------------


@router.post(
    "/conventions/{convention_id}/reports",
    status_code=201,
    response_model=Report,
    responses={**_NOT_FOUND, **_CONFLICT, **_REFUSED},
)
async def file_report(convention_id: uuid.UUID, body: NewReport, caller: Anyone, pool: Pool) -> Any:
    """The beneficiary files the year's compte-rendu financier (again, after changes asked)."""
    async with transaction(pool) as connection:
        values = body.model_dump()
        return await usecases.file_report(connection, caller, convention_id, **values)


@router.post(
    "/conventions/{convention_id}/reports/{year}/decision",
    response_model=Report,
    responses={**_NOT_FOUND, **_CONFLICT},
)
async def decide_report(
    convention_id: uuid.UUID,
    year: Annotated[int, Path(ge=2000, le=2100)],
    body: ReportDecision,
    caller: Officer,
    pool: Pool,
) -> Any:
    """The officer accepts (an unspent amount becomes a reversement order) or asks changes."""
    async with transaction(pool) as connection:
        return await usecases.decide_report(
            connection, caller, convention_id, year, **body.model_dump()
        )


@router.post(
    "/reversements/{reversement_id}/receive",
    response_model=Reversement,
    responses={**_NOT_FOUND, **_CONFLICT},
)
async def receive_reversement(reversement_id: uuid.UUID, caller: Comptable, pool: Pool) -> Any:
    """The comptable records that the amount due back came in."""
    async with transaction(pool) as connection:
        return await usecases.receive_reversement(connection, caller, reversement_id)


# --- conflicts of interest -----------------------------------------------------------------------


@router.post("/interests", status_code=201)
async def declare_interest(body: Interest, caller: Staff, pool: Pool) -> dict[str, Any]:
    """A staff member declares a link with a partner: they will never approve its money."""
    async with transaction(pool) as connection:
        return await usecases.declare_interest(connection, caller, **body.model_dump())


@router.get("/interests")
async def list_interests(caller: Staff, pool: Pool) -> list[dict[str, Any]]:
    """The caller's own declared interests."""
    async with pool.acquire() as connection:
        return await store.interests_of(connection, caller.subject)


# --- audit ---------------------------------------------------------------------------------------


@router.get("/audit", response_model=AuditPage)
async def read_audit(
    caller: AuditReader,
    pool: Pool,
    object_id: uuid.UUID | None = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    """The audit log in chain order (each row's hash covers the previous one); a territorial
    reader sees the rows about the objects of their départements only."""
    async with pool.acquire() as connection:
        rows = await store.audit_page(
            connection,
            object_id=object_id,
            after_seq=after,
            limit=limit + 1,
            departements=usecases.visible_departements(caller),
        )
    items = rows[:limit]
    return {"items": items, "next_cursor": str(items[-1]["seq"]) if len(rows) > limit else None}


# --- exports -------------------------------------------------------------------------------------


@router.get(
    "/exports/scdl-subventions.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "SCDL subventions 2.1.1"}},
)
async def scdl_export(
    request: Request,
    caller: Anyone,
    pool: Pool,
    year: Annotated[int, Query(ge=2000, le=2100)],
) -> Response:
    """The données essentielles des conventions de subvention of `year` (décret 2017-779), in
    the SCDL subventions 2.1.1 format: conventions signed that year, amounts in euros."""
    settings = request.app.state.runtime.settings
    async with pool.acquire() as connection:
        rows = await store.conventions_signed_in(connection, year)
    text = exports.scdl_csv(
        rows,
        attribuant_name=settings.scdl_attribuant_name,
        attribuant_siret=settings.scdl_attribuant_siret,
    )
    return Response(text, media_type="text/csv; charset=utf-8")


@router.get(
    "/exports/tranches.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "Tranches and payments"}},
)
async def tranches_export(
    caller: Staff, pool: Pool, year: Annotated[int, Query(ge=2000, le=2100)]
) -> Response:
    """Every tranche of `year` in the caller's départements: its convention, EJ, amount, status
    and payment, for officers."""
    async with pool.acquire() as connection:
        rows = await store.tranches_of_year(
            connection, year, departements=usecases.visible_departements(caller)
        )
    return Response(exports.tranches_csv(rows), media_type="text/csv; charset=utf-8")
