"""What happens when someone acts on cordées: checks, locks, writes, events.

Each use case runs inside its caller's transaction (a route, a consumer, a worker) and reads top
to bottom: who acts, take the locks, check, write, publish, re-solve the live flow, return.
Locks follow ``store``'s order: the school year's matching lock, then an offer's row, then a
request's row. Every change to what may be proposed ends with ``matcher.rematch`` (decision 48):
the proposals standing are then again an optimal assignment of the waiting requests to the places
left, REP+ first.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from maillage.common.auth import BARRED_STATUSES, Caller, not_in_good_standing
from maillage.common.catalog import (
    CordeeOfferClosed,
    CordeeOfferOpened,
    CordeeOfferUpdated,
    MatchRequested,
    MatchWithdrawn,
    PairingEnded,
    PairingEstablished,
    PartnerFacts,
)
from maillage.common.messages import status_label
from maillage.common.outbox import publish
from maillage.common.problems import Problem
from maillage.cordees import domain, matcher, store
from maillage.cordees.domain import PriorityClass

STAFF_ROLES = frozenset({"operator", "admin"})
MOVES_SHOWN = 100  # a campaign's summary lists at most this many moves

# --- problems (codes are a contract with partners: written out once each) -----------------------


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Accès refusé", detail=detail)


def offer_not_found(offer_id: uuid.UUID) -> Problem:
    return Problem(404, "offer_not_found", "Offre introuvable", detail=f"Aucune offre {offer_id}.")


def match_request_not_found(request_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        "match_request_not_found",
        "Demande introuvable",
        detail=f"Aucune demande de cordée {request_id}.",
    )


def pairing_not_found(pairing_id: uuid.UUID) -> Problem:
    return Problem(
        404, "pairing_not_found", "Cordée introuvable", detail=f"Aucune cordée {pairing_id}."
    )


def campaign_not_found(campaign_id: uuid.UUID) -> Problem:
    return Problem(
        404, "campaign_not_found", "Campagne introuvable", detail=f"Aucune campagne {campaign_id}."
    )


def tete_location_unknown() -> Problem:
    return Problem(
        409,
        "tete_location_unknown",
        "Position inconnue",
        detail="Donnez d'abord vos coordonnées au registre : les distances se mesurent depuis "
        "elles.",
    )


def school_location_unknown() -> Problem:
    return Problem(
        409,
        "school_location_unknown",
        "Position inconnue",
        detail="Les coordonnées de l'établissement sont inconnues : le registre les tient de "
        "l'Annuaire de l'éducation.",
    )


def offer_closed() -> Problem:
    return Problem(409, "offer_closed", "Offre fermée", detail="Une offre fermée ne change plus.")


def capacity_below_encordes(encordes: int) -> Problem:
    return Problem(
        409,
        "capacity_below_encordes",
        "Places en dessous des encordés",
        detail=f"{encordes} établissements sont encordés avec cette offre : mettez d'abord fin "
        "à des cordées.",
        encordes=encordes,
    )


def nothing_to_change() -> Problem:
    return Problem(422, "nothing_to_change", "Rien à modifier", detail="Envoyez au moins un champ.")


def offer_full(capacity: int) -> Problem:
    return Problem(
        409, "offer_full", "Offre complète", detail="L'offre n'a plus de place.", capacity=capacity
    )


def already_encorde() -> Problem:
    return Problem(
        409,
        "already_encorde",
        "Déjà encordé",
        detail="L'établissement est déjà encordé avec cette offre (par une autre demande).",
    )


def proposal_moved(status: str) -> Problem:
    return Problem(
        409,
        "proposal_moved",
        "Proposition déplacée",
        detail="Cette demande ne vous est plus proposée : elle a été proposée ailleurs, ou attend "
        f"une place (statut {status_label(status)}), pour que les places servent l'objectif "
        f"national ({matcher.OBJECTIVE_TEXT}).",
        request_status=status,
    )


def not_proposed(status: str) -> Problem:
    return Problem(
        409,
        "not_proposed",
        "Pas proposée à votre offre",
        detail=f"La demande a le statut {status_label(status)} : elle n'est plus proposée à "
        "cette offre.",
        request_status=status,
    )


def not_withdrawable(status: str) -> Problem:
    return Problem(
        409,
        "not_withdrawable",
        "Retrait impossible",
        detail=f"La demande a le statut {status_label(status)}.",
        request_status=status,
    )


def pairing_ended() -> Problem:
    return Problem(409, "pairing_ended", "Déjà terminée", detail="Cette cordée a pris fin.")


# --- who acts -----------------------------------------------------------------------------------


def caller_partner(caller: Caller) -> uuid.UUID | None:
    """The caller's partner id, or None (none in the token, or not a UUID)."""
    try:
        return uuid.UUID(caller.partner_id) if caller.partner_id else None
    except ValueError:
        return None


async def _acting_partner(
    connection: asyncpg.Connection | asyncpg.Pool,
    caller: Caller,
    kinds: frozenset[str],
    role: str,
    what: str,
) -> dict[str, Any]:
    """The caller's partner from the read model: it must hold ``role``, be of one of ``kinds``
    and be verified (a suspended or rejected partner cannot act); 403 otherwise."""
    partner_id = caller_partner(caller)
    if partner_id is None or not caller.has_role(role):
        raise forbidden(f"Réservé à un {what} (rôle {role}, avec son partner_id).")
    partner = await store.get_partner(connection, partner_id)
    if partner is None or partner["kind"] not in kinds:
        raise forbidden(f"Votre partenaire n'est pas connu ici comme {what}.")
    if partner["status"] in BARRED_STATUSES:
        raise not_in_good_standing(partner_id, partner["status"])
    if partner["status"] != "verified":
        raise forbidden(
            f"Votre partenaire a le statut {status_label(partner['status'])} : seuls les "
            "partenaires vérifiés agissent."
        )
    return partner


async def acting_tete(
    connection: asyncpg.Connection | asyncpg.Pool, caller: Caller
) -> dict[str, Any]:
    """The caller's verified tête de cordée; 403 otherwise."""
    return await _acting_partner(
        connection, caller, matcher.TETE_KINDS, "partner", "tête de cordée"
    )


async def acting_school(
    connection: asyncpg.Connection | asyncpg.Pool, caller: Caller
) -> dict[str, Any]:
    """The caller's verified collège or lycée; 403 otherwise."""
    return await _acting_partner(
        connection, caller, matcher.SCHOOL_KINDS, "school", "collège ou lycée"
    )


def offer_facts(offer: dict[str, Any]) -> dict[str, Any]:
    """The facts of an offer's events."""
    return {
        "offer_id": offer["id"],
        "tete_partner_id": offer["tete_partner_id"],
        "school_year": offer["school_year"],
        "capacity": offer["capacity"],
        "levels": tuple(offer["levels"]),
        "thematics": tuple(offer["thematics"]),
        "max_distance_km": offer["max_distance_km"],
        "academies": tuple(offer["academies"]),
        "status": offer["status"],
        "version": offer["version"],
    }


def _request_facts(match_request: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "request_id": match_request["id"],
        "school_partner_id": match_request["school_partner_id"],
        "school_year": match_request["school_year"],
        "status": status,
        "priority_class": matcher.PRIORITY_NAMES[PriorityClass(match_request["priority"])],
    }


# --- cordée offers ------------------------------------------------------------------------------


async def open_offer(
    connection: asyncpg.Connection,
    caller: Caller,
    *,
    school_year: str,
    capacity: int,
    levels: list[str],
    thematics: list[str],
    max_distance_km: float | None,
    academies: list[str],
    now: datetime,
) -> dict[str, Any]:
    """Open an offer of the caller's tête (403 unless a verified tête; 409
    tete_location_unknown). Its places go at once to the waiting requests the optimum gives it
    (``rematch``). Publishes CordeeOfferOpened, then the proposals' events."""
    tete = await acting_tete(connection, caller)
    if tete["latitude"] is None or tete["longitude"] is None:
        raise tete_location_unknown()
    await store.lock_matching(connection, [school_year])
    offer = await store.insert_offer(
        connection,
        {
            "id": uuid.uuid4(),
            "tete_partner_id": tete["partner_id"],
            "school_year": school_year,
            "capacity": capacity,
            "levels": sorted(set(levels)),
            "thematics": sorted(set(thematics)),
            "max_distance_km": max_distance_km,
            "academies": academies,
        },
    )
    await publish(connection, CordeeOfferOpened(**offer_facts(offer)))
    await matcher.rematch(connection, school_year, reason="offer_opened", now=now)
    return offer


async def _own_open_offer(
    connection: asyncpg.Connection, caller: Caller, offer_id: uuid.UUID
) -> dict[str, Any]:
    """The caller's offer, locked after its year's matching lock; 404 when none, 403 for
    another tête's, 409 offer_closed when closed."""
    tete = await acting_tete(connection, caller)
    offer = await store.get_offer(connection, offer_id)
    if offer is None:
        raise offer_not_found(offer_id)
    await store.lock_matching(connection, [offer["school_year"]])
    offer = await store.get_offer(connection, offer_id, for_update=True)
    assert offer is not None
    if offer["tete_partner_id"] != tete["partner_id"]:
        raise forbidden("Une tête de cordée ne modifie que ses propres offres.")
    if offer["status"] != "open":
        raise offer_closed()
    return offer


async def change_offer(
    connection: asyncpg.Connection,
    caller: Caller,
    offer_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    now: datetime,
) -> dict[str, Any]:
    """Change the given fields of the caller's open offer (``capacity``, ``levels``,
    ``thematics``, ``max_distance_km``, ``academies``). 422 nothing_to_change; 404, 403, 409
    offer_closed (``_own_open_offer``); 409 capacity_below_encordes. The year is re-solved: a
    proposal the offer can no longer hold moves on. Publishes CordeeOfferUpdated."""
    if not changes:
        raise nothing_to_change()
    offer = await _own_open_offer(connection, caller, offer_id)
    if changes.get("capacity", offer["capacity"]) < offer["encordes"]:
        raise capacity_below_encordes(offer["encordes"])
    offer = await store.update_offer(
        connection,
        offer_id,
        capacity=changes.get("capacity", offer["capacity"]),
        levels=sorted(set(changes.get("levels", offer["levels"]))),
        thematics=sorted(set(changes.get("thematics", offer["thematics"]))),
        max_distance_km=changes.get("max_distance_km", offer["max_distance_km"]),
        academies=changes.get("academies", offer["academies"]),
    )
    await publish(connection, CordeeOfferUpdated(**offer_facts(offer)))
    await matcher.rematch(connection, offer["school_year"], reason="offer_changed", now=now)
    changed = await store.get_offer(connection, offer_id)
    assert changed is not None
    return changed


async def close_offer(
    connection: asyncpg.Connection, caller: Caller, offer_id: uuid.UUID, *, now: datetime
) -> dict[str, Any]:
    """Close the caller's open offer (404, 403, 409 offer_closed): its proposals move on;
    established pairings go on. Publishes CordeeOfferClosed."""
    await _own_open_offer(connection, caller, offer_id)
    offer = await store.close_offer(connection, offer_id)
    await publish(connection, CordeeOfferClosed(**offer_facts(offer)))
    await matcher.rematch(connection, offer["school_year"], reason="offer_closed", now=now)
    return offer


# --- match requests -----------------------------------------------------------------------------


async def request_match(
    connection: asyncpg.Connection,
    caller: Caller,
    *,
    school_year: str,
    thematics: list[str],
    max_distance_km: float | None,
    now: datetime,
) -> dict[str, Any]:
    """File the caller's school's request and answer it in the same transaction: proposed (the
    optimum gives it a place, perhaps one a lower-priority request held, which then moves on) or
    unmatched. 403 unless a verified collège or lycée; 409 school_location_unknown. Publishes
    MatchRequested, then the events of every proposal that changed."""
    partner = await acting_school(connection, caller)
    school = matcher.school_of(partner)
    if school is None:
        raise school_location_unknown()
    await store.lock_matching(connection, [school_year])
    match_request = await store.insert_request(
        connection,
        {
            "id": uuid.uuid4(),
            "school_partner_id": school.partner_id,
            "school_year": school_year,
            "thematics": sorted(set(thematics)),
            "max_distance_km": max_distance_km,
            "priority": int(school.priority),
        },
    )
    await publish(
        connection,
        MatchRequested(
            **_request_facts(match_request, "requested"),
            thematics=tuple(match_request["thematics"]),
            max_distance_km=match_request["max_distance_km"],
        ),
    )
    if await matcher.may_be_proposed(connection, school_year, match_request, school):
        await matcher.rematch(connection, school_year, reason="request_filed", now=now)
    else:  # no offer with a place left may take it: nothing can move, no re-solve
        await matcher.unmatched(connection, match_request, reason="request_filed", previous=None)
        await matcher.carry_over(connection, school_year)
    answered = await store.get_request(connection, match_request["id"])
    assert answered is not None
    return answered


async def _proposed_to_caller(
    connection: asyncpg.Connection, caller: Caller, request_id: uuid.UUID
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request proposed to the caller's offer, and that offer, after the year's matching
    lock, the offer's row and the request's row (in that order). 403 unless the caller is a
    verified tête that was proposed the request at some time; 404 when no such request; 409
    proposal_moved when it was proposed the caller once and has moved on (another offer, or
    waiting), 409 not_proposed when it is withdrawn or established."""
    tete = await acting_tete(connection, caller)
    match_request = await store.get_request(connection, request_id)
    if match_request is None:
        raise match_request_not_found(request_id)
    await store.lock_matching(connection, [match_request["school_year"]])
    match_request = await store.get_request(connection, request_id)
    assert match_request is not None
    offer = None
    if match_request["offer_id"] is not None:
        offer = await store.get_offer(connection, match_request["offer_id"], for_update=True)
    if offer is None or offer["tete_partner_id"] != tete["partner_id"]:
        if tete["partner_id"] not in match_request["proposed_tete_ids"]:
            raise forbidden("Seule la tête de cordée proposée répond à une proposition.")
        if match_request["status"] in ("proposed", "unmatched"):
            raise proposal_moved(match_request["status"])
        raise not_proposed(match_request["status"])
    match_request = await store.get_request(connection, request_id, for_update=True)
    assert match_request is not None
    if match_request["status"] != "proposed":
        raise not_proposed(match_request["status"])
    return match_request, offer


async def accept_match(
    connection: asyncpg.Connection, caller: Caller, request_id: uuid.UUID, *, now: datetime
) -> dict[str, Any]:
    """Pair the school proposed to the caller's offer; the pairing. Refusals as
    ``_proposed_to_caller``, and 409 offer_full, already_encorde (never expected: the live flow
    proposes within the places left, and never an offer the school is encordé with). Publishes
    PairingEstablished."""
    match_request, offer = await _proposed_to_caller(connection, caller, request_id)
    if offer["encordes"] >= offer["capacity"]:
        raise offer_full(offer["capacity"])
    paired = await store.offers_paired_with(connection, match_request["school_partner_id"])
    if offer["id"] in paired:
        raise already_encorde()
    pairing = await store.insert_pairing(
        connection,
        {
            "id": uuid.uuid4(),
            "request_id": match_request["id"],
            "offer_id": offer["id"],
            "tete_partner_id": offer["tete_partner_id"],
            "school_partner_id": match_request["school_partner_id"],
            "school_year": match_request["school_year"],
        },
    )
    await store.set_request_state(
        connection,
        match_request["id"],
        status="established",
        offer_id=offer["id"],
        proposal=match_request["proposal"],
    )
    await publish(connection, PairingEstablished(**matcher.pairing_facts(pairing)))
    # The request leaves the flow with the place its proposal held: what remains is still an
    # optimal assignment of the rest (removing a served request and its place creates no better
    # one), so nothing moves, unless the school has another request proposed to this offer,
    # which it may no longer take.
    if await store.other_request_proposed_to(
        connection, match_request["school_partner_id"], offer["id"], match_request["id"]
    ):
        await matcher.rematch(connection, match_request["school_year"], reason="accepted", now=now)
    return pairing


async def decline_match(
    connection: asyncpg.Connection, caller: Caller, request_id: uuid.UUID, *, now: datetime
) -> dict[str, Any]:
    """Decline the school proposed to the caller's offer (refusals as ``_proposed_to_caller``):
    that offer is never proposed to it again, and the year is re-solved. The request as it then
    stands. Publishes MatchDeclined, then the proposals' events."""
    match_request, _ = await _proposed_to_caller(connection, caller, request_id)
    await matcher.decline(connection, match_request, reason="declined")
    await matcher.rematch(connection, match_request["school_year"], reason="declined", now=now)
    answered = await store.get_request(connection, request_id)
    assert answered is not None
    return answered


async def withdraw_match(
    connection: asyncpg.Connection, caller: Caller, request_id: uuid.UUID, *, now: datetime
) -> dict[str, Any]:
    """Withdraw the caller's school's request (403 for another school's or a non-school; 404;
    409 not_withdrawable when withdrawn or established). A place it held goes to the next
    request the optimum gives it. Publishes MatchWithdrawn."""
    school = await acting_school(connection, caller)
    match_request = await store.get_request(connection, request_id)
    if match_request is None:
        raise match_request_not_found(request_id)
    if match_request["school_partner_id"] != school["partner_id"]:
        raise forbidden("Un établissement ne retire que ses propres demandes.")
    await store.lock_matching(connection, [match_request["school_year"]])
    match_request = await store.get_request(connection, request_id, for_update=True)
    assert match_request is not None
    if match_request["status"] in ("withdrawn", "established"):
        raise not_withdrawable(match_request["status"])
    offer = None
    if match_request["offer_id"] is not None:
        offer = await store.get_offer(connection, match_request["offer_id"])
    withdrawn = await store.set_request_state(connection, match_request["id"], status="withdrawn")
    await publish(
        connection,
        MatchWithdrawn(
            **_request_facts(withdrawn, "withdrawn"),
            offer_id=offer["id"] if offer else None,
            tete_partner_id=offer["tete_partner_id"] if offer else None,
        ),
    )
    if offer is not None:  # a place is free
        await matcher.rematch(
            connection, withdrawn["school_year"], reason="request_withdrawn", now=now
        )
    return withdrawn


# --- pairings -----------------------------------------------------------------------------------


async def visible_pairing(
    connection: asyncpg.Connection | asyncpg.Pool,
    caller: Caller,
    pairing_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> dict[str, Any]:
    """A pairing its tête, its school and operators see; 404 when none, 403 for others."""
    pairing = await store.get_pairing(connection, pairing_id, for_update=for_update)
    if pairing is None:
        raise pairing_not_found(pairing_id)
    partner_id = caller_partner(caller)
    sides = (pairing["tete_partner_id"], pairing["school_partner_id"])
    if partner_id not in sides and not caller.roles & STAFF_ROLES:
        raise forbidden(
            "Une cordée n'est visible que de sa tête de cordée, de son établissement et des "
            "opérateurs."
        )
    return pairing


async def end_pairing(
    connection: asyncpg.Connection, caller: Caller, pairing_id: uuid.UUID, *, now: datetime
) -> dict[str, Any]:
    """End a pairing on request of its tête or its school (each verified); 404, 403, 409
    pairing_ended. Its place goes to the request the optimum gives it. Publishes PairingEnded."""
    pairing = await visible_pairing(connection, caller, pairing_id)
    partner_id = caller_partner(caller)
    if partner_id == pairing["tete_partner_id"]:
        await acting_tete(connection, caller)
        reason = "tete_request"
    elif partner_id == pairing["school_partner_id"]:
        await acting_school(connection, caller)
        reason = "school_request"
    else:
        raise forbidden("Seules la tête de cordée ou l'établissement d'une cordée y mettent fin.")
    await store.lock_matching(connection, [pairing["school_year"]])
    await store.get_offer(connection, pairing["offer_id"], for_update=True)
    pairing = await visible_pairing(connection, caller, pairing_id, for_update=True)
    if pairing["status"] != "active":
        raise pairing_ended()
    pairing = await store.end_pairing(connection, pairing_id, reason)
    await publish(connection, PairingEnded(**matcher.pairing_facts(pairing), reason=reason))
    await matcher.rematch(connection, pairing["school_year"], reason="pairing_ended", now=now)
    return pairing


# --- partners (from the registry's events) ------------------------------------------------------


async def partner_changed(
    connection: asyncpg.Connection, event: PartnerFacts, *, now: datetime
) -> None:
    """Keep a partner's facts (a newer version only) and re-solve the years where it has open
    offers or requests in the flow: a suspended tête holds no proposal, a suspended school is
    proposed nothing, a partner verified again or moved is weighed anew."""
    facts = event.model_dump(include=set(PartnerFacts.model_fields))
    facts["academie"] = domain.academie_of(event.departement) if event.departement else None
    if not await store.apply_partner(connection, facts):
        return  # an older version than the one kept
    years = set()
    if event.kind in matcher.TETE_KINDS:
        years |= set(await store.years_of_tete(connection, event.partner_id))
    if event.kind in matcher.SCHOOL_KINDS:
        years |= set(await store.years_of_school(connection, event.partner_id))
    await store.lock_matching(connection, sorted(years))
    for school_year in sorted(years):
        await matcher.rematch(connection, school_year, reason="partner_changed", now=now)


# --- campaigns ----------------------------------------------------------------------------------


async def run_campaign(
    connection: asyncpg.Connection,
    caller: Caller,
    *,
    departement: str | None,
    academie: str | None,
    dry_run: bool,
    now: datetime,
) -> dict[str, Any]:
    """Solve the optimum of every school year with requests in the flow in scope, apply the
    differences (unless ``dry_run``) and record the campaign; the campaign with its summary:
    the scope's waiting requests, those proposed in the optimum, coverage per class, total
    distance, the moves (none when the live flow is up to date). Operators only (checked by the
    route)."""
    campaign_id = uuid.uuid4()
    years = await store.live_years(connection, departement=departement, academie=academie)
    await store.lock_matching(connection, years)
    solve_ms = 0.0
    in_scope: list[domain.Request] = []
    assignments: dict[uuid.UUID, uuid.UUID] = {}
    distances: dict[uuid.UUID, int] = {}
    moves: list[matcher.Move] = []
    for school_year in years:
        solved = await matcher.rematch(
            connection,
            school_year,
            reason="campaign",
            now=now,
            campaign_id=campaign_id,
            apply=not dry_run,
        )
        solve_ms += solved.solve_ms
        scoped = {
            request.request_id
            for request in solved.requests
            if (departement is None or request.school.departement == departement)
            and (academie is None or request.school.academie == academie)
        }
        in_scope += [r for r in solved.requests if r.request_id in scoped]
        assignments |= {r: o for r, o in solved.result.assignments.items() if r in scoped}
        distances |= {r: d for r, d in solved.result.distances_m.items() if r in scoped}
        moves += [move for move in solved.moves if move.request_id in scoped]
    summary = _campaign_summary(in_scope, assignments, distances, moves, solve_ms, dry_run)
    scope = {"departement": departement, "academie": academie}
    return await store.insert_campaign(connection, campaign_id, scope, summary, caller.subject)


def _campaign_summary(
    requests: list[domain.Request],
    assignments: dict[uuid.UUID, uuid.UUID],
    distances: dict[uuid.UUID, int],
    moves: list[matcher.Move],
    solve_ms: float,
    dry_run: bool,
) -> dict[str, Any]:
    requested = dict.fromkeys(PriorityClass, 0)
    served = dict.fromkeys(PriorityClass, 0)
    for request in requests:
        requested[request.school.priority] += 1
        served[request.school.priority] += request.request_id in assignments
    n = len(requests)
    total_m = sum(distances.values())
    return {
        "requests": n,
        "proposed": len(assignments),
        "coverage": {
            matcher.PRIORITY_NAMES[p]: {"requested": requested[p], "served": served[p]}
            for p in PriorityClass
        },
        "total_distance_km": round(total_m / 1000, 3),
        "objective": sum(domain.coverage_weight(p, n) * served[p] for p in PriorityClass) - total_m,
        "solve_ms": round(solve_ms, 3),
        "dry_run": dry_run,
        "changes": len(moves),
        "moves": [
            {
                "request_id": str(move.request_id),
                "priority_class": move.priority_class,
                "from_offer_id": str(move.from_offer_id) if move.from_offer_id else None,
                "to_offer_id": str(move.to_offer_id) if move.to_offer_id else None,
            }
            for move in moves[:MOVES_SHOWN]
        ],
    }
