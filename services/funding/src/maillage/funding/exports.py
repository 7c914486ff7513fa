"""CSV exports: the SCDL "données essentielles des conventions de subvention" (open data, décret
2017-779 and the arrêté of 17 November 2017, Table Schema ``scdl-subventions`` 2.1.1) and the
officers' list of tranches and payments. Pure functions of rows: no I/O.

SCDL columns from a convention: ``montant`` is the State's share over all years in euros (cents
written out, never through a float); ``dateConvention`` the signature date; ``referenceDecision``
the Chorus EJ number; ``conditionsVersement`` "échelonné" when paid in several tranches;
``datesPeriodeVersement`` the convention's years; ``pourcentageSubvention`` 1 (one
beneficiary per convention); ``dispositifAide`` programme 147.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

from maillage.funding import domain

SCDL_COLUMNS = (
    "nomAttribuant",
    "idAttribuant",
    "dateConvention",
    "referenceDecision",
    "nomBeneficiaire",
    "idBeneficiaire",
    "rnaBeneficiaire",
    "objet",
    "montant",
    "nature",
    "conditionsVersement",
    "datesPeriodeVersement",
    "idRAE",
    "notificationUE",
    "pourcentageSubvention",
    "dispositifAide",
)
DISPOSITIF = "Programme 147 - Politique de la ville"


def euros(cents: int) -> str:
    """``1234567`` → ``"12345.67"``: exact, with the point SCDL asks for."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def scdl_row(
    convention: Mapping[str, Any], *, attribuant_name: str, attribuant_siret: str
) -> dict[str, str]:
    years = len(convention["yearly_amounts_cents"])
    first, last = convention["first_year"], convention["first_year"] + years - 1
    tranches = domain.schedule(
        first, convention["yearly_amounts_cents"], convention["advance_percent"]
    )
    return {
        "nomAttribuant": attribuant_name,
        "idAttribuant": attribuant_siret,
        "dateConvention": convention["signed_on"].isoformat(),
        "referenceDecision": convention["ej_number"] or "",
        "nomBeneficiaire": convention.get("beneficiary_name") or "",
        "idBeneficiaire": convention.get("beneficiary_siret") or "",
        "rnaBeneficiaire": convention.get("beneficiary_rna") or "",
        "objet": convention["object"][:256],
        "montant": euros(convention["amount_cents"]),
        "nature": "aide en numéraire",
        "conditionsVersement": "échelonné" if len(tranches) > 1 else "unique",
        "datesPeriodeVersement": f"{first}-01-01/{last}-12-31",
        "idRAE": "",
        "notificationUE": "non",
        "pourcentageSubvention": "1",
        "dispositifAide": DISPOSITIF,
    }


def scdl_csv(
    conventions: Iterable[Mapping[str, Any]], *, attribuant_name: str, attribuant_siret: str
) -> str:
    """The SCDL file: a header line, then one line per convention, comma-separated, UTF-8."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SCDL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for convention in conventions:
        writer.writerow(
            scdl_row(convention, attribuant_name=attribuant_name, attribuant_siret=attribuant_siret)
        )
    return out.getvalue()


TRANCHE_COLUMNS = (
    "convention_id",
    "departement",
    "ej_number",
    "beneficiary_partner_id",
    "tranche_number",
    "year",
    "kind",
    "amount_eur",
    "status",
    "paid_amount_eur",
    "paid_on",
    "payment_reference",
)


def tranches_csv(tranches: Iterable[Mapping[str, Any]]) -> str:
    """Tranches and their payments, one line each, amounts in euros with two decimals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRANCHE_COLUMNS)
    for t in tranches:
        writer.writerow(
            [
                t["convention_id"],
                t["departement"],
                t["ej_number"] or "",
                t["beneficiary_partner_id"],
                t["number"],
                t["year"],
                t["kind"],
                euros(t["amount_cents"]),
                t["status"],
                euros(t["paid_amount_cents"]) if t["paid_amount_cents"] else "",
                t["paid_on"].isoformat() if t["paid_on"] else "",
                t["payment_reference"] or "",
            ]
        )
    return out.getvalue()
