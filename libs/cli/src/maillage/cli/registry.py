"""Registry commands: ``maillage registry import-annuaire`` (the schools' reference data) and
``maillage registry create-staff`` (staff accounts: officer, ordonnateur, comptable, operator,
admin).

The registry's code is loaded when a command runs, so ``maillage --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from maillage.common.settings import mask_url

if TYPE_CHECKING:
    from maillage.registry.reference import Rejected

ProgressUpdate = Callable[[int, int], None]  # (bytes read, rows read)
DEV_DATABASE_URL = "postgresql://postgres@127.0.0.1:15432/registry"  # maillage dev's registry
SHOWN_REJECTIONS = 50

app = typer.Typer(
    help="The registre des partenaires: reference data and staff accounts.", no_args_is_help=True
)


@app.callback()
def registry() -> None:
    """The registre des partenaires."""


@app.command("import-annuaire")
def import_annuaire(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="The Annuaire de l'éducation CSV (fr-en-annuaire-education; ';', ',' or tab).",
        ),
    ],
    education_prioritaire: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="The éducation prioritaire list, applied after the annuaire in the same "
            "transaction: the dataset fr-en-etablissements-ep, or the ministry's list of REP and "
            "REP+ (liste-des-rep-et-rep-rentree-2022.csv). Its REP/REP+ statuses override the "
            "annuaire's.",
        ),
    ] = None,
    school_year: Annotated[
        str | None,
        typer.Option(
            help="The school year of the ministry's list (2022-2023), which no column gives; "
            "by default it is read from the file's name (rentree-2022 is 2022-2023).",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="The registry's database (default: $REGISTRY_DATABASE_URL, else maillage dev's "
            f"{DEV_DATABASE_URL}).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Import the schools' reference data into the registry: upsert, then print a summary.

    Applies the registry's migrations first. Both files are one transaction: a file refused (or a
    database error) imports nothing of either. Good rows are imported; bad ones listed with why;
    every line of each file is accounted for.
    """
    try:
        from maillage.registry import reference
    except ImportError:  # pragma: no cover - the workspace installs it
        typer.echo("the registry service is not installed (run `uv sync`)", err=True)
        raise typer.Exit(2) from None
    from maillage.cli.dev import migrations_folder
    from maillage.common.db import create_pool, migrate_service

    dsn = database_url or os.environ.get("REGISTRY_DATABASE_URL") or DEV_DATABASE_URL
    console = Console(stderr=True)
    files = [file] if education_prioritaire is None else [file, education_prioritaire]

    async def run() -> tuple[Any, Any]:
        await migrate_service(dsn, migrations_folder("registry"))
        pool = await create_pool(dsn, min_size=1, max_size=1)
        try:
            with _progress_bars(console, files) as progress:
                return await reference.import_reference(
                    pool,
                    file,
                    education_prioritaire,
                    school_year=school_year,
                    annuaire_progress=progress[0],
                    education_prioritaire_progress=progress[-1],
                )
        finally:
            await pool.close()

    try:
        summary, ep_summary = asyncio.run(run())
    except (reference.ReferenceFormatError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        typer.echo(f"nothing was imported from {' or '.join(map(str, files))}", err=True)
        raise typer.Exit(1) from None
    except asyncpg.InvalidCatalogNameError as error:
        typer.echo(
            f"error: {error} at {mask_url(dsn)}; `maillage dev` creates it, or create it yourself",
            err=True,
        )
        raise typer.Exit(2) from None
    except OSError as error:
        typer.echo(
            f"error: cannot reach the registry database at {mask_url(dsn)} ({error}); "
            "is `maillage dev` running, or is --database-url right?",
            err=True,
        )
        raise typer.Exit(2) from None

    typer.echo(
        f"annuaire {file} ({summary.delimiter}-separated): {summary.lines} lines: "
        f"{summary.inserted} inserted, {summary.updated} updated, {summary.merged} merged into "
        f"an earlier line of the same UAI, {len(summary.rejected)} rejected, {summary.blank} "
        f"blank, {summary.continued} continuing a quoted field; {len(summary.flagged)} imported "
        "with a field dropped or merged"
    )
    _echo_rows("rejected", summary.rejected)
    _echo_rows("flagged", summary.flagged)
    if ep_summary is not None:
        typer.echo(
            f"éducation prioritaire {education_prioritaire} ({ep_summary.delimiter}-separated), "
            f"school year {ep_summary.school_year} (from {ep_summary.school_year_from}): "
            f"{ep_summary.lines} lines: {ep_summary.updated} statuses set, "
            f"{ep_summary.not_found} UAIs not in the annuaire, "
            f"{ep_summary.superseded} already set by a later list, "
            f"{len(ep_summary.rejected)} rejected, {ep_summary.headings} naming a network, "
            f"{ep_summary.blank} blank, "
            f"{ep_summary.continued} continuing a quoted field"
        )
        _echo_rows("rejected", ep_summary.rejected)


@contextlib.contextmanager
def _progress_bars(
    console: Console, files: list[Path]
) -> Iterator[list[Callable[[int, int], None]]]:
    """One progress bar per file, counting bytes and rows; yields their update callbacks."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bars:
        updates: list[ProgressUpdate] = []
        for path in files:
            task = bars.add_task(path.name, total=path.stat().st_size, rows=0)

            def update(bytes_read: int, rows: int, task: TaskID = task) -> None:
                bars.update(task, completed=bytes_read, rows=rows)

            updates.append(update)
        yield updates


def _echo_rows(what: str, rows: list[Rejected]) -> None:
    for row in rows[:SHOWN_REJECTIONS]:
        typer.echo(
            f"  {what} line {row.line_number}{f' ({row.uai})' if row.uai else ''}: {row.reason}"
        )
    if len(rows) > SHOWN_REJECTIONS:
        typer.echo(f"  … and {len(rows) - SHOWN_REJECTIONS} more {what}")


@app.command("create-staff")
def create_staff(
    email: Annotated[str, typer.Argument(help="The staff member's e-mail, their login")],
    role: Annotated[
        list[str],
        typer.Option(
            "--role", help="officer, ordonnateur, comptable, operator or admin (repeatable)"
        ),
    ],
    departement: Annotated[
        list[str] | None,
        typer.Option(
            "--departement",
            help="A département the account acts for: 94, 2A, 971 (repeatable, at most 20)",
        ),
    ] = None,
    national: Annotated[
        bool,
        typer.Option(
            "--national", help="The account acts in every département (a central administration)"
        ),
    ] = False,
    database_url: Annotated[
        str | None, typer.Option(help="The registry's database", show_default=False)
    ] = None,
) -> None:
    """Create (or reset) a staff account; the password is read from the terminal or from
    $MAILLAGE_STAFF_PASSWORD, never from the command line. A funding account (officer,
    ordonnateur, comptable) acts for its --departement codes, or everywhere with --national;
    operators and admins are always national (decision 64)."""
    from maillage.registry import domain, store, tokens

    allowed = {"officer", "ordonnateur", "comptable", "operator", "admin"}
    if not role or not set(role) <= allowed:
        raise typer.BadParameter(
            f"roles are among {', '.join(sorted(allowed))}", param_hint="--role"
        )
    try:
        departements, is_national = domain.staff_territory(
            role, [code.strip().upper() for code in departement or []], national=national
        )
    except domain.InvalidTerritory as error:
        raise typer.BadParameter(str(error), param_hint="--departement") from error
    if "@" not in email:
        raise typer.BadParameter("an e-mail address", param_hint="EMAIL")
    password = os.environ.get("MAILLAGE_STAFF_PASSWORD") or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    if len(password) < 12:
        raise typer.BadParameter("at least 12 characters", param_hint="password")
    dsn = database_url or os.environ.get("REGISTRY_DATABASE_URL") or DEV_DATABASE_URL

    async def run() -> str:
        connection = await asyncpg.connect(dsn)
        try:
            staff_id = await store.upsert_staff(
                connection,
                email=email,
                password_hash=tokens.hash_secret(password),
                roles=role,
                departements=departements,
                national=is_national,
            )
        finally:
            await connection.close()
        return str(staff_id)

    staff_id = asyncio.run(run())
    where = "national" if is_national else ", ".join(departements)
    typer.echo(f"staff account {email.lower()} ({', '.join(sorted(role))}; {where}): {staff_id}")
