"""Funding commands: ``maillage funding verify-audit`` recomputes the audit log's hash chain
(``maillage.funding.audit``) and names the first row that was altered."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import asyncpg
import typer

DEV_DATABASE_URL = "postgresql://postgres@127.0.0.1:15432/funding"  # maillage dev's funding

app = typer.Typer(help="Programme 147 funding: the audit log.", no_args_is_help=True)


@app.command("verify-audit")
def verify_audit(
    database_url: Annotated[
        str | None,
        typer.Option(
            help=f"The funding database (default $FUNDING_DATABASE_URL, then {DEV_DATABASE_URL})",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Recompute every row's SHA-256 over the previous row's hash; exit 1 naming the first row
    that does not follow (altered, removed, or rows removed after it)."""
    from maillage.funding import audit

    dsn = database_url or os.environ.get("FUNDING_DATABASE_URL") or DEV_DATABASE_URL

    async def run() -> audit.Verification:
        connection = await asyncpg.connect(dsn)
        try:
            return await audit.verify(connection)
        finally:
            await connection.close()

    result = asyncio.run(run())
    if result.intact:
        typer.echo(f"audit log intact: {result.rows} row(s), hash chain verified")
        return
    typer.echo(f"audit log altered at row {result.first_bad_seq}: {result.reason}", err=True)
    raise typer.Exit(1)
