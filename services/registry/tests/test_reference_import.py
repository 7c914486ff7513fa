"""The schools' reference data: parsing the official CSVs and importing them into PostgreSQL."""

from __future__ import annotations

import csv
import resource
import time
import tracemalloc
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from maillage.cli import registry as registry_cli
from maillage.common.catalog import SchoolReferenced
from maillage.registry import identifiers, reference
from maillage.registry.reference import (
    ReferenceFormatError,
    ReferenceSchool,
    Rejected,
    import_annuaire,
    import_education_prioritaire,
    lookup_school,
    parse_annuaire,
    parse_education_prioritaire,
)

DATA = Path(reference.__file__).parent / "data"
DEMO_ANNUAIRE = DATA / "annuaire-education-demo-94.csv"
DEMO_EP = DATA / "education-prioritaire-demo-94.csv"
MALFORMED = Path(__file__).parent / "data" / "annuaire-malformed.csv"
DEMO_ROWS = 46
DEMO_EP_ROWS = 22


async def statuses(pool: asyncpg.Pool) -> dict[str, tuple[str | None, str]]:
    rows = await pool.fetch(
        "SELECT uai, education_prioritaire, education_prioritaire_source FROM reference_schools"
    )
    return {
        row["uai"]: (row["education_prioritaire"], row["education_prioritaire_source"])
        for row in rows
    }


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, delimiter=";", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def uai_for(number: int) -> str:
    digits = f"{number:07d}"
    return digits + identifiers.uai_check_letter(digits)


def wrong_letter(digits: str) -> str:
    return digits + ("B" if identifiers.uai_check_letter(digits) == "A" else "A")


# --- The demo sample ---------------------------------------------------------------------------


def test_the_demo_sample_holds_valid_val_de_marne_colleges_and_lycees() -> None:
    with DEMO_ANNUAIRE.open(encoding="utf-8", newline="") as file:
        items = list(parse_annuaire(file))
    assert len(items) == DEMO_ROWS
    assert all(isinstance(item, ReferenceSchool) for item in items)
    schools = {item.uai: item for item in items if isinstance(item, ReferenceSchool)}
    for school in schools.values():
        assert identifiers.uai(school.uai) == school.uai  # the check letter holds
        assert school.uai.startswith("094")
        assert school.departement == "94"
        assert school.type in {"Collège", "Lycée"}
        assert (school.commune_code or "").startswith("94")
        assert 48.7 < (school.latitude or 0) < 48.83
        assert 2.37 < (school.longitude or 0) < 2.55
        assert 300 < (school.pupils or 0) < 2000
    names = {school.name: school for school in schools.values()}
    desnos = names["Collège Robert Desnos"]
    assert (desnos.uai, desnos.commune_name, desnos.commune_code) == ("0940123Y", "Orly", "94054")
    assert desnos.education_prioritaire == "REP+"
    flagon = names["Collège Fernande Flagon"]
    assert (flagon.commune_name, flagon.commune_code) == ("Valenton", "94074")
    communes = {school.commune_code for school in schools.values()}
    assert {"94054", "94074", "94028", "94017", "94078", "94022", "94081", "94041"} <= communes
    assert {school.education_prioritaire for school in schools.values()} == {None, "REP", "REP+"}
    # Higher education (EFREI, UPEC) is not in the annuaire of schools.
    assert not [name for name in names if "EFREI" in name or "UPEC" in name]
    assert "demo sample" in (DATA / "README.md").read_text(encoding="utf-8")


async def test_importing_the_demo_sample_inserts_every_row_then_updates_them(
    pool: asyncpg.Pool,
) -> None:
    first = await import_annuaire(pool, DEMO_ANNUAIRE)
    assert (first.inserted, first.updated, first.rejected) == (DEMO_ROWS, 0, [])
    assert await pool.fetchval("SELECT count(*) FROM reference_schools") == DEMO_ROWS
    before = await pool.fetchval("SELECT max(updated_at) FROM reference_schools")

    again = await import_annuaire(pool, DEMO_ANNUAIRE)
    assert (again.inserted, again.updated, again.rejected) == (0, DEMO_ROWS, [])
    assert await pool.fetchval("SELECT count(*) FROM reference_schools") == DEMO_ROWS
    assert await pool.fetchval("SELECT min(updated_at) FROM reference_schools") > before


async def test_lookup_school_returns_the_reference_row(pool: asyncpg.Pool) -> None:
    await import_annuaire(pool, DEMO_ANNUAIRE)
    async with pool.acquire() as connection:
        desnos = await lookup_school(connection, " 0940123y ")
        assert desnos == ReferenceSchool(
            uai="0940123Y",
            name="Collège Robert Desnos",
            type="Collège",
            public_private="public",
            postal_code="94310",
            commune_code="94054",
            commune_name="Orly",
            departement="94",
            academie="24",
            education_prioritaire="REP+",
            latitude=desnos.latitude,
            longitude=desnos.longitude,
            pupils=520,
            mail="ce.0940123Y@ac-creteil.fr",  # the Annuaire's Mail column (institutional)
            education_prioritaire_source="annuaire",
        )
        assert abs((desnos.latitude or 0) - 48.7435) < 0.01
        assert await lookup_school(connection, "0750654D") is None  # valid, not in the sample
        with pytest.raises(identifiers.InvalidIdentifier):
            await lookup_school(connection, "0940123A")


# --- Malformed rows ----------------------------------------------------------------------------

MALFORMED_REJECTIONS = [
    (
        3,
        "0940123A",
        "identifiant_de_l_etablissement: L'UAI 0940123A a la lettre clé A ; 0940123 appelle la "
        "lettre Y",
    ),
    (4, "0942001P", "nom_etablissement: empty"),
    (5, "0942002R", "latitude: '48.7x' is not a number"),
    (6, "0942003S", "latitude: 148.7 is outside [-90, 90]"),
    (7, "0942004T", "appartenance_education_prioritaire: 'ECLAIR' is not REP, REP+ or empty"),
    (
        10,
        "0942006V",
        "code_commune: Code commune INSEE 20004 : les communes corses sont numérotées 2A###",
    ),
    (11, "0942007W", "5 fields where the header has 14"),
    (12, "0940123Y", "UAI 0940123Y appears earlier in the file; row ignored"),
    (15, None, "identifiant_de_l_etablissement: the UAI is missing"),
    (16, "0942008X", "nombre_d_eleves: '-3' is not a number of pupils"),
    (18, "0942009Y", "statut_public_prive: 'Associatif' is neither Public nor Privé"),
    (19, "0942010Z", "latitude/longitude: one is given without the other"),
    (20, "0942011B", "identifiant_de_l_etablissement: L'UAI 0942011B a la lettre clé B"),
]


async def test_malformed_rows_are_rejected_precisely_and_the_good_rows_imported(
    pool: asyncpg.Pool,
) -> None:
    summary = await import_annuaire(pool, MALFORMED)
    got = [(row.line_number, row.uai, row.reason) for row in summary.rejected]
    assert [(line, uai) for line, uai, _ in got] == [
        (line, uai) for line, uai, _ in MALFORMED_REJECTIONS
    ]
    for (_, _, reason), (_, _, expected) in zip(got, MALFORMED_REJECTIONS, strict=True):
        assert reason.startswith(expected), (reason, expected)
    # Several problems of one row are all given.
    assert got[-1][2].endswith(
        "; nom_etablissement: empty; "
        "appartenance_education_prioritaire: 'REP++' is not REP, REP+ or empty"
    )
    assert (summary.inserted, summary.updated) == (4, 0)

    rows = {row["uai"]: row for row in await pool.fetch("SELECT * FROM reference_schools")}
    assert set(rows) == {"0940123Y", "0942005U", "6200001G", "0941234F"}
    # The header's BOM, labels ("Code postal") and CRLF endings are tolerated; a quoted name keeps
    # its ';' and quotes; Corsica keeps 2A; a decimal comma is read; the status is normalised.
    assert rows["0940123Y"]["postal_code"] == "94310"
    assert rows["0942005U"]["name"] == 'Lycée "Le Parc"; site B annexe'
    assert (rows["6200001G"]["commune_code"], rows["6200001G"]["departement"]) == ("2A004", "2A")
    assert (rows["0941234F"]["latitude"], rows["0941234F"]["longitude"]) == (48.7875, 2.3928)
    assert rows["0941234F"]["public_private"] == "prive"


def test_rejections_read_well() -> None:
    assert str(Rejected(12, "0940123A", "bad letter")) == "line 12 (0940123A): bad letter"
    assert str(Rejected(15, None, "the UAI is missing")) == "line 15: the UAI is missing"


def test_unknown_columns_are_ignored_in_any_order() -> None:
    lines = [
        "\ufeffLatitude;Fax;Nom_etablissement;Identifiant_de_l_etablissement;Type_etablissement;"
        "Longitude;Code_departement\n",
        "48.79;01 02 03 04 05;Lycée Léon Blum;0940123Y;Lycée;2.45;094\n",
        "\n",
        ";;Collège sans UAI;;Collège;;\n",
    ]
    items = list(parse_annuaire(lines))
    assert items == [
        ReferenceSchool(
            uai="0940123Y",
            name="Lycée Léon Blum",
            type="Lycée",
            departement="94",
            latitude=48.79,
            longitude=2.45,
        ),
        Rejected(4, None, "identifiant_de_l_etablissement: the UAI is missing"),
    ]


def test_an_unreadable_record_is_rejected_and_the_next_ones_read() -> None:
    lines = [
        "identifiant_de_l_etablissement;nom_etablissement;type_etablissement\n",
        "0940123Y;" + "x" * 200_000 + ";Collège\n",  # past the csv module's field size limit
        "0750654D;Lycée Henri-IV;Lycée\n",
    ]
    rejected, school = parse_annuaire(lines)
    assert rejected == Rejected(2, None, "unreadable CSV: field larger than field limit (131072)")
    assert isinstance(school, ReferenceSchool)
    assert school.uai == "0750654D"


def test_the_departement_comes_from_the_uai_when_the_column_is_empty() -> None:
    lines = [
        "identifiant_de_l_etablissement;nom_etablissement;type_etablissement;code_departement\n"
    ]
    lines.append("6200001G;Collège Fesch;Collège;\n")
    (school,) = parse_annuaire(lines)
    assert isinstance(school, ReferenceSchool)
    assert school.departement == "2A"


async def test_a_file_that_is_not_an_annuaire_imports_nothing(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    wrong = write_csv(tmp_path / "wrong.csv", ["uai", "name"], [["0940123Y", "Collège"]])
    with pytest.raises(
        ReferenceFormatError,
        match="it needs the columns identifiant_de_l_etablissement and nom_etablissement",
    ):
        await import_annuaire(pool, wrong)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ReferenceFormatError, match="empty"):
        await import_annuaire(pool, empty)
    assert await pool.fetchval("SELECT count(*) FROM reference_schools") == 0


@pytest.mark.parametrize("delimiter", [";", ",", "\t"])
async def test_the_delimiter_is_found_from_the_header(
    pool: asyncpg.Pool, tmp_path: Path, delimiter: str
) -> None:
    path = tmp_path / "annuaire.csv"
    path.write_text(
        f"identifiant_de_l_etablissement{delimiter}nom_etablissement{delimiter}nom_commune\n"
        f'0940123Y{delimiter}"Collège Robert Desnos; Orly, 94"{delimiter}Orly\n',
        encoding="utf-8",
    )
    summary = await import_annuaire(pool, path)
    assert (summary.inserted, summary.rejected) == (1, [])
    assert summary.delimiter == {";": "';'", ",": "','", "\t": "tab"}[delimiter]
    name = await pool.fetchval("SELECT name FROM reference_schools")
    assert name == "Collège Robert Desnos; Orly, 94"


async def test_a_windows_1252_file_is_read(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = tmp_path / "cp1252.csv"
    path.write_bytes(
        "identifiant_de_l_etablissement;nom_etablissement;type_etablissement\n"
        "0940123Y;Collège Robert Desnos;Collège\n".encode("cp1252")
    )
    summary = await import_annuaire(pool, path)
    assert summary.inserted == 1
    async with pool.acquire() as connection:
        school = await lookup_school(connection, "0940123Y")
    assert school is not None
    assert school.name == "Collège Robert Desnos"


# --- The éducation prioritaire list ------------------------------------------------------------


async def test_the_demo_education_prioritaire_list_sets_the_latest_year(pool: asyncpg.Pool) -> None:
    await import_annuaire(pool, DEMO_ANNUAIRE)
    summary = await import_education_prioritaire(pool, DEMO_EP)
    assert summary.school_year == "ep_2023_2024"
    assert (summary.updated, summary.not_found, summary.superseded, summary.rejected) == (
        DEMO_EP_ROWS,
        0,
        0,
        [],
    )
    jean_moulin = await pool.fetchrow(
        "SELECT education_prioritaire, education_prioritaire_source FROM reference_schools"
        " WHERE name = 'Collège Jean Moulin'"
    )
    # REP in the 2022-2023 column, REP+ in 2023-2024: the latest year wins.
    assert tuple(jean_moulin) == ("REP+", "ep_2023_2024")


async def test_the_education_prioritaire_list_overrides_the_annuaire(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await import_annuaire(pool, DEMO_ANNUAIRE)
    zola = await pool.fetchval(
        "SELECT uai FROM reference_schools WHERE name = 'Collège Émile Zola'"
    )
    dorval = await pool.fetchval("SELECT uai FROM reference_schools WHERE name = 'Collège Dorval'")
    before = await statuses(pool)
    assert (before["0940123Y"], before[zola], before[dorval]) == (
        ("REP+", "annuaire"),
        (None, "annuaire"),
        ("REP", "annuaire"),
    )
    unknown = uai_for(959_999)  # Val-d'Oise: not in the sample
    ep_list = write_csv(
        tmp_path / "fr-en-etablissements-ep.csv",
        ["UAI", "Nom", "ep_2023_2024", "ep_2024_2025", "uai_tete_de_reseau"],
        [
            ["0940123Y", "Collège Robert Desnos", "REP+", "", "0940123Y"],  # leaves EP
            [zola, "Collège Émile Zola", "", "REP", zola],  # enters EP
            [dorval, "Collège Dorval", "REP", "rep +", dorval],  # REP → REP+ (spelling tolerated)
            [unknown, "Collège absent de l'annuaire", "", "REP", unknown],
            ["0940123A", "Mauvaise lettre", "", "REP", ""],
            [zola, "Collège Émile Zola (doublon)", "", "REP", zola],
            ["0941147L", "Statut inconnu", "", "ECLAIR", ""],
        ],
    )
    summary = await import_education_prioritaire(pool, ep_list)
    assert summary.school_year == "ep_2024_2025"
    assert (summary.updated, summary.not_found, summary.superseded) == (3, 1, 0)
    assert [(row.line_number, row.uai, row.reason) for row in summary.rejected] == [
        (
            6,
            "0940123A",
            "uai: L'UAI 0940123A a la lettre clé A ; 0940123 appelle la lettre Y "
            "(0940123 modulo 23 = 21).",
        ),
        (7, zola, f"UAI {zola} appears earlier in the file; row ignored"),
        (8, "0941147L", "ep_2024_2025: 'ECLAIR' is not REP, REP+ or empty"),
    ]
    after = await statuses(pool)
    assert after["0940123Y"] == (None, "ep_2024_2025")
    assert after[zola] == ("REP", "ep_2024_2025")
    assert after[dorval] == ("REP+", "ep_2024_2025")
    assert unknown not in after

    # Re-importing the annuaire does not undo the list; an older list does not either.
    again = await import_annuaire(pool, DEMO_ANNUAIRE)
    assert again.updated == DEMO_ROWS
    assert await statuses(pool) == after
    older = write_csv(tmp_path / "older.csv", ["uai", "ep_2019_2020"], [[zola, "REP+"]])
    stale = await import_education_prioritaire(pool, older)
    assert (stale.school_year, stale.updated, stale.superseded) == ("ep_2019_2020", 0, 1)
    assert (await statuses(pool))[zola] == ("REP", "ep_2024_2025")


def test_an_education_prioritaire_list_needs_a_uai_and_a_school_year_column() -> None:
    with pytest.raises(ReferenceFormatError, match="school-year column such as ep_2022_2023"):
        list(
            parse_education_prioritaire(
                ["uai;appartenance_education_prioritaire\n", "0940123Y;REP+\n"]
            )
        )
    with pytest.raises(ReferenceFormatError, match="needs a UAI column"):
        list(parse_education_prioritaire(["etablissement;ep_2022_2023\n", "0940123Y;REP+\n"]))


# --- A national-size file ----------------------------------------------------------------------

LARGE_ROWS = 20_000
LARGE_HEADER = [
    "identifiant_de_l_etablissement",
    "nom_etablissement",
    "type_etablissement",
    "statut_public_prive",
    "adresse_1",
    "code_postal",
    "code_commune",
    "nom_commune",
    "code_departement",
    "code_academie",
    "code_region",
    "telephone",
    "mail",
    "appartenance_education_prioritaire",
    "nombre_d_eleves",
    "libelle_departement",
    "libelle_academie",
    "latitude",
    "longitude",
    "etat",
]


def write_large_annuaire(path: Path) -> Path:
    statuses = ["", "", "REP", "REP+"]
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, delimiter=";", lineterminator="\n")
        writer.writerow(LARGE_HEADER)
        for index in range(LARGE_ROWS):
            code = uai_for(940_000 + index)  # 0940000… then 0950000…: a UAI numbers 10,000
            departement = code[:3]
            writer.writerow(
                [
                    code,
                    f"Collège numéro {index}",
                    "Collège" if index % 3 else "Ecole",
                    "Public" if index % 7 else "Privé",
                    f"{index} rue de l'École",
                    "94310",
                    f"{departement[1:]}054",
                    "Orly",
                    departement,
                    "24",
                    "11",
                    "01 48 00 00 00",
                    f"ce.{code}@ac-creteil.fr",
                    statuses[index % 4],
                    str(200 + index % 900),
                    "Val-de-Marne",
                    "Créteil",
                    f"{(48.70 if departement == '094' else 49.05) + (index % 1000) / 10_000:.6f}",
                    f"{2.35 + (index % 997) / 10_000:.6f}",
                    "OUVERT",
                ]
            )
    return path


async def test_a_large_file_imports_in_batches_with_flat_memory(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    path = write_large_annuaire(tmp_path / "annuaire-large.csv")
    size = path.stat().st_size
    calls: list[tuple[int, int]] = []

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    summary = await import_annuaire(pool, path, progress=lambda b, r: calls.append((b, r)))
    elapsed = time.perf_counter() - started
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert (summary.inserted, summary.updated, summary.rejected) == (LARGE_ROWS, 0, [])
    assert await pool.fetchval("SELECT count(*) FROM reference_schools") == LARGE_ROWS
    # One progress report per batch of 1,000 rows, bytes and rows growing, the end reported.
    assert len(calls) == LARGE_ROWS // reference.BATCH_SIZE + 1
    assert calls == sorted(calls)
    assert calls[-1] == (size, LARGE_ROWS)
    assert rss_growth < 50 * 1024, f"peak RSS grew by {rss_growth / 1024:.1f} MiB"

    tracemalloc.start()
    try:
        again = await import_annuaire(pool, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (again.inserted, again.updated) == (0, LARGE_ROWS)
    # Each school was published once, by the first import; the re-import changed nothing.
    assert (summary.published, again.published) == (LARGE_ROWS, 0)
    assert await pool.fetchval("SELECT count(DISTINCT key) FROM outbox") == LARGE_ROWS
    assert await pool.fetchval("SELECT count(*) FROM outbox") == LARGE_ROWS
    # Loading the file's rows at once would take tens of MiB; a batch takes well under one.
    assert peak < 8 * 1024 * 1024, f"peak Python allocations {peak / 2**20:.1f} MiB"
    print(
        f"\n{LARGE_ROWS} rows ({size / 2**20:.1f} MiB) in {elapsed:.2f} s: "
        f"{LARGE_ROWS / elapsed:,.0f} rows/s; peak RSS growth {rss_growth / 1024:.1f} MiB; "
        f"peak traced allocations (re-import) {peak / 2**20:.1f} MiB"
    )


# --- The command ---------------------------------------------------------------------------------


def test_the_command_imports_the_demo_sample_and_lists_rejections(
    database_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        registry_cli.app,
        [
            "import-annuaire",
            str(DEMO_ANNUAIRE),
            "--education-prioritaire",
            str(DEMO_EP),
            "--database-url",
            database_url,
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        f"(';'-separated): {DEMO_ROWS} lines: {DEMO_ROWS} inserted, 0 updated, 0 merged into an "
        "earlier line of the same UAI, 0 rejected, 0 blank" in result.stdout
    )
    assert (
        "school year ep_2023_2024 (from its latest column, ep_2023_2024): "
        f"{DEMO_EP_ROWS} lines: {DEMO_EP_ROWS} statuses set, 0 UAIs not in the annuaire, "
        "0 already set by a later list, 0 rejected" in result.stdout
    )

    # The database URL from the environment; malformed rows listed with line and reason.
    result = runner.invoke(
        registry_cli.app,
        ["import-annuaire", str(MALFORMED)],
        env={"REGISTRY_DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    assert (
        "19 lines: 3 inserted, 1 updated, 0 merged into an earlier line of the same UAI, "
        "13 rejected, 1 blank, 1 continuing a quoted field" in result.stdout
    )
    assert (
        "  rejected line 3 (0940123A): identifiant_de_l_etablissement: L'UAI 0940123A a la "
        "lettre clé A" in result.stdout
    )
    assert "  rejected line 15: identifiant_de_l_etablissement: the UAI is missing" in result.stdout

    # Only the first 50 rejections are listed.
    many = write_csv(
        tmp_path / "many.csv",
        ["identifiant_de_l_etablissement", "nom_etablissement", "type_etablissement"],
        [[wrong_letter(f"09401{index:02d}"), "Collège", "Collège"] for index in range(60)],
    )
    result = runner.invoke(
        registry_cli.app, ["import-annuaire", str(many), "--database-url", database_url]
    )
    assert result.exit_code == 0, result.output
    listed = [line for line in result.stdout.splitlines() if line.startswith("  rejected line")]
    assert len(listed) == registry_cli.SHOWN_REJECTIONS
    assert "  … and 10 more rejected" in result.stdout


def test_the_command_explains_a_file_in_the_wrong_format(database_url: str, tmp_path: Path) -> None:
    wrong = write_csv(tmp_path / "wrong.csv", ["uai", "name"], [["0940123Y", "Collège"]])
    result = CliRunner().invoke(
        registry_cli.app, ["import-annuaire", str(wrong), "--database-url", database_url]
    )
    assert result.exit_code == 1
    assert "not an Annuaire de l'éducation CSV" in result.output


def test_the_education_prioritaire_list_gives_qpv_proximity() -> None:
    from maillage.registry.reference import PrioritaireStatus, Rejected, parse_education_prioritaire

    lines = [
        "uai;ep_2023_2024;qp_a_proximite_o_n;code_qp_a_proximite",
        "0940123Y;REP+;O;QN09407A",
        "0941147L;REP;N;",
        "0940184P;REP;O;QX123",
        "0942815Z;;;",
    ]
    parsed = list(parse_education_prioritaire(lines))
    statuses = [p for p in parsed if isinstance(p, PrioritaireStatus)]
    assert [(s.uai, s.qpv_proximity, s.qpv_code) for s in statuses] == [
        ("0940123Y", True, "QN09407A"),
        ("0941147L", False, None),
        ("0942815Z", None, None),
    ]
    [rejected] = [p for p in parsed if isinstance(p, Rejected)]
    assert rejected.uai == "0940184P"
    assert "QX123" in rejected.reason


# --- Reference schools published on registry.schools --------------------------------------------


async def outbox_schools(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """The school events of the registry's outbox, oldest first, with their envelope checked."""
    rows = await pool.fetch("SELECT * FROM outbox ORDER BY id")
    events = []
    for row in rows:
        headers = row["headers"]  # the pool decodes jsonb
        assert (row["topic"], row["type"]) == (
            "registry.schools",
            "fr.maillage.registry.school.referenced.v1",
        )
        assert headers["ce_type"] == row["type"]
        assert headers["ce_id"] == str(row["event_id"])
        assert headers["ce_source"] == "/maillage/registry"
        assert headers["ce_subject"] == row["key"]
        payload = SchoolReferenced.model_validate_json(row["payload"])  # the catalog's model
        assert payload.uai == row["key"]
        events.append(payload.model_dump())
    return events


async def test_an_import_publishes_new_and_changed_schools_once(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    first = await import_annuaire(pool, DEMO_ANNUAIRE)
    events = await outbox_schools(pool)
    assert first.published == len(events) == DEMO_ROWS
    desnos = next(event for event in events if event["uai"] == "0940123Y")
    assert desnos == {
        "uai": "0940123Y",
        "name": "Collège Robert Desnos",
        "type": "Collège",
        "public_private": "public",
        "departement": "94",
        "academie": "24",
        "commune_code": "94054",
        "commune_name": "Orly",
        "education_prioritaire": "REP+",
        "qpv_proximity": None,
        "qpv_code": None,
        "latitude": desnos["latitude"],
        "longitude": desnos["longitude"],
        "version": 1,
    }
    assert abs(desnos["latitude"] - 48.744249) < 1e-9

    # The list gives every listed school its QPV proximity (and Jean Moulin becomes REP+).
    listed = await import_education_prioritaire(pool, DEMO_EP)
    events = await outbox_schools(pool)
    assert listed.published == len(events) - DEMO_ROWS == DEMO_EP_ROWS
    jean_moulin = next(e for e in events[DEMO_ROWS:] if e["name"] == "Collège Jean Moulin")
    assert (jean_moulin["education_prioritaire"], jean_moulin["qpv_code"]) == ("REP+", "QN09403B")
    assert jean_moulin["version"] == 2

    # The same files again: nothing changed, nothing published (the rows are still updated).
    again = await import_annuaire(pool, DEMO_ANNUAIRE)
    listed_again = await import_education_prioritaire(pool, DEMO_EP)
    assert (again.updated, again.published) == (DEMO_ROWS, 0)
    assert (listed_again.updated, listed_again.published) == (DEMO_EP_ROWS, 0)
    assert len(await outbox_schools(pool)) == DEMO_ROWS + DEMO_EP_ROWS

    # A renamed school and a new pupil count: only the renamed one is published, at version 3;
    # the annuaire's REP column does not undo the list's status.
    text = DEMO_ANNUAIRE.read_text(encoding="utf-8")
    changed = tmp_path / "annuaire.csv"
    changed.write_text(
        text.replace("Collège Robert Desnos", "Collège Robert-Desnos").replace(
            ";REP;485;",
            ";;499;",  # Dorval: the annuaire drops REP, and 499 pupils
        ),
        encoding="utf-8",
    )
    renamed = await import_annuaire(pool, changed)
    assert renamed.published == 1
    [event] = (await outbox_schools(pool))[DEMO_ROWS + DEMO_EP_ROWS :]
    assert (event["uai"], event["name"], event["version"]) == (
        "0940123Y",
        "Collège Robert-Desnos",
        3,
    )
    assert (event["education_prioritaire"], event["qpv_code"]) == ("REP+", "QN09407A")


async def test_a_failed_import_publishes_nothing(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = tmp_path / "annuaire.csv"
    path.write_text(
        "identifiant_de_l_etablissement;nom_etablissement;type_etablissement;latitude;longitude\n"
        "0940123Y;Collège Robert Desnos;Collège;48.74;2.38\n",
        encoding="utf-8",
    )
    async with pool.acquire() as connection:
        # the database refuses the batch: the whole import rolls back, its events with it
        await connection.execute(
            "ALTER TABLE reference_schools ADD CONSTRAINT no_orly CHECK (uai <> '0940123Y')"
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await import_annuaire(pool, path)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_schools_imported_before_publishing_existed_are_published_by_the_next_import(
    pool: asyncpg.Pool,
) -> None:
    await import_annuaire(pool, DEMO_ANNUAIRE)
    async with pool.acquire() as connection:
        # as migration 0006 leaves the rows of an earlier import
        await connection.execute("UPDATE reference_schools SET version = 0")
        await connection.execute("DELETE FROM outbox")
    again = await import_annuaire(pool, DEMO_ANNUAIRE)
    assert again.published == DEMO_ROWS
    assert {event["version"] for event in await outbox_schools(pool)} == {1}
