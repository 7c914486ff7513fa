"""Registry commands: ``maillage registry import-annuaire`` (the schools' reference data) and
``maillage registry create-staff`` (officer, operator and admin accounts).

The registry's code is loaded when a command runs, so ``maillage --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from maillage.common.settings import mask_url

if TYPE_CHECKING:
    from maillage.registry.reference import Rejected

T = TypeVar("T")

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
            help="The Annuaire de l'éducation CSV (fr-en-annuaire-education, ';'-separated).",
        ),
    ],
    education_prioritaire: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="The éducation prioritaire list (fr-en-etablissements-ep), applied after the "
            "annuaire: its REP/REP+ statuses override the annuaire's.",
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

    Applies the registry's migrations first. Good rows are imported; bad ones listed with why.
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

    async def run() -> tuple[reference.ImportSummary, reference.EducationPrioritaireSummary | None]:
        await migrate_service(dsn, migrations_folder("registry"))
        pool = await create_pool(dsn, min_size=1, max_size=1)
        try:
            summary = await _with_progress(
                console,
                "annuaire",
                file,
                file.stat().st_size,
                reference.import_annuaire,
                pool,
            )
            ep_summary = None
            if education_prioritaire is not None:
                ep_summary = await _with_progress(
                    console,
                    "éducation prioritaire",
                    education_prioritaire,
                    education_prioritaire.stat().st_size,
                    reference.import_education_prioritaire,
                    pool,
                )
            return summary, ep_summary
        finally:
            await pool.close()

    try:
        summary, ep_summary = asyncio.run(run())
    except reference.ReferenceFormatError as error:
        typer.echo(f"error: {error}", err=True)
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
        f"annuaire {file}: {summary.inserted} inserted, {summary.updated} updated, "
        f"{len(summary.rejected)} rejected"
    )
    _echo_rejections(summary.rejected)
    if ep_summary is not None:
        typer.echo(
            f"éducation prioritaire {education_prioritaire} ({ep_summary.school_year}): "
            f"{ep_summary.updated} statuses set, {ep_summary.not_found} UAIs not in the annuaire, "
            f"{ep_summary.superseded} already set by a later list, "
            f"{len(ep_summary.rejected)} rejected"
        )
        _echo_rejections(ep_summary.rejected)


async def _with_progress(
    console: Console,
    label: str,
    path: Path,
    size: int,
    importer: Callable[..., Awaitable[T]],
    pool: Any,
) -> T:
    """Run ``importer(pool, path, progress=...)`` under a progress bar counting bytes and rows."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=size, rows=0)

        def progress(bytes_read: int, rows: int) -> None:
            bar.update(task, completed=bytes_read, rows=rows)

        return await importer(pool, path, progress=progress)


def _echo_rejections(rejected: list[Rejected]) -> None:
    for row in rejected[:SHOWN_REJECTIONS]:
        typer.echo(f"  line {row.line_number}{f' ({row.uai})' if row.uai else ''}: {row.reason}")
    if len(rejected) > SHOWN_REJECTIONS:
        typer.echo(f"  … and {len(rejected) - SHOWN_REJECTIONS} more")


@app.command("create-staff")
def create_staff(
    email: Annotated[str, typer.Argument(help="The staff member's e-mail, their login")],
    role: Annotated[
        list[str], typer.Option("--role", help="officer, operator or admin (repeatable)")
    ],
    database_url: Annotated[
        str | None, typer.Option(help="The registry's database", show_default=False)
    ] = None,
) -> None:
    """Create (or reset) a staff account; the password is read from the terminal or from
    $MAILLAGE_STAFF_PASSWORD, never from the command line."""
    from maillage.registry import store, tokens

    allowed = {"officer", "operator", "admin"}
    if not role or not set(role) <= allowed:
        raise typer.BadParameter(
            f"roles are among {', '.join(sorted(allowed))}", param_hint="--role"
        )
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
                connection, email=email, password_hash=tokens.hash_secret(password), roles=role
            )
        finally:
            await connection.close()
        return str(staff_id)

    staff_id = asyncio.run(run())
    typer.echo(f"staff account {email.lower()} ({', '.join(sorted(role))}): {staff_id}")
