"""Operator commands: ``maillage dlq`` (dead letters) and ``maillage events`` (the catalog)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated
from uuid import UUID

import asyncpg
import typer

from maillage.common import dlq as dead_letters
from maillage.common import outbox
from maillage.common.catalog import catalog
from maillage.common.inbox import DeadLetterProducer
from maillage.common.schemas import check_snapshots, write_snapshots

DEV_BOOTSTRAP = "127.0.0.1:19092"  # maillage dev's embedded broker

Bootstrap = Annotated[
    str,
    typer.Option(
        envvar="KAFKA_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers (default: maillage dev's)"
    ),
]
Service = Annotated[str, typer.Option(help="The service whose consumer groups' dead letters")]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="The service's database, for the outbox's dead letters (default: "
        "<SERVICE>_DATABASE_URL, else maillage dev's)"
    ),
]
DEV_POSTGRES = "postgresql://postgres@127.0.0.1:15432"  # maillage dev's embedded PostgreSQL


def _service_database(service: str, database_url: str | None) -> str:
    return (
        database_url
        or os.environ.get(f"{service.upper()}_DATABASE_URL")
        or f"{DEV_POSTGRES}/{service}"
    )


async def _on_outbox(
    dsn: str, action: Callable[[asyncpg.Connection], Awaitable[list[outbox.OutboxDeadLetter]]]
) -> list[outbox.OutboxDeadLetter] | None:
    """``action`` on the service's database; None (said on stderr) when it cannot be reached,
    so the consumer groups' dead letters are still listed."""
    try:
        connection = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        typer.echo(f"outbox dead letters not read: {type(error).__name__}: {error}", err=True)
        return None
    try:
        return await action(connection)
    finally:
        await connection.close()


dlq = typer.Typer(help="Dead letters: list them, replay them.", no_args_is_help=True)
events = typer.Typer(help="The event catalog and its JSON Schema snapshots.", no_args_is_help=True)


@dlq.command("list")
def list_dead_letters(
    service: Service, bootstrap: Bootstrap = DEV_BOOTSTRAP, database_url: DatabaseUrl = None
) -> None:
    """List a service's dead letters, oldest first: its consumer groups' (Kafka), then the
    events its outbox relay set aside because the broker refused them for good."""

    async def run() -> tuple[list[dead_letters.DeadLetter], list[outbox.OutboxDeadLetter] | None]:
        topics = await dead_letters.dead_letter_topics(bootstrap, service)
        set_aside = await _on_outbox(
            _service_database(service, database_url), outbox.outbox_dead_letters
        )
        return await dead_letters.list_dead_letters(bootstrap, topics), set_aside

    letters, set_aside = asyncio.run(run())
    for aside in set_aside or ():
        typer.echo(
            f"outbox  set aside  {aside.event_id}  {aside.event_type}\n"
            f"    for {aside.topic} (key {aside.key}), {aside.size} bytes, {aside.set_aside_at}\n"
            f"    {aside.error[:300]}"
        )
    if not letters:
        typer.echo(f"no dead letters for {service}")
        return
    for letter in letters:
        state = "replayed" if letter.replayed else "waiting"
        typer.echo(
            f"{letter.dead_letter_topic}@{letter.offset}  {state:<8}  {letter.event_id}  "
            f"{letter.event_type}\n"
            f"    from {letter.original_topic}[{letter.original_partition}]@"
            f"{letter.original_offset} in {letter.consumer_group}, {letter.attempts} attempt(s), "
            f"{letter.failed_at}\n"
            f"    {letter.error_class}: {letter.error_message[:300]}"
        )


@dlq.command("replay")
def replay(
    service: Service,
    event_id: Annotated[UUID | None, typer.Option(help="Replay this event's dead letters")] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every dead letter not yet replayed")
    ] = False,
    bootstrap: Bootstrap = DEV_BOOTSTRAP,
    database_url: DatabaseUrl = None,
) -> None:
    """Re-publish dead letters to their original topic, with their original event id; move
    events the outbox relay set aside back to the outbox (after the broker's limit is raised)."""
    if (event_id is None) == (not replay_all):
        raise typer.BadParameter("give either --event-id ID or --all")

    async def replay_outbox(connection: asyncpg.Connection) -> list[outbox.OutboxDeadLetter]:
        return await outbox.replay_outbox_dead_letters(connection, event_id)

    async def run() -> list[dead_letters.DeadLetter]:
        moved = await _on_outbox(_service_database(service, database_url), replay_outbox)
        for aside in moved or ():
            typer.echo(f"moved {aside.event_id} ({aside.event_type}) back to the outbox")
            replayed_from_outbox.append(aside)
        topics = await dead_letters.dead_letter_topics(bootstrap, service)
        producer = DeadLetterProducer(
            bootstrap,
            client_id="maillage-cli-replay",
            idempotent=os.environ.get("KAFKA_IDEMPOTENT_PRODUCER", "false") == "true",
        )
        try:
            if event_id is not None:
                return await dead_letters.replay_event(bootstrap, topics, event_id, producer)
            return await dead_letters.replay_all(bootstrap, topics, producer)
        finally:
            await producer.stop()

    replayed_from_outbox: list[outbox.OutboxDeadLetter] = []
    replayed = asyncio.run(run())
    if event_id is not None and not replayed and not replayed_from_outbox:
        typer.echo(f"no dead letter of event {event_id} for {service}", err=True)
        raise typer.Exit(1)
    for letter in replayed:
        typer.echo(f"replayed {letter.event_id} ({letter.event_type}) to {letter.original_topic}")
    typer.echo(f"{len(replayed)} dead letter(s) replayed")


SNAPSHOTS = Path("libs/common/event-schemas")


@events.command("snapshot")
def snapshot(
    folder: Annotated[Path, typer.Option(help="Where snapshots live")] = SNAPSHOTS,
) -> None:
    """Write the JSON Schema snapshot of every event type (after a compatible change)."""
    problems = [p for p in check_snapshots(catalog, folder) if "backward-incompatible" in p]
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1)
    for stale in folder.glob("*.json"):
        if stale.stem not in catalog.events:
            stale.unlink()
    for path in write_snapshots(catalog, folder):
        typer.echo(f"wrote {path}")


@events.command("check")
def check(folder: Annotated[Path, typer.Option(help="Where snapshots live")] = SNAPSHOTS) -> None:
    """Compare the catalog with the committed snapshots."""
    problems = check_snapshots(catalog, folder)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{len(catalog.events)} event type(s) match their snapshots")
