"""Reference data on schools: the Annuaire de l'éducation and the éducation prioritaire list.

A school's REP/REP+ status, pupil count and location come from here, never from what the school
declares. Two official files feed the ``reference_schools`` table:

- the "Annuaire de l'éducation" (data.education.gouv.fr, dataset ``fr-en-annuaire-education``,
  about 66,000 rows): a CSV with one row per establishment and some 70 columns, of which this
  module reads fourteen (:data:`ANNUAIRE_COLUMNS`) and ignores the others; ``mail`` is the
  school's institutional mailbox (``ce.<UAI>@ac-<académie>.fr``, public), where a school that
  registers proves control with a code (decision 41);
- the éducation prioritaire list: the dataset ``fr-en-etablissements-ep`` (a UAI column and one
  REP column per school year, ``ep_2022_2023``; the latest is used) or the ministry's list of REP
  and REP+ (``liste-des-rep-et-rep-rentree-2022.csv``; see :class:`EducationPrioritaireReading`).

Both files are read by ``csvfile.Table`` (delimiter ``;``, ``,`` or tab, found from the header;
every line accounted for, see its docstring) and parsed as streams (:class:`AnnuaireReading`,
:class:`EducationPrioritaireReading`): a bad row becomes a :class:`Rejected` with its line number
and reason, and the good rows go on. A row whose facts contradict each other is rejected, or its
doubtful field dropped and flagged (``geography.check_place``). :func:`import_reference` reads
both headers first, then upserts batches of :data:`BATCH_SIZE` rows of both files in one
transaction, so memory stays flat whatever the file's size and a refused file or a failed import
leaves the table as it was.

Every school an import adds, or whose published fields (those of ``SchoolReferenced``: name,
place, REP/REP+, QPV) it changes, is published as a ``fr.maillage.registry.school.referenced.v1``
event on ``registry.schools``, through the outbox and in the import's transaction, so that other
services keep their own copy of the reference; re-importing the same file publishes nothing.

The éducation prioritaire list takes precedence over the annuaire's own
``appartenance_education_prioritaire`` column: once a school's status came from a list
(``education_prioritaire_source`` = ``ep_2022_2023``), re-importing the annuaire leaves it alone,
and only a list of the same or a later school year changes it.

Column names are matched after normalisation (case, accents, spaces: ``Code postal``,
``Code_postal`` and ``code_postal`` are the same column), since the site's exports differ by
whether they use field names or labels. Each line is UTF-8 (a BOM is tolerated) or else
Windows-1252, which is what a spreadsheet re-save produces; a line that is neither is rejected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from maillage.common.catalog import SchoolReferenced
from maillage.common.outbox import publish_many
from maillage.registry import geography, identifiers
from maillage.registry.csvfile import ReferenceFormatError, Source, Table, column_name
from maillage.registry.identifiers import InvalidIdentifier

__all__ = ["ReferenceFormatError", "column_name"]  # raised and used here, defined in csvfile

T = TypeVar("T")
BATCH_SIZE = 1000
EDUCATION_PRIORITAIRE = frozenset({"REP", "REP+"})
ANNUAIRE_SOURCE = "annuaire"

# ReferenceSchool attribute → the annuaire's column (normalised name).
ANNUAIRE_COLUMNS = {
    "uai": "identifiant_de_l_etablissement",
    "name": "nom_etablissement",
    "type": "type_etablissement",
    "public_private": "statut_public_prive",
    "postal_code": "code_postal",
    "commune_code": "code_commune",
    "commune_name": "nom_commune",
    "departement": "code_departement",
    "academie": "code_academie",
    "education_prioritaire": "appartenance_education_prioritaire",
    "latitude": "latitude",
    "longitude": "longitude",
    "pupils": "nombre_d_eleves",
    "mail": "mail",
}
# Fields of a school given on several lines (etablissement_multi_lignes) compared line by line;
# coordinates are compared with a tolerance of SAME_PLACE_DEGREES (about 1 km).
MERGED_FIELDS = tuple(
    name for name in ANNUAIRE_COLUMNS if name not in ("uai", "latitude", "longitude")
)
MULTI_LINE_COLUMNS = ("etablissement_multi_lignes", "multi_uai")
SAME_PLACE_DEGREES = 0.01
# Without these the file is not an annuaire; the others may be missing (their values are null).
REQUIRED_ANNUAIRE_COLUMNS = ("identifiant_de_l_etablissement", "nom_etablissement")

# Candidate names of the UAI column of the éducation prioritaire list, in order of preference.
EP_UAI_COLUMNS = ("uai", "identifiant_de_l_etablissement", "code_uai", "numero_uai", "uai_etab")
EP_SCHOOL_YEAR = re.compile(r"^ep_(\d{4})_(\d{4})$")
# Optional columns of the list: is a quartier prioritaire (QPV) near the school, and which one.
EP_QPV_FLAG_COLUMNS = ("qp_a_proximite_o_n", "qpv_a_proximite_o_n", "qp_a_proximite_on")
EP_QPV_CODE_COLUMNS = ("code_qp_a_proximite", "qp_a_proximite", "code_qpv", "code_qp")

Progress = Callable[[int, int], None]
"""Called as rows are read, with (bytes read so far, rows read so far)."""


@dataclass(frozen=True, slots=True)
class ReferenceSchool:
    """One establishment of the Annuaire de l'éducation (a row of ``reference_schools``)."""

    uai: str
    name: str
    type: str  # type_etablissement as published: "Collège", "Lycée", "Ecole", "EREA"...
    public_private: str | None = None  # "public" | "prive"
    postal_code: str | None = None
    commune_code: str | None = None  # code commune INSEE
    commune_name: str | None = None
    departement: str | None = None  # INSEE form: "94", "2A", "971"
    academie: str | None = None  # code_academie as published ("24" is Créteil)
    education_prioritaire: str | None = None  # "REP" | "REP+" | None
    latitude: float | None = None
    longitude: float | None = None
    pupils: int | None = None
    mail: str | None = None  # the institutional mailbox: "ce.0940123Y@ac-creteil.fr"
    education_prioritaire_source: str = ANNUAIRE_SOURCE
    qpv_proximity: bool | None = None  # from the éducation prioritaire list
    qpv_code: str | None = None  # "annuaire" or "ep_2022_2023"...


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row left out of an import: its line in the file (header = line 1), UAI if any, why."""

    line_number: int
    uai: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line_number}" + (f" ({self.uai})" if self.uai else "")
        return f"{where}: {self.reason}"


Flagged = Rejected
"""A row imported with a doubt: which field was dropped or merged, and why (same shape)."""


@dataclass(frozen=True, slots=True)
class PrioritaireStatus:
    """One row of the éducation prioritaire list: a school's status for ``school_year``."""

    line_number: int
    uai: str
    status: str | None  # "REP" | "REP+" | None (not in éducation prioritaire)
    school_year: str  # the column it came from, e.g. "ep_2022_2023"
    qpv_proximity: bool | None = None  # None when the list has no such column
    qpv_code: str | None = None


@dataclass
class ImportSummary:
    """What became of every line of an annuaire file after its header:
    ``inserted + updated + merged + len(rejected) + blank + continued == lines``."""

    inserted: int = 0
    updated: int = 0
    published: int = 0  # schools new or changed in what is published (registry.schools)
    rejected: list[Rejected] = field(default_factory=list)
    merged: int = 0  # lines of an establishment given on several lines, merged into its first
    flagged: list[Flagged] = field(default_factory=list)  # imported, a field dropped or merged
    lines: int = 0  # physical lines after the header
    blank: int = 0
    continued: int = 0  # lines continuing a record (a quoted field holding a line break)
    delimiter: str = ";"

    @property
    def accounted(self) -> int:
        """Lines accounted for: equals ``lines`` once the import is done."""
        return (
            self.inserted
            + self.updated
            + self.merged
            + len(self.rejected)
            + self.blank
            + self.continued
        )


@dataclass
class EducationPrioritaireSummary:
    """What became of every line of an éducation prioritaire list after its header:
    ``headings + updated + not_found + superseded + len(rejected) + blank + continued == lines``.
    """

    school_year: str | None = None  # "ep_2022_2023"
    school_year_from: str = ""  # where it was read: a column, the --school-year option, the name
    updated: int = 0  # schools whose status was set from the list
    not_found: int = 0  # UAIs of the list absent from reference_schools (import the annuaire first)
    superseded: int = 0  # schools whose status already came from a later school year's list
    published: int = 0  # schools whose published status or QPV changed (registry.schools)
    rejected: list[Rejected] = field(default_factory=list)
    headings: int = 0  # rows of the ministry's list naming a network, not a school
    lines: int = 0
    blank: int = 0
    continued: int = 0
    delimiter: str = ";"

    @property
    def accounted(self) -> int:
        return (
            self.headings
            + self.updated
            + self.not_found
            + self.superseded
            + len(self.rejected)
            + self.blank
            + self.continued
        )


class _SeenUais:
    """UAIs already accepted, as a bitmap of their 7 digits: 1.25 MB whatever the file's size."""

    def __init__(self) -> None:
        self._bits = bytearray(10_000_000 // 8)

    def add(self, uai: str) -> bool:
        """Record ``uai``; False when it was already there."""
        number = int(uai[:7])
        byte, bit = number >> 3, 1 << (number & 7)
        if self._bits[byte] & bit:
            return False
        self._bits[byte] |= bit
        return True


# --- The annuaire --------------------------------------------------------------------------------


ANNUAIRE_WHAT = "an Annuaire de l'éducation CSV"


def _is_annuaire(index: dict[str, int]) -> bool:
    return all(column in index for column in REQUIRED_ANNUAIRE_COLUMNS)


def annuaire_table(source: Source) -> Table:
    """The annuaire's header read from ``source``; :class:`ReferenceFormatError` when it lacks
    the UAI or name column whichever the delimiter."""
    return Table(
        source,
        ANNUAIRE_WHAT,
        _is_annuaire,
        f"it needs the columns {' and '.join(REQUIRED_ANNUAIRE_COLUMNS)}",
    )


def parse_annuaire(lines: Iterable[str]) -> Iterator[ReferenceSchool | Rejected]:
    """Parse the Annuaire de l'éducation CSV, one row at a time.

    ``lines`` is any iterable of text lines (an open file, a list). Yields a
    :class:`ReferenceSchool` per valid row and a :class:`Rejected` per invalid one; raises
    :class:`ReferenceFormatError` when the header lacks the UAI or name column.
    """
    return iter(AnnuaireReading(annuaire_table(Source(lines))))


class AnnuaireReading:
    """One pass over an annuaire: its schools and rejected rows, and what was merged or flagged.

    Several lines for one UAI: the Annuaire's export gives some establishments on several lines
    and says so in ``etablissement_multi_lignes`` (``multi_uai`` in later exports); they differ
    in columns Maillage does not read (a private school's contract types, for one). Such lines
    are one school: the first line's values are kept, a later line fills what it left empty,
    and a later line that says otherwise on a field Maillage reads is flagged (coordinates more
    than :data:`SAME_PLACE_DEGREES` apart are dropped: the school's place is doubtful). Each
    later line counts as merged. Lines of one UAI that the file does not mark are a mistake:
    the later ones are rejected. Rows that contradict themselves are checked by
    :func:`geography.check_place` (rejected, or a field dropped and flagged).
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self.merged = 0
        self.flagged: list[Flagged] = []
        self._doubtful_place: set[str] = set()  # UAIs whose lines disagree on coordinates
        self._multi_line = next(
            (table.index[name] for name in MULTI_LINE_COLUMNS if name in table.index), None
        )

    def __iter__(self) -> Iterator[ReferenceSchool | Rejected]:
        seen = _SeenUais()
        several: dict[str, tuple[int, ReferenceSchool]] = {}  # UAI → its first line and school
        for record in self.table.records():
            if record.fields is None:
                yield Rejected(record.line_number, None, record.problem or "unreadable")
                continue
            item = self._row(record.fields, record.line_number)
            if isinstance(item, Rejected):
                yield item
            elif self._marked_several(record.fields):
                if item.uai in several:
                    several[item.uai] = self._merge(several[item.uai], item, record.line_number)
                    self.merged += 1
                elif not seen.add(item.uai):
                    yield Rejected(
                        record.line_number,
                        item.uai,
                        f"UAI {item.uai} appears earlier on a line not marked "
                        "etablissement_multi_lignes; row ignored",
                    )
                else:
                    several[item.uai] = (record.line_number, item)
            elif not seen.add(item.uai):
                yield Rejected(
                    record.line_number,
                    item.uai,
                    f"UAI {item.uai} appears earlier in the file; row ignored (several lines "
                    "for one establishment are marked etablissement_multi_lignes)",
                )
            else:
                yield item
        for _, school in several.values():
            yield school

    def _marked_several(self, fields: list[str]) -> bool:
        if self._multi_line is None or self._multi_line >= len(fields):
            return False
        return fields[self._multi_line].strip().upper() in ("1", "O", "OUI", "TRUE", "VRAI")

    def _merge(
        self, first: tuple[int, ReferenceSchool], later: ReferenceSchool, line_number: int
    ) -> tuple[int, ReferenceSchool]:
        first_line, school = first
        changes: dict[str, Any] = {}
        for name in MERGED_FIELDS:
            kept, other = getattr(school, name), getattr(later, name)
            if kept is None or kept == "":
                changes[name] = other
            elif other not in (None, "") and other != kept:
                self.flagged.append(
                    Flagged(
                        line_number,
                        school.uai,
                        f"{name} {other!r} differs from line {first_line}'s {kept!r}, kept",
                    )
                )
        if school.uai in self._doubtful_place:
            pass
        elif school.latitude is None or school.longitude is None:
            changes.update(latitude=later.latitude, longitude=later.longitude)
        elif later.latitude is not None and later.longitude is not None:
            apart = max(
                abs(school.latitude - later.latitude), abs(school.longitude - later.longitude)
            )
            if apart > SAME_PLACE_DEGREES:
                self._doubtful_place.add(school.uai)
                changes.update(latitude=None, longitude=None)
                self.flagged.append(
                    Flagged(
                        line_number,
                        school.uai,
                        f"coordinates {apart:.3f}° away from line {first_line}'s: both dropped",
                    )
                )
        return first_line, replace(school, **changes)

    def _row(self, row: list[str], line_number: int) -> ReferenceSchool | Rejected:
        item = _annuaire_row(row, line_number, self.table.index, self.table.width)
        if isinstance(item, Rejected):
            return item
        verdict = geography.check_place(
            uai_departement=_uai_departement(item.uai),
            departement=item.departement,
            commune_code=item.commune_code,
            latitude=item.latitude,
            longitude=item.longitude,
        )
        if verdict.rejection is not None:
            return Rejected(line_number, item.uai, verdict.rejection)
        for names, why in verdict.dropped:
            item = replace(item, **dict.fromkeys(names))
            self.flagged.append(Flagged(line_number, item.uai, why))
        if item.departement is None:
            item = replace(item, departement=_uai_departement(item.uai))
        return item


def _uai_departement(uai: str) -> str | None:
    try:
        return identifiers.uai_departement(uai)
    except InvalidIdentifier:
        return None


def _annuaire_row(
    row: list[str], line_number: int, index: dict[str, int], width: int
) -> ReferenceSchool | Rejected:
    def cell(column: str) -> str:
        position = index.get(column)
        if position is None or position >= len(row):
            return ""
        return row[position].strip()

    raw_uai = cell("identifiant_de_l_etablissement")
    if len(row) < width or any(extra.strip() for extra in row[width:]):
        return Rejected(
            line_number,
            raw_uai or None,
            f"{len(row)} fields where the header has {width} "
            "(a truncated line, or a delimiter inside an unquoted field?)",
        )
    problems: list[str] = []

    def check(column: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(cell(column))
        except ValueError as error:
            problems.append(f"{column}: {error}")
            return None

    uai = check("identifiant_de_l_etablissement", _uai)
    name = check("nom_etablissement", _required_text)
    kind = check("type_etablissement", _required_text) if "type_etablissement" in index else ""
    public_private = check("statut_public_prive", _public_private)
    postal_code = check("code_postal", _postal_code)
    commune_code = check("code_commune", _commune_code)
    departement = check("code_departement", _departement)
    education_prioritaire = check("appartenance_education_prioritaire", _education_prioritaire)
    latitude = check("latitude", lambda text: _coordinate(text, -90.0, 90.0))
    longitude = check("longitude", lambda text: _coordinate(text, -180.0, 180.0))
    if (latitude is None) != (longitude is None) and not any(
        p.startswith(("latitude", "longitude")) for p in problems
    ):
        problems.append("latitude/longitude: one is given without the other")
    pupils = check("nombre_d_eleves", _pupils)
    mail = _mail(cell("mail"))
    if problems:
        return Rejected(line_number, uai or raw_uai or None, "; ".join(problems))
    return ReferenceSchool(
        uai=uai,
        name=name,
        type=kind or "",
        public_private=public_private,
        postal_code=postal_code,
        commune_code=commune_code,
        commune_name=cell("nom_commune") or None,
        departement=departement,
        academie=cell("code_academie") or None,
        education_prioritaire=education_prioritaire,
        latitude=latitude,
        longitude=longitude,
        pupils=pupils,
        mail=mail,
    )


_MAILBOX = re.compile(r"^[^@\s;,<>\x00]{1,64}@[^@\s;,<>\x00]{1,185}\.[a-z]{2,}$")


def _mail(text: str) -> str | None:
    """The institutional mailbox (its domain lower-cased); a cell that is not one address leaves
    the school without a mailbox (its registration then waits for an operator), the row still
    imported."""
    local, at, domain_name = text.strip().rpartition("@")
    address = f"{local}{at}{domain_name.lower()}"
    return address if _MAILBOX.match(address) else None


def _uai(text: str) -> str:
    if not text:
        raise ValueError("the UAI is missing")
    return identifiers.uai(text)


def _required_text(text: str) -> str:
    if not text:
        raise ValueError("empty")
    return " ".join(text.split())


def _public_private(text: str) -> str | None:
    if not text:
        return None
    normalised = column_name(text)
    if normalised in {"public", "prive"}:
        return normalised
    raise ValueError(f"{text!r} is neither Public nor Privé")


def _zero_padded(text: str) -> str:
    # A spreadsheet turns 01000 into 1000: put the zero back.
    return text.zfill(5) if len(text) == 4 and text.isdigit() else text


def _postal_code(text: str) -> str | None:
    if not text:
        return None
    code = _zero_padded(text)
    if len(code) == 5 and code.isdigit():
        return code
    raise ValueError(f"postal code {text!r} is not 5 digits")


def _commune_code(text: str) -> str | None:
    return identifiers.insee_commune(_zero_padded(text)) if text else None


def _departement(text: str) -> str | None:
    return identifiers.departement(text) if text else None


def _education_prioritaire(text: str) -> str | None:
    status = text.upper().replace(" ", "")
    if not status:
        return None
    if status in EDUCATION_PRIORITAIRE:
        return status
    raise ValueError(f"{text!r} is not REP, REP+ or empty")


def _coordinate(text: str, low: float, high: float) -> float | None:
    if not text:
        return None
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{text} is outside [{low:g}, {high:g}]")
    return value


def _pupils(text: str) -> int | None:
    cleaned = text.replace(" ", "").replace("\u00a0", "").replace("\u202f", "")
    if not cleaned:
        return None
    try:
        number = float(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of pupils") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"{text!r} is not a number of pupils")
    return int(number)


# --- The éducation prioritaire list --------------------------------------------------------------


EP_WHAT = "an éducation prioritaire list"
# The ministry's national list of REP and REP+ networks ("liste des REP et REP+", one file per
# rentrée): a row per school (NUMERO) with its network's collège (UAI tête de réseau) and EP.
MINISTRY_UAI_COLUMN, MINISTRY_HEAD_COLUMN, MINISTRY_STATUS_COLUMN = (
    "numero",
    "uai_tete_de_reseau",
    "ep",
)
EP_DEPARTEMENT_COLUMNS = ("code_departement", "n_departement", "numero_departement")
_YEAR_IN_NAME = (
    re.compile(r"(?<![0-9])(20[0-9]{2})[-_ ]?(20[0-9]{2})(?![0-9])"),  # 2022-2023
    re.compile(r"rentree[-_ ]?(20[0-9]{2})(?![0-9])", re.IGNORECASE),  # rentree-2022
)


def _is_dataset_list(index: dict[str, int]) -> bool:
    return any(name in index for name in EP_UAI_COLUMNS) and any(
        EP_SCHOOL_YEAR.match(name) for name in index
    )


def _is_ministry_list(index: dict[str, int]) -> bool:
    return MINISTRY_UAI_COLUMN in index and MINISTRY_STATUS_COLUMN in index


def education_prioritaire_table(source: Source) -> Table:
    """The list's header read from ``source``: the dataset ``fr-en-etablissements-ep`` or the
    ministry's list of REP and REP+; :class:`ReferenceFormatError` when it is neither."""
    return Table(
        source,
        EP_WHAT,
        lambda index: _is_dataset_list(index) or _is_ministry_list(index),
        f"it needs a UAI column ({' or '.join(EP_UAI_COLUMNS)}) and a school-year column such as "
        "ep_2022_2023 (fr-en-etablissements-ep), or the ministry's list's NUMERO and EP columns",
    )


def school_year_column(text: str) -> str:
    """``2022-2023`` (or ``2022``, the rentrée) → ``ep_2022_2023``; ValueError otherwise."""
    match = re.fullmatch(r"(20[0-9]{2})(?:[-_/](20[0-9]{2}))?", text.strip())
    if match is None or (match[2] and int(match[2]) != int(match[1]) + 1):
        raise ValueError(f"school year {text!r}: expected two consecutive years, e.g. 2022-2023")
    return f"ep_{match[1]}_{int(match[1]) + 1}"


def school_year_in_name(name: str) -> str | None:
    """The school year a file's name gives (``liste-des-rep-et-rep-rentree-2022.csv`` →
    ``ep_2022_2023``), or None."""
    for pattern in _YEAR_IN_NAME:
        for match in pattern.finditer(name):
            first = int(match[1])
            if match.lastindex == 1 or int(match[2]) == first + 1:
                return f"ep_{first}_{first + 1}"
    return None


def parse_education_prioritaire(
    lines: Iterable[str], *, school_year: str | None = None, file_name: str = ""
) -> Iterator[PrioritaireStatus | Rejected]:
    """Parse an éducation prioritaire list, one row at a time (see
    :class:`EducationPrioritaireReading`); raises :class:`ReferenceFormatError` when the header is
    neither list's, or the ministry's list has no school year."""
    table = education_prioritaire_table(Source(lines))
    return iter(EducationPrioritaireReading(table, school_year=school_year, file_name=file_name))


class EducationPrioritaireReading:
    """One pass over an éducation prioritaire list, in either of its two forms:

    - the dataset ``fr-en-etablissements-ep``: a UAI column and one status column per school
      year (``ep_2022_2023``: REP, REP+ or empty, meaning not in éducation prioritaire); the
      latest year is read, or the one of ``school_year``;
    - the ministry's list of REP and REP+ (``liste-des-rep-et-rep-rentree-2022.csv``): a row per
      school of a network, its UAI in NUMERO and its status in EP (REP or REP+: the list names
      no other school, so schools absent from it are left as they are). Its school year is in
      no column: it comes from ``school_year`` (the ``--school-year`` option) or else from the
      file's name (``rentree-2022`` is 2022-2023). A row with no NUMERO names a network headed
      by an école rather than a collège (type ÉCOLE ISOLÉE, its UAI only as "UAI tête de
      réseau"); the école itself is on a row of its own: such a heading is counted, not read.

    A département column, when there is one, must agree with the UAI (else the row is rejected).
    """

    def __init__(self, table: Table, *, school_year: str | None, file_name: str) -> None:
        self.table = table
        self.headings = 0  # rows of the ministry's list naming a network, not a school
        index = table.index
        self.ministry = not _is_dataset_list(index)
        years = sorted(name for name in index if EP_SCHOOL_YEAR.match(name))
        if school_year is not None:
            column = school_year_column(school_year)
            if not self.ministry and column not in index:
                raise ReferenceFormatError(
                    f"the list has no {column} column (it has {', '.join(years)})"
                )
            self.school_year, self.school_year_from = column, "the --school-year option"
        elif not self.ministry:
            self.school_year, self.school_year_from = years[-1], f"its latest column, {years[-1]}"
        elif found := school_year_in_name(file_name):
            self.school_year, self.school_year_from = found, f"the file's name, {file_name}"
        else:
            raise ReferenceFormatError(
                "the ministry's list of REP and REP+ does not say its school year, nor does "
                f"its file name {file_name!r}: give it with --school-year 2022-2023"
            )
        if self.ministry:
            self._uai, self._status = index[MINISTRY_UAI_COLUMN], index[MINISTRY_STATUS_COLUMN]
            self._uai_name, self._status_name = MINISTRY_UAI_COLUMN, MINISTRY_STATUS_COLUMN
            self._head = index.get(MINISTRY_HEAD_COLUMN)
        else:
            self._uai_name = next(name for name in EP_UAI_COLUMNS if name in index)
            self._uai, self._status = index[self._uai_name], index[self.school_year]
            self._status_name, self._head = self.school_year, None
        self._departement = next((index[c] for c in EP_DEPARTEMENT_COLUMNS if c in index), None)
        flag = next((name for name in EP_QPV_FLAG_COLUMNS if name in index), None)
        code = next((name for name in EP_QPV_CODE_COLUMNS if name in index), None)
        self._flag = (flag, index[flag]) if flag else None
        self._code = (code, index[code]) if code else None

    def __iter__(self) -> Iterator[PrioritaireStatus | Rejected]:
        seen = _SeenUais()
        for record in self.table.records():
            if record.fields is None:
                yield Rejected(record.line_number, None, record.problem or "unreadable")
                continue
            if self._heading(record.fields):
                self.headings += 1
                continue
            item = self._row(record.fields, record.line_number)
            if isinstance(item, PrioritaireStatus) and not seen.add(item.uai):
                item = Rejected(
                    record.line_number,
                    item.uai,
                    f"UAI {item.uai} appears earlier in the file; row ignored",
                )
            yield item

    def _heading(self, row: list[str]) -> bool:
        """A row of the ministry's list naming a network, not a school: no NUMERO, a head."""
        return (
            self._head is not None
            and not _field(row, self._uai)
            and bool(_field(row, self._head))
            and len(row) == self.table.width
        )

    def _row(self, row: list[str], line_number: int) -> PrioritaireStatus | Rejected:
        raw_uai = _field(row, self._uai)
        if len(row) != self.table.width and any(c.strip() for c in row[self.table.width :]):
            return Rejected(
                line_number,
                raw_uai or None,
                f"{len(row)} fields where the header has {self.table.width}",
            )
        if self._status >= len(row):
            return Rejected(line_number, raw_uai or None, f"the line has no {self._status_name}")
        problems: list[str] = []
        uai = None
        try:
            uai = _uai(raw_uai)
        except ValueError as error:
            problems.append(f"{self._uai_name}: {error}")
        status = None
        try:
            status = _education_prioritaire(_field(row, self._status))
            if status is None and self.ministry:
                problems.append(f"{self._status_name}: empty; the list names REP and REP+ only")
        except ValueError as error:
            problems.append(f"{self._status_name}: {error}")
        if uai is not None and self._departement is not None:
            problems.extend(self._departement_problems(uai, _field(row, self._departement)))
        qpv_proximity, qpv_code = self._qpv(row, problems)
        if problems or uai is None:
            return Rejected(line_number, raw_uai or None, "; ".join(problems))
        return PrioritaireStatus(
            line_number, uai, status, self.school_year, qpv_proximity, qpv_code
        )

    def _departement_problems(self, uai: str, text: str) -> list[str]:
        if not text:
            return []
        try:
            departement = identifiers.departement(text.zfill(2))
        except InvalidIdentifier as error:
            return [f"département: {error}"]
        verdict = geography.check_place(
            uai_departement=_uai_departement(uai),
            departement=departement,
            commune_code=None,
            latitude=None,
            longitude=None,
        )
        return [verdict.rejection] if verdict.rejection else []

    def _qpv(self, row: list[str], problems: list[str]) -> tuple[bool | None, str | None]:
        qpv_proximity, qpv_code = None, None
        if self._flag is not None:
            name, position = self._flag
            flag = _field(row, position).upper()
            if flag in ("O", "OUI", "1", "TRUE"):
                qpv_proximity = True
            elif flag in ("N", "NON", "0", "FALSE"):
                qpv_proximity = False
            elif flag:
                problems.append(f"{name}: {flag!r} is not O or N")
        if self._code is not None and (code := _field(row, self._code[1])):
            try:
                qpv_code = identifiers.qpv(code)
            except identifiers.InvalidIdentifier as error:
                problems.append(f"{self._code[0]}: {error}")
            if qpv_proximity is None:
                qpv_proximity = True
        return qpv_proximity, qpv_code


def _field(row: list[str], position: int) -> str:
    return row[position].strip() if position < len(row) else ""


# --- The database --------------------------------------------------------------------------------

# `previous` is read in the statement's snapshot, before the upsert: a school is changed when it
# is new or its version moved. The version moves when a published column changes, or when the
# school was never published (version 0).
_UPSERT_SCHOOLS = """
WITH incoming AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::text[], $11::float8[], $12::float8[], $13::int4[],
        $14::text[]
    ) AS incoming (
        uai, name, type, public_private, postal_code, commune_code, commune_name, departement,
        academie, education_prioritaire, latitude, longitude, pupils, mail
    )
), previous AS (
    SELECT uai, version FROM reference_schools WHERE uai IN (SELECT uai FROM incoming)
), upserted AS (
    INSERT INTO reference_schools AS school (
        uai, name, type, public_private, postal_code, commune_code, commune_name, departement,
        academie, education_prioritaire, education_prioritaire_source, latitude, longitude,
        pupils, mail, version, updated_at
    )
    SELECT uai, name, type, public_private, postal_code, commune_code, commune_name,
           departement, academie, education_prioritaire, 'annuaire', latitude, longitude, pupils,
           mail, 1, now()
    FROM incoming
    ON CONFLICT (uai) DO UPDATE SET
        name = EXCLUDED.name,
        type = EXCLUDED.type,
        public_private = EXCLUDED.public_private,
        postal_code = EXCLUDED.postal_code,
        commune_code = EXCLUDED.commune_code,
        commune_name = EXCLUDED.commune_name,
        departement = EXCLUDED.departement,
        academie = EXCLUDED.academie,
        -- A status taken from the éducation prioritaire list outranks the annuaire's column.
        education_prioritaire = CASE WHEN school.education_prioritaire_source = 'annuaire'
            THEN EXCLUDED.education_prioritaire ELSE school.education_prioritaire END,
        latitude = EXCLUDED.latitude,
        longitude = EXCLUDED.longitude,
        pupils = EXCLUDED.pupils,
        mail = EXCLUDED.mail,
        version = school.version + CASE
            WHEN school.version = 0
              OR (school.name, school.type, school.public_private, school.commune_code,
                  school.commune_name, school.departement, school.academie, school.latitude,
                  school.longitude)
                 IS DISTINCT FROM
                 (EXCLUDED.name, EXCLUDED.type, EXCLUDED.public_private, EXCLUDED.commune_code,
                  EXCLUDED.commune_name, EXCLUDED.departement, EXCLUDED.academie,
                  EXCLUDED.latitude, EXCLUDED.longitude)
              OR (school.education_prioritaire_source = 'annuaire' AND
                  school.education_prioritaire IS DISTINCT FROM EXCLUDED.education_prioritaire)
            THEN 1 ELSE 0 END,
        updated_at = now()
    RETURNING school.*, (xmax = 0) AS inserted
)
SELECT school.inserted, school.version <> coalesce(previous.version, 0) AS changed,
       school.uai, school.name, school.type, school.public_private, school.departement,
       school.academie, school.commune_code, school.commune_name, school.education_prioritaire,
       school.qpv_proximity, school.qpv_code, school.latitude, school.longitude, school.version
FROM upserted AS school LEFT JOIN previous USING (uai)
"""

# One row per school of the list found in reference_schools: whether the list applied to it
# (not superseded by a later year's list) and whether that changed what is published of it.
_SET_EDUCATION_PRIORITAIRE = """
WITH incoming AS (
    SELECT * FROM unnest($1::text[], $2::text[], $4::boolean[], $5::text[])
        AS incoming (uai, status, qpv_proximity, qpv_code)
), target AS (
    SELECT school.uai, school.version, next.*,
           school.version = 0
           OR (school.education_prioritaire, school.qpv_proximity, school.qpv_code)
              IS DISTINCT FROM (next.education_prioritaire, next.qpv_proximity, next.qpv_code)
           AS changed
    FROM incoming
    JOIN reference_schools AS school USING (uai)
    CROSS JOIN LATERAL (
        SELECT incoming.status AS education_prioritaire,
               coalesce(incoming.qpv_proximity, school.qpv_proximity) AS qpv_proximity,
               CASE WHEN incoming.qpv_proximity IS NULL THEN school.qpv_code
                    ELSE incoming.qpv_code END AS qpv_code
    ) AS next
    WHERE school.education_prioritaire_source = 'annuaire'
       OR school.education_prioritaire_source <= $3
), updated AS (
    UPDATE reference_schools AS school
    SET education_prioritaire = target.education_prioritaire,
        education_prioritaire_source = $3,
        qpv_proximity = target.qpv_proximity,
        qpv_code = target.qpv_code,
        version = target.version + target.changed::int,
        updated_at = now()
    FROM target
    WHERE school.uai = target.uai
    RETURNING school.*
)
SELECT school.uai IS NOT NULL AS applied, coalesce(target.changed, false) AS changed,
       school.uai, school.name, school.type, school.public_private, school.departement,
       school.academie, school.commune_code, school.commune_name, school.education_prioritaire,
       school.qpv_proximity, school.qpv_code, school.latitude, school.longitude, school.version
FROM incoming
JOIN reference_schools AS found USING (uai)
LEFT JOIN target USING (uai)
LEFT JOIN updated AS school USING (uai)
"""

# Imports of reference schools take this lock for their whole transaction: one import at a time
# (it is also outbox.publish_many's lock for the topic, taken before the first batch), so the
# events of a school are in the order of the imports that wrote them.
_IMPORT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('registry.schools', 0))"


_LOOKUP_SCHOOL = """
SELECT uai, name, type, public_private, postal_code, commune_code, commune_name, departement,
       academie, education_prioritaire, latitude, longitude, pupils, education_prioritaire_source,
       qpv_proximity, qpv_code, mail
FROM reference_schools
WHERE uai = $1
"""


async def upsert_schools(
    connection: asyncpg.Connection, batch: Sequence[ReferenceSchool]
) -> tuple[int, int, int]:
    """Insert or update ``batch`` (distinct UAIs) in one statement and publish the schools that
    are new or changed; return (inserted, updated, published)."""
    if not batch:
        return 0, 0, 0
    columns = [[getattr(school, attribute) for school in batch] for attribute in ANNUAIRE_COLUMNS]
    rows = await connection.fetch(_UPSERT_SCHOOLS, *columns)
    inserted = sum(1 for row in rows if row["inserted"])
    published = await publish_schools(connection, [row for row in rows if row["changed"]])
    return inserted, len(rows) - inserted, published


async def set_education_prioritaire(
    connection: asyncpg.Connection, batch: Sequence[PrioritaireStatus], school_year: str
) -> tuple[int, int, int]:
    """Apply ``batch`` of statuses from ``school_year``'s list and publish the schools it
    changed; return (updated, not found, published)."""
    if not batch:
        return 0, 0, 0
    rows = await connection.fetch(
        _SET_EDUCATION_PRIORITAIRE,
        [entry.uai for entry in batch],
        [entry.status for entry in batch],
        school_year,
        [entry.qpv_proximity for entry in batch],
        [entry.qpv_code for entry in batch],
    )
    published = await publish_schools(connection, [row for row in rows if row["changed"]])
    return sum(1 for row in rows if row["applied"]), len(batch) - len(rows), published


async def publish_schools(connection: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> int:
    """Record a ``SchoolReferenced`` event per row in the outbox, in one statement; return how
    many. Called inside the import's transaction (a national import is too many events for
    ``outbox.publish``'s lock per key: see ``outbox.publish_many``)."""
    events = [
        SchoolReferenced(**{name: row[name] for name in SchoolReferenced.model_fields})
        for row in rows
    ]
    return len(await publish_many(connection, events))


async def lookup_school(connection: asyncpg.Connection, uai: str) -> ReferenceSchool | None:
    """The reference row of the school ``uai``, or None when the annuaire does not list it.

    Raises :class:`InvalidIdentifier` when ``uai`` is not a valid UAI.
    """
    code = identifiers.uai(uai)
    record = await connection.fetchrow(_LOOKUP_SCHOOL, code)
    return None if record is None else ReferenceSchool(**dict(record))


async def import_annuaire(
    pool: asyncpg.Pool,
    path: Path,
    *,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportSummary:
    """Import the Annuaire de l'éducation CSV at ``path`` into ``reference_schools``.

    Streams the file in batches of ``batch_size`` rows, all in one transaction: either the whole
    file is imported (its bad rows listed in the summary) or, on a database error, nothing is.
    Raises :class:`ReferenceFormatError` when the file is not an annuaire.
    """
    summary, _ = await import_reference(
        pool, path, annuaire_progress=progress, batch_size=batch_size
    )
    assert summary is not None
    return summary


async def import_education_prioritaire(
    pool: asyncpg.Pool,
    path: Path,
    *,
    school_year: str | None = None,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> EducationPrioritaireSummary:
    """Set the REP/REP+ status of the schools listed in the éducation prioritaire CSV at ``path``.

    Import the annuaire first: a UAI of the list that is not in ``reference_schools`` is counted
    as not found. One transaction for the whole file.
    """
    _, summary = await import_reference(
        pool,
        None,
        path,
        school_year=school_year,
        education_prioritaire_progress=progress,
        batch_size=batch_size,
    )
    assert summary is not None
    return summary


async def import_reference(
    pool: asyncpg.Pool,
    annuaire: Path | None,
    education_prioritaire: Path | None = None,
    *,
    school_year: str | None = None,
    annuaire_progress: Progress | None = None,
    education_prioritaire_progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> tuple[ImportSummary | None, EducationPrioritaireSummary | None]:
    """Import the annuaire, then apply the éducation prioritaire list, in one transaction.

    Both headers are read before anything is written, so a file in the wrong format is refused
    (:class:`ReferenceFormatError`) with nothing changed; a database error, or a refusal found
    while reading, rolls back both files. ``school_year`` (``2022-2023``) is the list's school
    year when it does not say it itself (the ministry's list); else it comes from its file name.
    """
    readings: list[tuple[Source, Iterable[Any], Progress | None]] = []
    annuaire_reading = ep_reading = None
    if annuaire is not None:
        source = Source.of_file(Path(annuaire))
        annuaire_reading = AnnuaireReading(annuaire_table(source))
        readings.append((source, annuaire_reading, annuaire_progress))
    if education_prioritaire is not None:
        source = Source.of_file(Path(education_prioritaire))
        ep_reading = EducationPrioritaireReading(
            education_prioritaire_table(source),
            school_year=school_year,
            file_name=Path(education_prioritaire).name,
        )
        readings.append((source, ep_reading, education_prioritaire_progress))
    summary = ep_summary = None

    async def upsert(connection: asyncpg.Connection, batch: list[ReferenceSchool]) -> None:
        assert summary is not None
        inserted, updated, published = await upsert_schools(connection, batch)
        summary.inserted += inserted
        summary.updated += updated
        summary.published += published

    async def set_statuses(connection: asyncpg.Connection, batch: list[PrioritaireStatus]) -> None:
        assert ep_summary is not None
        assert ep_reading is not None
        updated, not_found, published = await set_education_prioritaire(
            connection, batch, ep_reading.school_year
        )
        ep_summary.updated += updated
        ep_summary.not_found += not_found
        ep_summary.published += published
        ep_summary.superseded += len(batch) - updated - not_found

    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(_IMPORT_LOCK)
        if annuaire_reading is not None:
            summary = ImportSummary(delimiter=annuaire_reading.table.delimiter_name)
            summary.rejected = await _import_in_batches(
                connection,
                annuaire_reading.table.source,
                annuaire_reading,
                upsert,
                progress=annuaire_progress,
                batch_size=batch_size,
            )
            count = annuaire_reading.table.count
            summary.merged, summary.flagged = annuaire_reading.merged, annuaire_reading.flagged
            summary.lines, summary.blank, summary.continued = (
                count.lines,
                count.blank,
                count.continued,
            )
        if ep_reading is not None:
            ep_summary = EducationPrioritaireSummary(
                school_year=ep_reading.school_year,
                school_year_from=ep_reading.school_year_from,
                delimiter=ep_reading.table.delimiter_name,
            )
            ep_summary.rejected = await _import_in_batches(
                connection,
                ep_reading.table.source,
                ep_reading,
                set_statuses,
                progress=education_prioritaire_progress,
                batch_size=batch_size,
            )
            count = ep_reading.table.count
            ep_summary.headings = ep_reading.headings
            ep_summary.lines, ep_summary.blank = count.lines, count.blank
            ep_summary.continued = count.continued
    return summary, ep_summary


async def _import_in_batches(
    connection: asyncpg.Connection,
    source: Source,
    parsed: Iterable[T | Rejected],
    apply: Callable[[asyncpg.Connection, list[T]], Awaitable[None]],
    *,
    progress: Progress | None,
    batch_size: int,
) -> list[Rejected]:
    """Apply the good rows in batches of ``batch_size`` on ``connection`` (inside the import's
    transaction, under its lock); return the rejected rows."""
    rejected: list[Rejected] = []
    batch: list[T] = []
    rows = 0
    for item in parsed:
        rows += 1
        if isinstance(item, Rejected):
            rejected.append(item)
        else:
            batch.append(item)
        if rows % batch_size == 0:
            if batch:
                await apply(connection, batch)
                batch = []
            if progress is not None:
                progress(source.bytes_read, rows)
    if batch:
        await apply(connection, batch)
    if progress is not None:
        progress(source.bytes_read, rows)
    return rejected
