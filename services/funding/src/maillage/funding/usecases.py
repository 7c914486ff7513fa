"""What happens when someone acts on programme 147 funding: checks, locks, writes, events.

Each use case runs inside its caller's transaction (a route, the demo, a test) and in this
order: who acts, take the locks (``store`` gives the order), check (``domain``), write, append
the decision to the audit log (``audit.record``), publish, return. Arguments are plain values.

Who acts: a staff member holding the role the action needs (``domain.ACTION_ROLES``), never the
one who took an excluded earlier action on the same object (``domain.NEVER_THE_SAME``: 403
``separation_of_duties``); or, for requests and comptes-rendus, the beneficiary itself, verified
in the read model of partners. Where they act (decision 64): a staff member acts for the
départements their token names, or everywhere with a national account; another département's
envelope, convention, tranche or reversement is not found (404, as a missing one: the caller
cannot see it), and creating one in a département outside the caller's scope is refused (403
``departement_not_in_scope``). Money never goes beyond an envelope or a convention: the rows are
locked and the database CHECKs hold even if a check here were wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from maillage.common.auth import Caller
from maillage.common.catalog import (
    ConventionCancelled,
    ConventionClosed,
    ConventionProgrammed,
    ConventionSigned,
    ReportAccepted,
    ReportFiled,
    ReversementOrdered,
    TrancheApproved,
    TranchePaid,
    TrancheRejected,
    TrancheRequested,
)
from maillage.common.messages import action_label, status_label
from maillage.common.outbox import publish
from maillage.common.problems import Problem
from maillage.funding import audit, domain, store
from maillage.funding.domain import Role

# --- problems, one per code ----------------------------------------------------------------------


def _not_found(code: str, what: str) -> Problem:
    return Problem(
        404, code, "Introuvable", detail=f"{what} n'existe pas ou ne vous est pas visible."
    )


def convention_not_found() -> Problem:
    return _not_found("convention_not_found", "Cette convention")


def tranche_not_found() -> Problem:
    return _not_found("tranche_not_found", "Cette tranche")


def envelope_not_found() -> Problem:
    return _not_found("envelope_not_found", "Cette enveloppe")


def report_not_found() -> Problem:
    return _not_found("report_not_found", "Ce compte-rendu financier")


def departement_not_in_scope(departement: str) -> Problem:
    return Problem(
        403,
        "departement_not_in_scope",
        "Département hors de votre périmètre",
        detail=f"Votre compte n'agit pas pour le département {departement} : un agent de ce "
        "département ou un compte national le peut.",
        departement=departement,
    )


def role_required(error: domain.WrongRole) -> Problem:
    return Problem(
        403,
        "role_required",
        "Rôle requis",
        detail=f"Cette décision ({error.action}) revient au rôle {error.role}.",
        required_role=str(error.role),
    )


def separation_of_duties(error: domain.SeparationOfDuties) -> Problem:
    return Problem(
        403,
        "separation_of_duties",
        "Séparation des fonctions",
        detail=f"Vous avez déjà pris la décision « {error.earlier} » sur cet objet : une autre "
        f"personne doit prendre la décision « {error.action} » (décret 2012-1246, art. 9).",
        earlier_action=error.earlier,
    )


def conflict_of_interest(reason: str) -> Problem:
    if reason == "no_declaration":
        return Problem(
            422,
            "no_interest_declaration",
            "Déclaration d'absence d'intérêt requise",
            detail="Une approbation porte votre déclaration de n'avoir aucun intérêt chez le "
            "bénéficiaire (declares_no_interest: true).",
        )
    return Problem(
        403,
        "conflict_of_interest",
        "Conflit d'intérêts",
        detail="Vous avez déclaré un lien avec ce bénéficiaire : une autre personne doit "
        "approuver.",
    )


def not_allowed(kind: str, error: domain.NotAllowed) -> Problem:
    what = "La convention" if kind == "convention" else "La tranche"
    return Problem(
        409,
        f"{kind}_status",
        "Action impossible dans cet état",
        detail=f"{what} est à l'état « {status_label(error.status)} » : "
        f"« {action_label(error.action)} » n'est pas possible.",
        status_now=error.status,
    )


def partner_not_verified() -> Problem:
    return Problem(
        422,
        "beneficiary_not_verified",
        "Bénéficiaire non vérifié",
        detail="Le bénéficiaire doit être un partenaire vérifié du registre.",
    )


def beneficiary_unidentified() -> Problem:
    return Problem(
        422,
        "beneficiary_unidentified",
        "Bénéficiaire sans SIRET ni RNA",
        detail="Une subvention publiée (données essentielles SCDL) nomme son bénéficiaire par "
        "son SIRET ou, pour une association, son RNA : complétez sa fiche dans le registre.",
    )


def cofinancer_not_found(partner_id: uuid.UUID) -> Problem:
    return Problem(
        422,
        "cofinancer_not_found",
        "Cofinanceur inconnu",
        detail=f"Le partenaire {partner_id} n'est pas connu du registre.",
    )


def plan_unbalanced(difference_cents: int) -> Problem:
    side = "manque" if difference_cents > 0 else "dépasse le budget de"
    return Problem(
        422,
        "plan_unbalanced",
        "Plan de financement déséquilibré",
        detail=f"La part de l'État et des cofinanceurs {side} {abs(difference_cents)} centimes : "
        "le plan de financement doit égaler le budget.",
        difference_cents=difference_cents,
    )


def envelope_exists() -> Problem:
    return Problem(
        409,
        "envelope_exists",
        "Enveloppe existante",
        detail="Ce département a déjà une enveloppe pour cette année.",
    )


def no_envelope(departement: str, year: int) -> Problem:
    return Problem(
        409,
        "no_envelope",
        "Pas d'enveloppe",
        detail=f"Aucune enveloppe du programme 147 pour le département {departement} en {year}.",
        departement=departement,
        year=year,
    )


def envelope_exhausted(credits: str, remaining_cents: int) -> Problem:
    return Problem(
        409,
        "envelope_exhausted",
        "Crédits insuffisants",
        detail=f"L'enveloppe n'a plus que {remaining_cents} centimes de {credits} disponibles.",
        credits=credits,
        remaining_cents=remaining_cents,
    )


def overpayment(remaining_cents: int) -> Problem:
    return Problem(
        409,
        "overpayment",
        "Paiement trop élevé",
        detail="Ce paiement dépasserait la tranche ou le montant de la convention ; il reste "
        f"{remaining_cents} centimes à payer.",
        remaining_cents=remaining_cents,
    )


def not_the_beneficiary() -> Problem:
    return Problem(
        403,
        "not_the_beneficiary",
        "Réservé au bénéficiaire",
        detail="Seul le bénéficiaire de la convention demande ses tranches et dépose ses "
        "comptes-rendus.",
    )


def report_not_accepted(year: int) -> Problem:
    return Problem(
        409,
        "report_not_accepted",
        "Compte-rendu financier attendu",
        detail=f"Le solde de {year} se demande une fois le compte-rendu financier de {year} "
        "accepté.",
        year=year,
    )


def year_outside_convention(year: int) -> Problem:
    return Problem(
        422,
        "year_outside_convention",
        "Année hors convention",
        detail=f"La convention ne couvre pas l'année {year}.",
    )


def report_status(status: str) -> Problem:
    return Problem(
        409,
        "report_status",
        "Action impossible dans cet état",
        detail=f"Le compte-rendu est à l'état « {status_label(status)} ».",
        status_now=status,
    )


# --- who acts ------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def acting_staff(caller: Caller, action: str, done_by: Mapping[str, str | None]) -> Role:
    """The role ``caller`` takes ``action`` in; 403 ``role_required`` or
    ``separation_of_duties``."""
    try:
        domain.check_role(action, caller.roles)
        domain.check_separation(action, caller.subject, done_by)
    except domain.WrongRole as error:
        raise role_required(error) from error
    except domain.SeparationOfDuties as error:
        raise separation_of_duties(error) from error
    role = domain.required_role(action)
    assert role is not None
    return role


async def acting_beneficiary(
    connection: asyncpg.Connection, caller: Caller, convention: Mapping[str, Any]
) -> None:
    """403 unless the caller is the convention's beneficiary, still verified."""
    if caller.partner_id != str(convention["beneficiary_partner_id"]):
        raise not_the_beneficiary()
    partner = await store.get_partner(connection, convention["beneficiary_partner_id"])
    if partner is None or partner["status"] != "verified":
        raise Problem(
            403,
            "partner_not_verified",
            "Partenaire non vérifié",
            detail="Votre organisation n'est pas (ou plus) vérifiée dans le registre.",
        )


def _convention_done_by(convention: Mapping[str, Any]) -> dict[str, str | None]:
    return {
        "record": convention["recorded_by"],
        "instruct": convention["instructed_by"],
        "programme": convention["programmed_by"],
        "sign": convention["signed_by"],
    }


def _tranche_done_by(
    convention: Mapping[str, Any], tranche: Mapping[str, Any]
) -> dict[str, str | None]:
    return {
        "sign": convention["signed_by"],
        "instruct": tranche["instructed_by"],
        "approve": tranche["approved_by"],
    }


def visible_partner(caller: Caller) -> uuid.UUID | None:
    """The partner scope of a reader: None for staff (everything), the caller's partner
    otherwise (only its conventions: beneficiary or co-financer)."""
    if caller.roles & domain.STAFF_ROLES:
        return None
    try:
        return uuid.UUID(caller.partner_id or "")
    except ValueError:  # no partner, or a token whose partner_id is no identifier
        raise Problem(
            403, "forbidden", "Accès refusé", detail="Réservé au personnel et aux partenaires."
        ) from None


def visible_departements(caller: Caller) -> list[str] | None:
    """The territorial scope of a reader (decision 64): None (every département) for a national
    staff member, and for a partner, which ``visible_partner`` scopes instead; otherwise the
    staff member's départements, sorted (none: they see nothing)."""
    if caller.national or not caller.roles & domain.STAFF_ROLES:
        return None
    return sorted(caller.departements)


def check_departement(caller: Caller, departement: str) -> None:
    """403 ``departement_not_in_scope`` unless the caller acts for ``departement``."""
    if not caller.covers(departement):
        raise departement_not_in_scope(departement)


# --- facts: what is published and audited -------------------------------------------------------


def convention_facts(convention: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "convention_id": convention["id"],
        "beneficiary_partner_id": convention["beneficiary_partner_id"],
        "cofinancer_partner_ids": tuple(convention["cofinancer_partner_ids"]),
        "cite_educative": convention["cite_educative"],
        "amount_cents": convention["amount_cents"],
        "first_year": convention["first_year"],
        "last_year": convention["first_year"] + len(convention["yearly_amounts_cents"]) - 1,
        "status": convention["status"],
    }


def tranche_facts(convention: Mapping[str, Any], tranche: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "tranche_id": tranche["id"],
        "convention_id": convention["id"],
        "beneficiary_partner_id": convention["beneficiary_partner_id"],
        "cofinancer_partner_ids": tuple(convention["cofinancer_partner_ids"]),
        "number": tranche["number"],
        "amount_cents": tranche["paid_amount_cents"] or tranche["amount_cents"],
        "status": tranche["status"],
    }


_CONVENTION_AUDITED = (
    "status",
    "version",
    "amount_cents",
    "paid_cents",
    "committee_date",
    "ej_number",
    "signed_on",
    "envelope_id",
    "end_reason",
)
_TRANCHE_AUDITED = (
    "status",
    "version",
    "amount_cents",
    "paid_amount_cents",
    "paid_on",
    "payment_reference",
    "reason",
)


def _audited(row: Mapping[str, Any] | None, names: tuple[str, ...]) -> dict[str, Any] | None:
    return None if row is None else {name: row[name] for name in names if name in row}


# --- envelopes -----------------------------------------------------------------------------------


async def open_envelope(
    connection: asyncpg.Connection,
    caller: Caller,
    *,
    departement: str,
    year: int,
    ae_cents: int,
    cp_cents: int,
) -> dict[str, Any]:
    """Record the credits delegated to a département for a year (the ordonnateur). 409
    ``envelope_exists`` for a second envelope of the same département and year; 403
    ``departement_not_in_scope`` outside the caller's départements."""
    role = acting_staff(caller, "open_envelope", {})
    check_departement(caller, departement)
    now = _now()
    envelope = await store.insert_envelope(
        connection,
        envelope_id=uuid.uuid4(),
        departement=departement,
        year=year,
        ae_cents=ae_cents,
        cp_cents=cp_cents,
        created_by=caller.subject,
        now=now,
    )
    if envelope is None:
        raise envelope_exists()
    await audit.record(
        connection,
        caller=caller,
        role=role,
        action="open_envelope",
        object_type="envelope",
        object_id=envelope["id"],
        before=None,
        after={
            "departement": departement,
            "year": year,
            "ae_cents": ae_cents,
            "cp_cents": cp_cents,
        },
        now=now,
    )
    return envelope


# --- conventions ---------------------------------------------------------------------------------


async def record_convention(
    connection: asyncpg.Connection,
    caller: Caller,
    *,
    beneficiary_partner_id: uuid.UUID,
    departement: str,
    object: str,
    cite_educative: str | None,
    first_year: int,
    yearly_amounts_cents: list[int],
    budget_cents: int,
    cofinancements: list[dict[str, Any]],
    advance_percent: int = domain.DEFAULT_ADVANCE_PERCENT,
) -> dict[str, Any]:
    """Record a draft convention (the officer). 422 ``beneficiary_not_verified``,
    ``beneficiary_unidentified`` (neither SIRET nor RNA), ``cofinancer_not_found``,
    ``plan_unbalanced`` (with ``difference_cents``). The legal act
    follows the 23,000 EUR rule (``domain.legal_act``). 403 ``departement_not_in_scope``
    outside the caller's départements."""
    acting_staff(caller, "record", {})
    check_departement(caller, departement)
    beneficiary = await store.get_partner(connection, beneficiary_partner_id)
    if beneficiary is None or beneficiary["status"] != "verified":
        raise partner_not_verified()
    if not (beneficiary["siret"] or beneficiary["rna"]):
        raise beneficiary_unidentified()
    cofinancer_ids = [c["partner_id"] for c in cofinancements if c.get("partner_id")]
    known = await store.partners_named(connection, cofinancer_ids)
    for partner_id in cofinancer_ids:
        if partner_id not in known:
            raise cofinancer_not_found(partner_id)
    difference = domain.plan_difference(
        budget_cents, yearly_amounts_cents, (c["amount_cents"] for c in cofinancements)
    )
    if difference != 0:
        raise plan_unbalanced(difference)
    now = _now()
    convention = await store.insert_convention(
        connection,
        {
            "id": uuid.uuid4(),
            "beneficiary_partner_id": beneficiary_partner_id,
            "departement": departement,
            "object": object,
            "cite_educative": cite_educative,
            "first_year": first_year,
            "yearly_amounts_cents": yearly_amounts_cents,
            "amount_cents": sum(yearly_amounts_cents),
            "budget_cents": budget_cents,
            "cofinancements": cofinancements,
            "cofinancer_partner_ids": sorted(set(cofinancer_ids)),
            "legal_act": domain.legal_act(yearly_amounts_cents),
            "advance_percent": advance_percent,
            "recorded_by": caller.subject,
            "created_at": now,
        },
    )
    await audit.record(
        connection,
        caller=caller,
        role=Role.OFFICER,
        action="record",
        object_type="convention",
        object_id=convention["id"],
        before=None,
        after=_audited(convention, _CONVENTION_AUDITED),
        now=now,
    )
    return convention


async def _transition_convention(
    connection: asyncpg.Connection,
    caller: Caller,
    convention_id: uuid.UUID,
    action: str,
    **changes: Any,
) -> tuple[dict[str, Any], dict[str, Any], Role]:
    convention = await store.get_convention(
        connection, convention_id, departements=visible_departements(caller), for_update=True
    )
    if convention is None:
        raise convention_not_found()
    role = acting_staff(caller, action, _convention_done_by(convention))
    try:
        status = domain.convention_after(convention["status"], action)
    except domain.NotAllowed as error:
        raise not_allowed("convention", error) from error
    return convention, {"status": status, **changes}, role


async def _finish_convention(
    connection: asyncpg.Connection,
    caller: Caller,
    role: Role,
    action: str,
    before: Mapping[str, Any],
    changes: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    after = await store.set_convention_state(connection, before["id"], now=now, **changes)
    await audit.record(
        connection,
        caller=caller,
        role=role,
        action=action,
        object_type="convention",
        object_id=after["id"],
        before=_audited(before, _CONVENTION_AUDITED),
        after=_audited(after, _CONVENTION_AUDITED),
        now=now,
    )
    return after


async def instruct_convention(
    connection: asyncpg.Connection, caller: Caller, convention_id: uuid.UUID
) -> dict[str, Any]:
    """The officer puts the draft under instruction. 404, 403, 409 ``convention_status``."""
    now = _now()
    before, changes, role = await _transition_convention(
        connection, caller, convention_id, "instruct", instructed_by=caller.subject
    )
    return await _finish_convention(connection, caller, role, "instruct", before, changes, now)


async def programme_convention(
    connection: asyncpg.Connection,
    caller: Caller,
    convention_id: uuid.UUID,
    *,
    committee_date: date,
) -> dict[str, Any]:
    """The ordonnateur records the comité de pilotage's decision; never the instructor.
    Publishes ConventionProgrammed."""
    now = _now()
    before, changes, role = await _transition_convention(
        connection,
        caller,
        convention_id,
        "programme",
        programmed_by=caller.subject,
        committee_date=committee_date,
    )
    convention = await _finish_convention(
        connection, caller, role, "programme", before, changes, now
    )
    await publish(
        connection,
        ConventionProgrammed(
            **convention_facts(convention), committee_date=committee_date.isoformat()
        ),
    )
    return convention


async def sign_convention(
    connection: asyncpg.Connection,
    caller: Caller,
    convention_id: uuid.UUID,
    *,
    ej_number: str,
    signed_on: date,
    declares_no_interest: bool,
) -> dict[str, Any]:
    """The ordonnateur signs: the whole amount is engaged on the AE of the département's
    envelope of the first year (locked first), the tranches are scheduled (``domain.schedule``)
    and the Chorus EJ number kept. 403 ``separation_of_duties`` for the instructor,
    ``conflict_of_interest``; 409 ``no_envelope``, ``envelope_exhausted`` (with
    ``remaining_cents``), ``convention_status``. Publishes ConventionSigned."""
    now = _now()
    peek = await store.get_convention(
        connection, convention_id, departements=visible_departements(caller)
    )
    if peek is None:
        raise convention_not_found()
    envelope = await store.envelope_for(
        connection, peek["departement"], peek["first_year"], for_update=True
    )
    before, changes, role = await _transition_convention(
        connection,
        caller,
        convention_id,
        "sign",
        signed_by=caller.subject,
        signed_on=signed_on,
        ej_number=ej_number,
    )
    await check_no_conflict(connection, caller, before, declares_no_interest)
    if envelope is None:
        raise no_envelope(peek["departement"], peek["first_year"])
    remaining = envelope["ae_cents"] - envelope["ae_engaged_cents"]
    if before["amount_cents"] > remaining:
        raise envelope_exhausted("AE", remaining)
    await store.engage(connection, envelope["id"], before["amount_cents"], now)
    changes["envelope_id"] = envelope["id"]
    convention = await _finish_convention(connection, caller, role, "sign", before, changes, now)
    planned = domain.schedule(
        convention["first_year"], convention["yearly_amounts_cents"], convention["advance_percent"]
    )
    await store.insert_tranches(
        connection,
        convention["id"],
        [(t.number, t.year, t.kind, t.amount_cents) for t in planned],
        now,
    )
    await publish(connection, ConventionSigned(**convention_facts(convention)))
    return convention


async def check_no_conflict(
    connection: asyncpg.Connection,
    caller: Caller,
    convention: Mapping[str, Any],
    declares_no_interest: bool,
) -> None:
    """422 ``no_interest_declaration`` without the declaration, 403 ``conflict_of_interest``
    when the caller declared a link with the beneficiary (rule 6)."""
    linked = [str(i["partner_id"]) for i in await store.interests_of(connection, caller.subject)]
    reason = domain.conflict_of_interest(
        declares_no_interest, str(convention["beneficiary_partner_id"]), linked
    )
    if reason is not None:
        raise conflict_of_interest(reason)


async def end_convention(
    connection: asyncpg.Connection,
    caller: Caller,
    convention_id: uuid.UUID,
    *,
    action: str,
    reason: str,
) -> dict[str, Any]:
    """``cancel`` (before signature) or ``close`` (once signed) by the ordonnateur, with the
    reason kept. Publishes ConventionCancelled or ConventionClosed."""
    if action not in ("cancel", "close"):
        raise ValueError(action)
    now = _now()
    before, changes, role = await _transition_convention(
        connection, caller, convention_id, action, ended_by=caller.subject, end_reason=reason
    )
    convention = await _finish_convention(connection, caller, role, action, before, changes, now)
    event = ConventionCancelled if action == "cancel" else ConventionClosed
    await publish(connection, event(**convention_facts(convention)))
    return convention


# --- tranches ------------------------------------------------------------------------------------


async def _tranche_and_convention(
    connection: asyncpg.Connection,
    caller: Caller,
    tranche_id: uuid.UUID,
    *,
    envelope_year: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """Lock in order: the envelope of ``envelope_year`` (when money moves), the convention, the
    tranche. 404 ``tranche_not_found``, also when the caller does not see its convention (a
    partner neither beneficiary nor co-financer, a staff member of another département)."""
    peek = await store.get_tranche(connection, tranche_id)
    if peek is None:
        raise tranche_not_found()
    convention_peek = await store.get_convention(
        connection,
        peek["convention_id"],
        partner_id=visible_partner(caller),
        departements=visible_departements(caller),
    )
    if convention_peek is None:
        raise tranche_not_found()
    envelope = None
    if envelope_year is not None:
        envelope = await store.envelope_for(
            connection, convention_peek["departement"], envelope_year, for_update=True
        )
    convention = await store.get_convention(connection, peek["convention_id"], for_update=True)
    tranche = await store.lock_tranche(connection, tranche_id)
    assert convention is not None
    assert tranche is not None
    return convention, tranche, envelope


def _next_tranche_status(tranche: Mapping[str, Any], action: str) -> str:
    try:
        return domain.tranche_after(tranche["status"], action)
    except domain.NotAllowed as error:
        raise not_allowed("tranche", error) from error


async def _finish_tranche(
    connection: asyncpg.Connection,
    caller: Caller,
    role: str | None,
    action: str,
    convention: Mapping[str, Any],
    before: Mapping[str, Any],
    now: datetime,
    **changes: Any,
) -> dict[str, Any]:
    after = await store.set_tranche_state(connection, before["id"], now=now, **changes)
    await audit.record(
        connection,
        caller=caller,
        role=role,
        action=action,
        object_type="tranche",
        object_id=after["id"],
        before=_audited(before, _TRANCHE_AUDITED),
        after=_audited(after, _TRANCHE_AUDITED),
        now=now,
    )
    return after


async def request_tranche(
    connection: asyncpg.Connection, caller: Caller, tranche_id: uuid.UUID
) -> dict[str, Any]:
    """The beneficiary asks for a planned (or rejected) tranche of its signed convention; a
    balance only once its year's compte-rendu is accepted. 404 for a convention the caller does
    not see, 403 ``not_the_beneficiary`` for a co-financer, 409 ``convention_status``,
    ``tranche_status``, ``report_not_accepted``. Publishes TrancheRequested."""
    now = _now()
    convention, tranche, _ = await _tranche_and_convention(connection, caller, tranche_id)
    await acting_beneficiary(connection, caller, convention)
    if convention["status"] != domain.ConventionStatus.SIGNED:
        raise not_allowed("convention", domain.NotAllowed(convention["status"], "request"))
    status = _next_tranche_status(tranche, "request")
    report = await store.get_report(connection, convention["id"], tranche["year"])
    if not domain.balance_requestable(tranche["kind"], report["status"] if report else None):
        raise report_not_accepted(tranche["year"])
    after = await _finish_tranche(
        connection,
        caller,
        None,
        "request",
        convention,
        tranche,
        now,
        status=status,
        requested=True,
    )
    await publish(connection, TrancheRequested(**tranche_facts(convention, after)))
    return after


async def instruct_tranche(
    connection: asyncpg.Connection, caller: Caller, tranche_id: uuid.UUID
) -> dict[str, Any]:
    """The officer checks the request. 403 ``role_required``, 409 ``tranche_status``."""
    now = _now()
    convention, tranche, _ = await _tranche_and_convention(connection, caller, tranche_id)
    role = acting_staff(caller, "instruct", _tranche_done_by(convention, tranche))
    status = _next_tranche_status(tranche, "instruct")
    return await _finish_tranche(
        connection,
        caller,
        role,
        "instruct",
        convention,
        tranche,
        now,
        status=status,
        instructed_by=caller.subject,
    )


async def approve_tranche(
    connection: asyncpg.Connection,
    caller: Caller,
    tranche_id: uuid.UUID,
    *,
    declares_no_interest: bool,
) -> dict[str, Any]:
    """The ordonnateur approves an instructed tranche: never its instructor (403
    ``separation_of_duties``), never someone linked to the beneficiary (403
    ``conflict_of_interest``). Publishes TrancheApproved."""
    now = _now()
    convention, tranche, _ = await _tranche_and_convention(connection, caller, tranche_id)
    role = acting_staff(caller, "approve", _tranche_done_by(convention, tranche))
    status = _next_tranche_status(tranche, "approve")
    await check_no_conflict(connection, caller, convention, declares_no_interest)
    after = await _finish_tranche(
        connection,
        caller,
        role,
        "approve",
        convention,
        tranche,
        now,
        status=status,
        approved_by=caller.subject,
    )
    await publish(connection, TrancheApproved(**tranche_facts(convention, after)))
    return after


async def reject_tranche(
    connection: asyncpg.Connection, caller: Caller, tranche_id: uuid.UUID, *, reason: str
) -> dict[str, Any]:
    """The ordonnateur rejects a requested or instructed tranche, with its reason (kept here,
    not on the bus). Publishes TrancheRejected."""
    now = _now()
    convention, tranche, _ = await _tranche_and_convention(connection, caller, tranche_id)
    role = acting_staff(caller, "reject", _tranche_done_by(convention, tranche))
    status = _next_tranche_status(tranche, "reject")
    after = await _finish_tranche(
        connection,
        caller,
        role,
        "reject",
        convention,
        tranche,
        now,
        status=status,
        rejected_by=caller.subject,
        reason=reason,
    )
    await publish(connection, TrancheRejected(**tranche_facts(convention, after)))
    return after


async def pay_tranche(
    connection: asyncpg.Connection,
    caller: Caller,
    tranche_id: uuid.UUID,
    *,
    paid_on: date,
    amount_cents: int,
    payment_reference: str,
) -> dict[str, Any]:
    """The comptable records the payment of an approved tranche: CP of the payment year's
    envelope are consumed (locked first). Never by its instructor, approver or the convention's
    signer (403 ``separation_of_duties``); 409 ``overpayment`` beyond the tranche or the
    convention, ``no_envelope``, ``envelope_exhausted``. Publishes TranchePaid."""
    now = _now()
    convention, tranche, envelope = await _tranche_and_convention(
        connection, caller, tranche_id, envelope_year=paid_on.year
    )
    role = acting_staff(caller, "pay", _tranche_done_by(convention, tranche))
    status = _next_tranche_status(tranche, "pay")
    left = convention["amount_cents"] - convention["paid_cents"]
    if amount_cents > tranche["amount_cents"] or not domain.can_pay(
        convention["amount_cents"], convention["paid_cents"], amount_cents
    ):
        raise overpayment(min(left, tranche["amount_cents"]))
    if envelope is None:
        raise no_envelope(convention["departement"], paid_on.year)
    remaining = envelope["cp_cents"] - envelope["cp_paid_cents"]
    if amount_cents > remaining:
        raise envelope_exhausted("CP", remaining)
    await store.disburse(connection, envelope["id"], amount_cents, now)
    convention = await store.add_paid(connection, convention["id"], amount_cents, now)
    after = await _finish_tranche(
        connection,
        caller,
        role,
        "pay",
        convention,
        tranche,
        now,
        status=status,
        paid_by=caller.subject,
        paid_amount_cents=amount_cents,
        paid_on=paid_on,
        payment_reference=payment_reference,
        envelope_id=envelope["id"],
    )
    await publish(connection, TranchePaid(**tranche_facts(convention, after)))
    return after


# --- comptes-rendus financiers -------------------------------------------------------------------


def report_facts(convention: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "report_id": report["id"],
        "convention_id": convention["id"],
        "beneficiary_partner_id": convention["beneficiary_partner_id"],
        "cofinancer_partner_ids": tuple(convention["cofinancer_partner_ids"]),
        "year": report["year"],
        "spent_cents": report["spent_cents"],
        "status": report["status"],
    }


async def file_report(
    connection: asyncpg.Connection,
    caller: Caller,
    convention_id: uuid.UUID,
    *,
    year: int,
    lines: list[dict[str, Any]],
    achievements: str,
) -> dict[str, Any]:
    """The beneficiary files (or files again, after changes were asked) the year's
    compte-rendu financier: spending per budget line, what was achieved. 422
    ``year_outside_convention``; 409 ``report_status`` once accepted. Publishes ReportFiled."""
    now = _now()
    convention = await store.get_convention(
        connection,
        convention_id,
        partner_id=visible_partner(caller),
        departements=visible_departements(caller),
        for_update=True,
    )
    if convention is None:
        raise convention_not_found()
    await acting_beneficiary(connection, caller, convention)
    if convention["status"] not in (domain.ConventionStatus.SIGNED, domain.ConventionStatus.CLOSED):
        raise not_allowed("convention", domain.NotAllowed(convention["status"], "file_report"))
    last_year = convention["first_year"] + len(convention["yearly_amounts_cents"]) - 1
    if not convention["first_year"] <= year <= last_year:
        raise year_outside_convention(year)
    existing = await store.get_report(connection, convention_id, year, for_update=True)
    if existing is not None and existing["status"] == "accepted":
        raise report_status(existing["status"])
    report = await store.upsert_report(
        connection,
        convention_id=convention_id,
        year=year,
        lines=lines,
        spent_cents=sum(line["spent_cents"] for line in lines),
        achievements=achievements,
        now=now,
    )
    await audit.record(
        connection,
        caller=caller,
        role=None,
        action="file_report",
        object_type="report",
        object_id=report["id"],
        before=None,
        after={"year": year, "spent_cents": report["spent_cents"], "status": "filed"},
        now=now,
    )
    await publish(connection, ReportFiled(**report_facts(convention, report)))
    return report


async def decide_report(
    connection: asyncpg.Connection,
    caller: Caller,
    convention_id: uuid.UUID,
    year: int,
    *,
    accept: bool,
    remarks: str | None,
) -> dict[str, Any]:
    """The officer accepts the filed compte-rendu, or asks for changes. On acceptance, what the
    year paid beyond the State's part of the spending (``domain.unspent_due_back``) becomes a
    reversement order. Publishes ReportAccepted (and ReversementOrdered)."""
    now = _now()
    convention = await store.get_convention(
        connection, convention_id, departements=visible_departements(caller), for_update=True
    )
    if convention is None:
        raise convention_not_found()
    action = "accept_report" if accept else "return_report"
    role = acting_staff(caller, action, {})
    report = await store.get_report(connection, convention_id, year, for_update=True)
    if report is None:
        raise report_not_found()
    if report["status"] != "filed":
        raise report_status(report["status"])
    due_back = None
    if accept:
        offset = year - convention["first_year"]
        share = convention["yearly_amounts_cents"][offset]
        year_budget = convention["budget_cents"] * share // convention["amount_cents"]
        paid = await store.paid_in_year(connection, convention_id, year)
        due_back = domain.unspent_due_back(paid, report["spent_cents"], share, year_budget)
    decided = await store.decide_report(
        connection,
        report["id"],
        status="accepted" if accept else "changes_requested",
        decided_by=caller.subject,
        remarks=remarks,
        due_back_cents=due_back,
        now=now,
    )
    await audit.record(
        connection,
        caller=caller,
        role=role,
        action=action,
        object_type="report",
        object_id=report["id"],
        before={"status": report["status"]},
        after={"status": decided["status"], "due_back_cents": due_back},
        now=now,
    )
    if accept:
        await publish(
            connection,
            ReportAccepted(**report_facts(convention, decided), due_back_cents=due_back or 0),
        )
        if due_back:
            reversement = await store.insert_reversement(
                connection,
                convention_id=convention_id,
                report_id=report["id"],
                year=year,
                amount_cents=due_back,
                now=now,
            )
            await publish(
                connection,
                ReversementOrdered(
                    reversement_id=reversement["id"],
                    convention_id=convention_id,
                    beneficiary_partner_id=convention["beneficiary_partner_id"],
                    cofinancer_partner_ids=tuple(convention["cofinancer_partner_ids"]),
                    year=year,
                    amount_cents=due_back,
                ),
            )
    return decided


def reversement_not_found() -> Problem:
    return _not_found("reversement_not_found", "Ce reversement")


def reversement_received() -> Problem:
    return Problem(
        409,
        "reversement_received",
        "Reversement déjà reçu",
        detail="Ce reversement est déjà enregistré comme reçu.",
    )


async def receive_reversement(
    connection: asyncpg.Connection, caller: Caller, reversement_id: uuid.UUID
) -> dict[str, Any]:
    """The comptable records that the amount due back came in. 404 ``reversement_not_found``,
    409 ``reversement_received``."""
    now = _now()
    role = acting_staff(caller, "receive_reversement", {})
    before, after = await store.receive_reversement(
        connection,
        reversement_id,
        caller.subject,
        now,
        departements=visible_departements(caller),
    )
    if before is None:
        raise reversement_not_found()
    if after is None:
        raise reversement_received()
    await audit.record(
        connection,
        caller=caller,
        role=role,
        action="receive_reversement",
        object_type="reversement",
        object_id=reversement_id,
        before={"status": before["status"], "amount_cents": before["amount_cents"]},
        after={"status": after["status"], "amount_cents": after["amount_cents"]},
        now=now,
    )
    return after


# --- conflicts of interest -----------------------------------------------------------------------


async def declare_interest(
    connection: asyncpg.Connection,
    caller: Caller,
    *,
    partner_id: uuid.UUID,
    staff_subject: str | None = None,
) -> dict[str, Any]:
    """A staff member declares an interest in a partner (an operator or admin may record it for
    another staff member): they will never approve that partner's money."""
    subject = staff_subject or caller.subject
    if subject != caller.subject and not caller.roles & domain.PLATFORM_STAFF:
        raise Problem(
            403,
            "forbidden",
            "Accès refusé",
            detail="Seuls les opérateurs déclarent un intérêt pour un autre agent.",
        )
    now = _now()
    interest = await store.declare_interest(
        connection,
        staff_subject=subject,
        partner_id=partner_id,
        declared_by=caller.subject,
        now=now,
    )
    await audit.record(
        connection,
        caller=caller,
        role=audit.acting_role(caller, None),
        action="declare_interest",
        object_type="partner",
        object_id=partner_id,
        before=None,
        after={"staff_subject": subject},
        now=now,
    )
    return interest
