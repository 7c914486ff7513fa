"""Real processes and a cuttable network for the backbone fault tests (test_backbone_faults.py).

Run as a script, this module is one backbone process::

    python backbone_processes.py relay '{"dsn": ..., "bootstrap": ..., "service": ...}'
    python backbone_processes.py consumer '{"dsn": ..., "bootstrap": ..., "service": ...}'

A child tells the test what happens by printing marker lines, ``@@ <name> <value>``:
``@@ role leader`` (each change of the relay's role), ``@@ acked 50`` (the stalling relay got the
broker's acknowledgements and will now hang instead of marking the rows), ``@@ started``.

Imported by the tests, it gives :class:`Child` (one such process, killed for sure in the end)
and :class:`TcpProxy` (a loopback TCP forwarder that can cut the network and restore it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
MARKER = "@@ "


def emit(name: str, value: object = "") -> None:
    print(f"{MARKER}{name} {value}".rstrip(), flush=True)


# --- the child side -----------------------------------------------------------------------------


async def _until_terminated(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def run_relay(args: dict[str, Any]) -> None:
    from maillage.common.outbox import OutboxRelay

    class StallingRelay(OutboxRelay):
        """Hangs forever the first time it would mark rows published: the broker has acked the
        batch, the outbox does not know it yet. The test kills the process right there."""

        stalled = False

        async def _mark_published(self, connection: Any, ids: list[int]) -> None:
            if not self.stalled:
                self.stalled = True
                emit("acked", len(ids))
                await asyncio.Event().wait()
            await super()._mark_published(connection, ids)

    relay_class = StallingRelay if args.get("stall_on_mark") else OutboxRelay
    relay = relay_class(
        args["dsn"],
        args["bootstrap"],
        service=args["service"],
        idempotent=args.get("idempotent", False),
        poll_interval=args.get("poll_interval", 1.0),
    )

    async def report_role() -> None:
        role = None
        while True:
            if relay.status.role != role:
                role = relay.status.role
                emit("role", role)
            await asyncio.sleep(0.01)

    stop = asyncio.Event()
    reporter = asyncio.create_task(report_role())
    running = asyncio.create_task(relay.run())
    emit("pid", os.getpid())
    await _until_terminated(stop)
    relay.stop()
    with contextlib.suppress(TimeoutError):  # the stalling relay never returns by itself
        await asyncio.wait_for(running, 10)
    reporter.cancel()


async def run_consumer(args: dict[str, Any]) -> None:
    from backbone_world import ThingChanged, World, start_consumers

    from maillage.common.db import create_pool
    from maillage.common.events import Catalog
    from maillage.common.inbox import Delivery, EventConsumer

    service = args["service"]
    # The same catalog new_world() built in the test process: the names derive from the service.
    catalog = Catalog()
    topic = catalog.topic(f"{service}.things", partitions=3)
    catalog.register(
        ThingChanged,
        event_type=f"fr.maillage.{service}.thing.changed.v1",
        topic=topic,
        key="thing_id",
    )
    world = World(
        service,
        catalog,
        topic,
        args["dsn"],
        args["bootstrap"],
        args.get("idempotent", False),
        Path(),
    )
    delay = args.get("delay_ms", 0) / 1000
    consumer = EventConsumer(
        f"{service}.{args.get('group_suffix', 'effects')}", [topic], catalog=catalog
    )

    @consumer.handler(ThingChanged)
    async def record(event: ThingChanged, delivery: Delivery) -> None:
        if delay:
            await asyncio.sleep(delay)  # inside the transaction: a kill here rolls it back
        await delivery.connection.execute(
            "INSERT INTO effects (event_id, thing_id, seq, consumer) VALUES ($1, $2, $3, $4)",
            delivery.envelope.id,
            event.thing_id,
            event.seq,
            consumer.group,
        )

    pool = await create_pool(args["dsn"], max_size=10)
    stop = asyncio.Event()
    try:
        async for _ in start_consumers(world, pool, consumer):
            emit("started", os.getpid())
            await _until_terminated(stop)
    finally:
        await pool.close()


ROLES = {"relay": run_relay, "consumer": run_consumer}


def main() -> None:
    role, raw = sys.argv[1], sys.argv[2]
    asyncio.run(ROLES[role](json.loads(raw)))


# --- the test side ------------------------------------------------------------------------------


class ChildFailed(AssertionError):
    pass


class Child:
    """One backbone process (``role`` with ``args``), its markers collected as they come."""

    def __init__(self, name: str, role: str, **args: Any) -> None:
        from maillage.cli.processes import ManagedProcess

        self.name = name
        self.markers: list[tuple[float, str, str]] = []
        self._news = asyncio.Event()
        self.process = ManagedProcess(
            name,
            [sys.executable, str(SCRIPT), role, json.dumps(args)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            on_line=self._line,
        )

    def _line(self, _name: str, text: str) -> None:
        if text.startswith(MARKER):
            marker, _, value = text[len(MARKER) :].partition(" ")
            self.markers.append((time.monotonic(), marker, value))
            self._news.set()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.process is not None and self.process.returncode is None

    def last(self, marker: str) -> str | None:
        values = [value for _, name, value in self.markers if name == marker]
        return values[-1] if values else None

    async def start(self) -> Child:
        await self.process.start()
        return self

    async def wait_for(self, marker: str, value: str | None = None, *, timeout: float) -> str:
        """The value of the first ``marker`` line (with ``value``, if given); fails on timeout or
        if the process dies first."""
        deadline = time.monotonic() + timeout
        while True:
            for _, name, seen in self.markers:
                if name == marker and (value is None or seen == value):
                    return seen
            if not self.alive:
                raise ChildFailed(f"{self.name} exited before '{marker}':\n{self.output()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildFailed(f"{self.name}: no '{marker}' in {timeout} s:\n{self.output()}")
            self._news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), min(remaining, 0.2))

    def kill(self) -> None:
        """``kill -9`` of the child's whole process group (it runs in a session of its own)."""
        if self.alive and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)

    async def killed(self) -> None:
        self.kill()
        if self.process.process is not None:
            await asyncio.wait_for(self.process.wait(), 10)

    def output(self) -> str:
        return self.process.last_lines(30)


class TcpProxy:
    """127.0.0.1:``port`` forwarded to 127.0.0.1:``target_port``. :meth:`cut` closes every live
    connection and the listening socket (new connections are refused); :meth:`restore` listens
    again. A network partition between the clients and the broker, on demand."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    restore = start

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    stop = cut

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:  # cut while connecting upstream
            writer.transport.abort()
            upstream_writer.transport.abort()
            return
        self._writers.update((writer, upstream_writer))
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, (writer, upstream_writer)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in pair:  # one side gone: the connection is over, both ways
                writer.transport.abort()
                self._writers.discard(writer)


if __name__ == "__main__":
    main()
