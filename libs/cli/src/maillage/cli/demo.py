"""Demo data for ``maillage dev --demo``, loaded mostly through the services' public HTTP APIs.

The registry step imports the Val-de-Marne sample of the Annuaire de l'éducation, creates the
staff accounts, registers the demo partners (the demo operator verifies them, schools too: their
one-time codes land in the dev mailbox unused) and prints a ready-to-use token. Each other
service adds its step as it gains an API. Running it twice changes nothing: partners already
registered answer 409 and are kept.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from maillage.common.db import create_pool


@dataclass(frozen=True)
class DemoContext:
    base_urls: dict[str, str]
    database_urls: dict[str, str]
    # Where the operator token is written whole (readable by its owner only); it is printed
    # shortened: the log may be shared, the token opens the registry for 15 minutes.
    data_dir: Path = Path(".maillage")


OPERATOR_TOKEN_FILE = "operator-token"  # noqa: S105 - a file name

DemoStep = Callable[[DemoContext], Awaitable[list[str]]]

# Development accounts, printed by `maillage dev --demo`: (roles, password, départements). The
# funding staff act for Val-de-Marne, the département of the demo's envelope and conventions;
# operators and admins are national (decision 64).
STAFF = {
    "operator@maillage.test": (["operator"], "demo-operator", []),
    "officer@maillage.test": (["officer"], "demo-officer", ["94"]),
    "ordonnateur@maillage.test": (["ordonnateur"], "demo-ordonnateur", ["94"]),
    "comptable@maillage.test": (["comptable"], "demo-comptable", ["94"]),
    "admin@maillage.test": (["admin"], "demo-admin", []),
}


def _demo_siret(number: int) -> str:
    """A fictional but well-formed SIRET: a Luhn-valid SIREN, establishment 0001, Luhn again."""
    siren = _luhn_completed(f"9{number:07d}")
    return _luhn_completed(f"{siren}0001")


def _luhn_completed(digits: str) -> str:
    """Append the Luhn check digit."""
    total = 0
    for index, char in enumerate(reversed(digits + "0")):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return digits + str((10 - total % 10) % 10)


def _contact(name: str, role: str, email: str) -> list[dict[str, str]]:
    return [{"name": name, "role": role, "email": email}]


DEMO_PARTNERS: list[dict[str, Any]] = [
    {
        "kind": "etablissement_superieur",
        "legal_name": "EFREI Paris (démo)",
        "siret": _demo_siret(1),
        "commune_code": "94080",
        "commune_name": "Villejuif",
        "departement": "94",
        "latitude": 48.7887,
        "longitude": 2.3637,
        "programmes": ["cordees", "stages3e"],
        "cites_educatives": ["Orly"],
        "contacts": _contact("Responsable cordées", "Tête de cordée", "cordees@efrei.demo"),
    },
    {
        "kind": "etablissement_superieur",
        "legal_name": "Université Paris-Est Créteil (démo)",
        "siret": _demo_siret(2),
        "commune_code": "94028",
        "commune_name": "Créteil",
        "departement": "94",
        "latitude": 48.7897,
        "longitude": 2.4526,
        "programmes": ["cordees"],
        "contacts": _contact("Mission égalité des chances", "Tête de cordée", "cordees@upec.demo"),
    },
    {
        "kind": "association",
        "legal_name": "Ingénieurs pour l'école 94 (démo)",
        "rna": "W941000001",
        "commune_code": "94054",
        "commune_name": "Orly",
        "departement": "94",
        "programmes": ["stages3e"],
        "cites_educatives": ["Orly"],
        "contacts": _contact("Coordination", "Bénévole", "contact@ipe94.demo"),
    },
    {
        "kind": "entreprise",
        "legal_name": "Aéroport d'Orly Services (démo)",
        "siret": _demo_siret(3),
        "commune_code": "94054",
        "commune_name": "Orly",
        "departement": "94",
        "programmes": ["stages3e", "funding"],
        "contacts": _contact("RSE", "Responsable RSE", "rse@orly-services.demo"),
    },
    {
        "kind": "collectivite",
        "legal_name": "Ville d'Orly (démo)",
        "siret": _demo_siret(4),
        "commune_code": "94054",
        "commune_name": "Orly",
        "departement": "94",
        "programmes": ["funding"],
        "cites_educatives": ["Orly"],
        "contacts": _contact("Cité éducative", "Cheffe de projet", "cite-educative@orly.demo"),
    },
    *(
        {
            "kind": kind,
            "legal_name": name,
            "uai": uai,
            # The chef de file collège of Orly's cité éducative receives its State grant: the
            # SCDL open data names a beneficiary by its SIRET.
            **({"siret": _demo_siret(5)} if uai == "0940123Y" else {}),
            "programmes": ["cordees", "stages3e"],
            "contacts": _contact("Direction", "Chef d'établissement", f"ce.{uai.lower()}@ac.demo"),
        }
        for kind, name, uai in (
            ("college", "Collège Robert Desnos", "0940123Y"),
            ("college", "Collège Fernande Flagon", "0941755X"),
            ("college", "Collège Dorval", "0941147L"),
            ("college", "Collège Roland Garros", "0941785E"),
            ("lycee", "Lycée Armand Guillaumin", "0942815Z"),
        )
    ),
]


async def registry_step(context: DemoContext) -> list[str]:
    from maillage.registry import domain, reference, store, tokens

    data = Path(reference.__file__).parent / "data"
    pool = await create_pool(context.database_urls["registry"])
    try:
        schools = await reference.import_annuaire(pool, data / "annuaire-education-demo-94.csv")
        await reference.import_education_prioritaire(
            pool, data / "education-prioritaire-demo-94.csv"
        )
        for email, (roles, password, codes) in STAFF.items():
            departements, national = domain.staff_territory(roles, codes, national=False)
            await store.upsert_staff(
                pool,
                email=email,
                password_hash=tokens.hash_secret(password),
                roles=roles,
                departements=departements,
                national=national,
            )
    finally:
        await pool.close()
    lines = [f"registry: {schools.inserted + schools.updated} reference schools (Val-de-Marne)"]
    base = context.base_urls["registry"]
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        operator = await _operator_headers(http)
        for body in DEMO_PARTNERS:
            response = await http.post("/partners", json=body)
            if response.status_code == 409:
                continue
            if response.status_code != 201:
                raise RuntimeError(f"{body['legal_name']}: {response.status_code} {response.text}")
            partner = response.json()
            if partner["status"] == "pending":
                verified = await http.post(
                    f"/partners/{partner['id']}/verify",
                    json={"reason": "demo partner"},
                    headers=operator,
                )
                verified.raise_for_status()
            lines.append(f"registry: {partner['legal_name']} ({partner['id']})")
    for email, (roles, password, codes) in STAFF.items():
        where = ", ".join(codes) or "national"
        lines.append(f"staff {email} / {password} ({', '.join(roles)}; {where})")
    token = operator["Authorization"].removeprefix("Bearer ")
    path = context.data_dir / OPERATOR_TOKEN_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an older file keeps its mode otherwise
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    lines.append(f"operator token (15 min): {token[:28]}… (whole in {path})")
    return lines


CORDEE_OFFERS = {  # by the SIRET of the demo tête de cordée
    _demo_siret(1): {  # EFREI, Villejuif: the cordée of Orly's cité éducative
        "capacity": 3,
        "levels": ["4e", "3e"],
        "thematics": ["numerique", "sciences", "ingenierie"],
        "max_distance_km": 25,
    },
    _demo_siret(2): {  # UPEC, Créteil: the whole académie de Créteil
        "capacity": 4,
        "levels": ["3e", "2nde", "1re", "terminale"],
        "thematics": ["sante", "droit", "sciences"],
        "academies": ["24"],
    },
}
MATCH_REQUESTS = {  # by UAI: what the demo collèges ask for
    "0940123Y": {"thematics": ["numerique", "sciences"], "max_distance_km": 20},  # Desnos, REP+
    "0941755X": {"thematics": ["sante"]},
    "0941147L": {"thematics": ["droit", "arts"], "max_distance_km": 30},
}


async def _staff_headers(registry: httpx.AsyncClient, email: str) -> dict[str, str]:
    """A demo staff member's bearer header (a password grant on the registry)."""
    login = await registry.post(
        "/oauth/token",
        data={"grant_type": "password", "username": email, "password": STAFF[email][1]},
    )
    login.raise_for_status()
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def _ids_by_identifier(rows: list[Any]) -> dict[str, str]:
    """Partner ids by each identifier they have (SIRET, RNA, UAI): a collège may have a SIRET
    too (the Collège Robert Desnos does, for funding), and is still found by its UAI."""
    return {
        row[column]: str(row["id"])
        for row in rows
        for column in ("siret", "rna", "uai")
        if row[column] is not None
    }


async def _operator_headers(registry: httpx.AsyncClient) -> dict[str, str]:
    """The demo operator's bearer header."""
    return await _staff_headers(registry, "operator@maillage.test")


async def _partner_headers(
    registry: httpx.AsyncClient, operator: dict[str, str], partner_id: str, client_name: str
) -> dict[str, str]:
    """A partner's own bearer header: an API client the operator creates for it, then a
    client-credentials token."""
    client = await registry.post(
        f"/partners/{partner_id}/clients", json={"name": client_name}, headers=operator
    )
    client.raise_for_status()
    issued = await registry.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.json()["client_id"], client.json()["client_secret"]),
    )
    issued.raise_for_status()
    return {"Authorization": f"Bearer {issued.json()['access_token']}"}


# Fictitious addresses of two demo partners: their notifications land in the dev mailbox.
DEMO_MAILBOXES = {
    "EFREI Paris (démo)": "cordees@efrei.demo",
    "Collège Robert Desnos": "ce.0940123y@ac-creteil.demo",
}


async def notifications_step(context: DemoContext) -> list[str]:
    """E-mail channels for EFREI and the Collège Robert Desnos, so that what the next steps do
    (offers, proposals, pairings) arrives as French e-mails in ``maillage dev``'s mailbox."""
    pool = await create_pool(context.database_urls["registry"])
    try:
        ids = {
            row["legal_name"]: str(row["id"])
            for row in await pool.fetch(
                "SELECT legal_name, id FROM partners WHERE legal_name = ANY($1::text[])",
                list(DEMO_MAILBOXES),
            )
        }
    finally:
        await pool.close()
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=context.base_urls["registry"], timeout=10) as registry,
        httpx.AsyncClient(base_url=context.base_urls["notifications"], timeout=10) as service,
    ):
        operator = await _operator_headers(registry)
        for name, address in DEMO_MAILBOXES.items():
            headers = await _partner_headers(registry, operator, ids[name], "Démo notifications")
            created = await service.post(
                "/email-channels", json={"address": address}, headers=headers
            )
            if created.status_code not in (201, 202, 409):
                raise RuntimeError(f"notifications: {created.status_code} {created.text}")
            lines.append(f"notifications: {name} is notified at {address}")
    # The addresses are fictitious, so nobody can click the confirmation: the demo confirms them
    # in the database (the confirmation e-mail is in the mailbox all the same).
    pool = await create_pool(context.database_urls["notifications"])
    try:
        await pool.execute(
            "UPDATE email_channels SET confirmed_at = coalesce(confirmed_at, now()),"
            " confirmation_token_hash = NULL WHERE address = ANY($1::text[])",
            list(DEMO_MAILBOXES.values()),
        )
    finally:
        await pool.close()
    return lines


async def cordees_step(context: DemoContext) -> list[str]:
    """Cordée offers by EFREI and UPEC, and match requests from three demo collèges, through
    the cordees API with each partner's own token (an API client the demo operator creates)."""
    import asyncio
    from datetime import date

    year = date.today().year if date.today().month >= 9 else date.today().year - 1
    school_year = f"{year}-{year + 1}"
    pool = await create_pool(context.database_urls["registry"])
    try:
        ids = _ids_by_identifier(
            await pool.fetch(
                "SELECT siret, rna, uai, id FROM partners"
                " WHERE siret = ANY($1::text[]) OR uai = ANY($2::text[])",
                list(CORDEE_OFFERS),
                list(MATCH_REQUESTS),
            )
        )
    finally:
        await pool.close()
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=context.base_urls["registry"], timeout=10) as registry,
        httpx.AsyncClient(base_url=context.base_urls["cordees"], timeout=10) as cordees,
    ):
        operator = await _operator_headers(registry)

        async def partner_token(partner_id: str) -> dict[str, str]:
            return await _partner_headers(registry, operator, partner_id, "Démo cordées")

        async def post(path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
            # The cordees read model learns of the partners from the registry's events: a few
            # seconds after they registered, the first calls may still be refused.
            for _ in range(60):
                response = await cordees.post(path, json=body, headers=headers)
                if response.status_code != 403:
                    break
                await asyncio.sleep(0.5)
            if response.status_code not in (201, 202):
                raise RuntimeError(f"cordees {path}: {response.status_code} {response.text}")
            return response.json()

        for siret, offer in CORDEE_OFFERS.items():
            headers = await partner_token(ids[siret])
            mine = await cordees.get(
                "/offers", params={"tete_partner_id": ids[siret]}, headers=headers
            )
            if mine.status_code == 200 and mine.json()["items"]:
                continue  # loaded before
            created = await post("/offers", {**offer, "school_year": school_year}, headers)
            lines.append(f"cordees: offer {created['id']} ({created['capacity']} places)")
        for uai, wish in MATCH_REQUESTS.items():
            headers = await partner_token(ids[uai])
            mine = await cordees.get("/match-requests", headers=headers)
            if mine.status_code == 200 and mine.json()["items"]:
                continue
            match = await post("/match-requests", {**wish, "school_year": school_year}, headers)
            lines.append(f"cordees: match request of {uai}: {match['status']}")
    return lines


def _weeks_ahead(count: int, first: int = 3) -> list[str]:
    """ISO weeks of the coming school year's stage window, from ``first`` weeks ahead."""
    from datetime import date, timedelta

    from maillage.stages3e import domain as stages

    day, weeks = date.today() + timedelta(weeks=first), []
    while len(weeks) < count:
        week = stages.IsoWeek.of(day)
        if stages.school_year_of_week(week) is not None and (
            not weeks
            or stages.school_year_of_week(stages.IsoWeek.parse(weeks[0]))
            == stages.school_year_of_week(week)
        ):
            weeks.append(str(week))
        day += timedelta(weeks=1)
    return weeks


STAGE_OFFERS = {  # by the SIRET or RNA of the demo host: offers in the Val-de-Marne
    _demo_siret(3): [  # Aéroport d'Orly Services
        {
            "title": "Les métiers de l'aéroport",
            "description": "Une semaine avec les équipes d'exploitation, de la piste au terminal.",
            "sector": "O",
            "latitude": 48.7262,
            "longitude": 2.3652,
            "commune_code": "94054",
            "commune_name": "Orly",
            "daily_hours": "9h-12h, 13h30-16h30",
            "accessible": True,
            "seats": 3,
            "reserved": 2,
        },
        {
            "title": "Maintenance et sécurité",
            "description": "Découverte de la maintenance des équipements et de la sécurité.",
            "sector": "T",
            "latitude": 48.7310,
            "longitude": 2.3700,
            "commune_code": "94054",
            "commune_name": "Orly",
            "seats": 2,
            "reserved": 0,
        },
    ],
    "W941000001": [  # the association of Orly
        {
            "title": "Accompagnement éducatif",
            "description": "Une semaine d'observation à l'accompagnement à la scolarité.",
            "sector": "W",
            "latitude": 48.7465,
            "longitude": 2.3920,
            "commune_code": "94054",
            "commune_name": "Orly",
            "seats": 2,
            "reserved": 1,
        }
    ],
}
STAGE_APPLICANTS = ("0940123Y", "0941755X")  # Desnos (REP+) applies and confirms; Flagon too


async def stages3e_step(context: DemoContext) -> list[str]:
    """Stage offers of two Val-de-Marne hosts over several weeks, some seats reserved to
    REP+/REP collèges; two collèges apply for a pupil each; the airport accepts the Collège
    Robert Desnos's pupil and the collège confirms: through the stages3e API, each partner with
    its own token."""
    import asyncio

    pool = await create_pool(context.database_urls["registry"])
    try:
        ids = _ids_by_identifier(
            await pool.fetch(
                "SELECT siret, rna, uai, id FROM partners"
                " WHERE siret = ANY($1::text[]) OR rna = ANY($1::text[])"
                " OR uai = ANY($2::text[])",
                list(STAGE_OFFERS),
                list(STAGE_APPLICANTS),
            )
        )
    finally:
        await pool.close()
    weeks = _weeks_ahead(4)
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=context.base_urls["registry"], timeout=10) as registry,
        httpx.AsyncClient(base_url=context.base_urls["stages3e"], timeout=10) as stages,
    ):
        operator = await _operator_headers(registry)

        async def call(path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> Any:
            # The read model learns of the partners from the registry's events, a few seconds
            # after they registered: the first calls may still be refused.
            for _ in range(60):
                response = await (
                    stages.put(path, json=body, headers=headers)
                    if path.startswith("/offers/by-remote-id/")
                    else stages.post(path, json=body, headers=headers)
                )
                if response.status_code != 403:
                    break
                await asyncio.sleep(0.5)
            if response.status_code not in (200, 201):
                raise RuntimeError(f"stages3e {path}: {response.status_code} {response.text}")
            return response.json()

        offers: dict[str, list[dict[str, Any]]] = {}
        hosts: dict[str, dict[str, str]] = {}
        for key, bodies in STAGE_OFFERS.items():
            hosts[key] = headers = await _partner_headers(
                registry, operator, ids[key], "Démo stages"
            )
            for number, offer in enumerate(bodies):
                seats, reserved = offer["seats"], offer["reserved"]
                body = {k: v for k, v in offer.items() if k not in ("seats", "reserved")}
                body["weeks"] = [
                    {"week": week, "seats": seats, "reserved": reserved} for week in weeks
                ]
                created = await call(f"/offers/by-remote-id/demo-{number}", body, headers)
                offers.setdefault(key, []).append(created)
                lines.append(
                    f"stages3e: offer {created['title']!r} ({created['id']}), weeks "
                    f"{', '.join(weeks)}, {seats} seats ({reserved} reserved) each"
                )
        airport = offers[_demo_siret(3)][0]
        for number, uai in enumerate(STAGE_APPLICANTS):
            school = await _partner_headers(registry, operator, ids[uai], "Démo stages")
            mine = await stages.get("/applications", headers=school)
            if mine.status_code == 200 and mine.json()["items"]:
                continue  # loaded before
            application = await call(
                "/applications",
                {"offer_id": airport["id"], "week": weeks[0], "pupil_reference": f"3A-0{number}"},
                school,
            )
            lines.append(f"stages3e: {uai} applied for a pupil ({application['id']})")
            if number == 0:
                await call(f"/applications/{application['id']}/accept", None, hosts[_demo_siret(3)])
                await call(f"/applications/{application['id']}/confirm", None, school)
                lines.append(f"stages3e: accepted by the airport and confirmed by {uai}")
    return lines


FUNDING_YEAR = 2027
ORLY_CONVENTION = {  # the cité éducative of Orly: 3 years, co-financed by the Ville d'Orly
    "departement": "94",
    "object": "Cité éducative d'Orly : continuité éducative, ateliers et ouverture culturelle",
    "cite_educative": "Orly",
    "first_year": FUNDING_YEAR,
    "yearly_amounts_cents": [16_000_000, 16_000_000, 16_000_000],  # 160,000 EUR a year
    "budget_cents": 66_000_000,
}
SECOND_CONVENTION = {  # an association's action, programmed, waiting for the signature
    "departement": "94",
    "object": "Ingénieurs pour l'école : ateliers sciences dans les collèges REP+ d'Orly",
    "cite_educative": "Orly",
    "first_year": FUNDING_YEAR,
    "yearly_amounts_cents": [2_400_000],
    "budget_cents": 2_400_000,
    "cofinancements": [],
}


async def funding_step(context: DemoContext) -> list[str]:
    """The Val-de-Marne 2027 envelope; the convention of Orly's cité éducative (chef de file
    Collège Robert Desnos, co-financed by the Ville d'Orly), signed, its advance requested by the
    collège through the API and paid; a second convention programmed, waiting for signature.
    Each decision by the role it belongs to: officer, ordonnateur, comptable (three people)."""
    import asyncio

    pool = await create_pool(context.database_urls["registry"])
    try:
        ids = {
            row["legal_name"]: str(row["id"])
            for row in await pool.fetch(
                "SELECT legal_name, id FROM partners WHERE legal_name = ANY($1::text[])",
                [
                    "Collège Robert Desnos",
                    "Ville d'Orly (démo)",
                    "Ingénieurs pour l'école 94 (démo)",
                ],
            )
        }
    finally:
        await pool.close()
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=context.base_urls["registry"], timeout=10) as registry,
        httpx.AsyncClient(base_url=context.base_urls["funding"], timeout=10) as funding,
    ):
        officer = await _staff_headers(registry, "officer@maillage.test")
        ordonnateur = await _staff_headers(registry, "ordonnateur@maillage.test")
        comptable = await _staff_headers(registry, "comptable@maillage.test")
        if (await funding.get("/conventions", headers=officer)).json()["items"]:
            return ["funding: loaded before"]

        async def call(path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> Any:
            # The funding read model learns of the partners from the registry's events: the
            # first calls may come before it knows they are verified.
            for _ in range(60):
                response = await funding.post(path, json=body, headers=headers)
                if response.status_code != 422 or "not_verified" not in response.text:
                    break
                await asyncio.sleep(0.5)
            if response.status_code not in (200, 201):
                raise RuntimeError(f"funding {path}: {response.status_code} {response.text}")
            return response.json()

        envelope = await call(
            "/envelopes",
            {
                "departement": "94",
                "year": FUNDING_YEAR,
                "ae_cents": 250_000_000,
                "cp_cents": 120_000_000,
            },
            ordonnateur,
        )
        lines.append(f"funding: envelope Val-de-Marne {FUNDING_YEAR} ({envelope['id']})")
        desnos, orly = ids["Collège Robert Desnos"], ids["Ville d'Orly (démo)"]
        convention = await call(
            "/conventions",
            {
                **ORLY_CONVENTION,
                "beneficiary_partner_id": desnos,
                "cofinancements": [
                    {"name": "Ville d'Orly", "partner_id": orly, "amount_cents": 18_000_000}
                ],
            },
            officer,
        )
        path = f"/conventions/{convention['id']}"
        await call(f"{path}/instruct", None, officer)
        await call(f"{path}/programme", {"committee_date": f"{FUNDING_YEAR}-01-12"}, ordonnateur)
        signed = await call(
            f"{path}/sign",
            {
                "ej_number": "2103000147",
                "signed_on": f"{FUNDING_YEAR}-01-20",
                "declares_no_interest": True,
            },
            ordonnateur,
        )
        advance = signed["tranches"][0]
        operator = await _operator_headers(registry)
        college = await _partner_headers(registry, operator, desnos, "Démo financement")
        await call(f"/tranches/{advance['id']}/request", None, college)
        await call(f"/tranches/{advance['id']}/instruct", None, officer)
        await call(
            f"/tranches/{advance['id']}/approve", {"declares_no_interest": True}, ordonnateur
        )
        await call(
            f"/tranches/{advance['id']}/pay",
            {
                "paid_on": f"{FUNDING_YEAR}-02-16",
                "amount_cents": advance["amount_cents"],
                "payment_reference": "DRFIP94-2027-000147",
            },
            comptable,
        )
        lines.append(
            f"funding: convention of the cité éducative d'Orly, signed, advance paid "
            f"({convention['id']})"
        )
        second = await call(
            "/conventions",
            {
                **SECOND_CONVENTION,
                "beneficiary_partner_id": ids["Ingénieurs pour l'école 94 (démo)"],
            },
            officer,
        )
        await call(f"/conventions/{second['id']}/instruct", None, officer)
        await call(
            f"/conventions/{second['id']}/programme",
            {"committee_date": f"{FUNDING_YEAR}-01-12"},
            ordonnateur,
        )
        lines.append(
            f"funding: convention waiting for the ordonnateur's signature ({second['id']})"
        )
    return lines


STEPS: list[DemoStep] = [
    registry_step,
    notifications_step,
    cordees_step,
    stages3e_step,
    funding_step,
]


async def load(context: DemoContext) -> list[str]:
    lines: list[str] = []
    for step in STEPS:
        lines.extend(await step(context))
    return lines
