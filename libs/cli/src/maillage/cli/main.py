"""The ``maillage`` command."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated

import structlog
import typer

from maillage.cli import dev, funding, operations, registry, webhooks

app = typer.Typer(
    help="Maillage: the backbone of the réussite éducative partner ecosystem.",
    no_args_is_help=True,
    add_completion=False,
)


app.add_typer(operations.dlq, name="dlq")
app.add_typer(operations.events, name="events")
app.add_typer(funding.app, name="funding")
app.add_typer(registry.app, name="registry")
app.add_typer(webhooks.app, name="webhooks")


@app.callback()
def main() -> None:
    """Development stack and operator tools."""


@app.command("dev")
def dev_command(
    fresh: Annotated[bool, typer.Option(help="Wipe the data directory first.")] = False,
    demo: Annotated[bool, typer.Option(help="Load demo partners, offers and requests.")] = False,
    data_dir: Annotated[
        Path, typer.Option(help="Where the embedded PostgreSQL keeps its data.")
    ] = Path(".maillage"),
    port_base: Annotated[
        int, typer.Option(help="Port of the first service; the others follow (8001-8005).")
    ] = 8001,
    broker_port: Annotated[int, typer.Option(help="Port of the embedded Kafka broker.")] = 19092,
    postgres_port: Annotated[int, typer.Option(help="Port of the embedded PostgreSQL.")] = 15432,
    smtp_port: Annotated[
        int, typer.Option(help="Port of the development mailbox (unless NOTIFICATIONS_SMTP_HOST).")
    ] = 11025,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every service to be ready.")
    ] = 90.0,
    local_webhooks: Annotated[
        bool,
        typer.Option(
            help="Let partners subscribe webhook receivers on this machine (http, loopback), "
            "such as `maillage webhooks receive`. Development only."
        ),
    ] = False,
) -> None:
    """Run the whole system locally: broker, PostgreSQL and the five services.

    KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, when set, point at an existing broker and
    PostgreSQL server instead of the embedded ones.
    """
    options = dev.DevOptions(
        data_dir=data_dir,
        port_base=port_base,
        broker_port=broker_port,
        postgres_port=postgres_port,
        smtp_port=smtp_port,
        fresh=fresh,
        demo=demo,
        ready_timeout=ready_timeout,
        local_webhooks=local_webhooks,
        kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        database_url=os.environ.get("DATABASE_URL") or None,
    )
    # This process says what it does in its own lines ("registry: migrated (…)"): the chassis'
    # INFO lines, one per migration, would only repeat them.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    raise typer.Exit(asyncio.run(dev.run(options)))
