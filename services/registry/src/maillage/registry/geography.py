"""Where a school can be: facts of a reference row that contradict each other.

A row of the Annuaire de l'éducation says where a school is four times over: the UAI's first
digits (the département that numbered it), the département code, the commune code (whose first
digits are its département) and the coordinates. Real rows carry errors (a collège of
Le Morne-Rouge, Martinique, with coordinates in Lyon), and a wrong coordinate would drive every
distance the cordées matching measures. :func:`check_place` compares them, and decides:

1. département code against the UAI: the UAI is the school's identity and never changes; a row
   whose département says otherwise cannot say which of its facts is true, so it is **rejected**.
   The one exception is Saint-Barthélemy (977) and Saint-Martin (978), part of Guadeloupe until
   2007, whose schools keep their 971 UAIs.
2. commune code against the département: the commune is the odd one out (the département
   agrees with the UAI), so the commune code and name are **dropped and flagged**.
3. coordinates against the département's box (``data/departements-boxes.csv``, derived from
   GeoNames places by ``services/registry/tools/derive_departement_boxes.py``, 20 km margin):
   outside it, latitude and longitude are **dropped and flagged**, and the school travels without
   coordinates (``SchoolReferenced`` carries them as null), so no distance is measured from them.
   The box is a coarse net, not a border: a point a few kilometres into the next département is
   not caught. A département without a box (TAAF, Clipperton) is not checked.

Pure: no I/O beyond reading the committed box file once.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources

# Schools of Saint-Barthélemy and Saint-Martin were numbered by Guadeloupe (971) before 2007.
ALSO_NUMBERED_BY = {"977": "971", "978": "971"}


@dataclass(frozen=True, slots=True)
class Box:
    """A latitude/longitude box, in degrees (WGS 84)."""

    south: float
    north: float
    west: float
    east: float

    def contains(self, latitude: float, longitude: float) -> bool:
        return self.south <= latitude <= self.north and self.west <= longitude <= self.east


@functools.cache
def boxes() -> dict[str, Box]:
    """The box of every département and overseas collectivité that has one, by INSEE code."""
    text = (resources.files("maillage.registry") / "data" / "departements-boxes.csv").read_text(
        encoding="utf-8"
    )
    return {
        row["departement"]: Box(
            float(row["south"]), float(row["north"]), float(row["west"]), float(row["east"])
        )
        for row in csv.DictReader(io.StringIO(text), delimiter=";")
    }


def commune_departement(commune_code: str) -> str:
    """The département of a code commune INSEE: ``94054`` → ``94``, ``2A004`` → ``2A``,
    ``97218`` → ``972`` (overseas codes have three digits)."""
    return commune_code[:3] if commune_code.startswith(("97", "98")) else commune_code[:2]


def uai_allows(uai_departement: str, departement: str) -> bool:
    """Whether a school numbered by ``uai_departement`` may lie in ``departement``."""
    return departement in (
        uai_departement,
        *(code for code, numbered_by in ALSO_NUMBERED_BY.items() if numbered_by == uai_departement),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a row: reject it (``rejection``), or drop fields, each group with why."""

    rejection: str | None = None
    dropped: tuple[tuple[tuple[str, ...], str], ...] = ()


def check_place(
    *,
    uai_departement: str | None,
    departement: str | None,
    commune_code: str | None,
    latitude: float | None,
    longitude: float | None,
) -> Verdict:
    """Compare what a row says of where a school is (rules 1-3 of the module docstring)."""
    if uai_departement and departement and not uai_allows(uai_departement, departement):
        return Verdict(
            rejection=f"département {departement} contradicts the UAI, numbered by "
            f"département {uai_departement}"
        )
    place = departement or uai_departement
    if place is None:
        return Verdict()
    dropped: list[tuple[tuple[str, ...], str]] = []
    if commune_code and commune_departement(commune_code) != place:
        dropped.append(
            (
                ("commune_code", "commune_name"),
                f"commune {commune_code} is in département {commune_departement(commune_code)}, "
                f"not {place}: commune dropped",
            )
        )
    box = boxes().get(place)
    if (
        latitude is not None
        and longitude is not None
        and box
        and not box.contains(latitude, longitude)
    ):
        dropped.append(
            (
                ("latitude", "longitude"),
                f"coordinates ({latitude:g}, {longitude:g}) lie outside département {place}: "
                "coordinates dropped",
            )
        )
    return Verdict(dropped=tuple(dropped))
