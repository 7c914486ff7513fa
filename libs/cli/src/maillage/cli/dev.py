"""``maillage dev``: the whole system on one machine, from nothing, in one command.

Start order: check every port, start the broker and PostgreSQL (unless the environment points at
existing ones), create one database per service, migrate, start the five services, wait for every
``/readyz``, load the demo data if asked, print where everything is. Then stream the logs until
Ctrl-C or SIGTERM, and stop in reverse order. Any failure on the way is one clear message and a
non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import uvicorn
from aiokafka.admin import AIOKafkaAdminClient

from maillage.cli import demo, traces
from maillage.cli.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    StackError,
    ensure_database,
    port_is_free,
)
from maillage.cli.mailbox import DevMailbox
from maillage.cli.processes import ManagedProcess
from maillage.common import sealing
from maillage.common.db import migrate_service
from maillage.common.settings import mask_url

SERVICES = ("registry", "cordees", "stages3e", "funding", "notifications")
# The staff console (decision 53) runs beside them on the next port; it has no database.
CONSOLE = "console"
_COLOURS = {
    "broker": 90,
    "postgres": 90,
    "registry": 36,
    "cordees": 32,
    "stages3e": 33,
    "funding": 35,
    "notifications": 34,
    "console": 31,
    "mail": 34,
}
# `maillage dev --local-webhooks`: the SSRF policy's two exemptions, for receivers on this machine
# only. The notifications service refuses both in production settings.
LOCAL_WEBHOOKS = {
    "NOTIFICATIONS_WEBHOOK_ALLOW_HTTP": "true",
    "NOTIFICATIONS_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.0/8", "::1", "localhost"]',
}


@dataclass
class DevOptions:
    data_dir: Path = Path(".maillage")
    port_base: int = 8001
    broker_port: int = 19092
    postgres_port: int = 15432
    smtp_port: int = 11025
    fresh: bool = False
    demo: bool = False
    # A deadline, not a wait: a busy 2-core machine takes a minute or more to start five services.
    ready_timeout: float = 90.0
    local_webhooks: bool = False  # partners may subscribe http receivers on loopback
    kafka_bootstrap_servers: str | None = None  # an existing broker instead of the embedded one
    database_url: str | None = None  # an existing PostgreSQL server instead of the embedded one

    def service_ports(self) -> dict[str, int]:
        return {name: self.port_base + index for index, name in enumerate(SERVICES)}

    def console_port(self) -> int:
        return self.port_base + len(SERVICES)

    def traces_port(self) -> int:
        """The supervisor's OTLP receiver and trace query API (decision 54)."""
        return self.port_base + len(SERVICES) + 1


def database_url_for(server_url: str, database: str) -> str:
    """The server's URL with its database path replaced: one database per service."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def migrations_folder(service: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(f"maillage.{service}")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"the {service} service is not installed (run `uv sync`)")
    return Path(next(iter(spec.submodule_search_locations))) / "migrations"


class Output:
    """Prefixes each child's lines with its name, in colour on a terminal."""

    def __init__(self) -> None:
        self.colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        self.width = max(len(name) for name in _COLOURS)

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:<{self.width}} |"
        if self.colour:
            prefix = f"\033[{_COLOURS.get(name, 0)}m{prefix}\033[0m"
        print(f"{prefix} {text}", flush=True)

    def problem(self, name: str, text: str) -> None:
        """Only a server's warnings and errors: PostgreSQL's routine LOG lines are noise here."""
        if any(level in text for level in ("WARNING:", "ERROR:", "FATAL:", "PANIC:")):
            self.line(name, text)

    def say(self, text: str) -> None:
        print(f"maillage: {text}", flush=True)


@dataclass
class DevStack:
    options: DevOptions
    output: Output = field(default_factory=Output)
    broker: EmbeddedBroker | None = None
    mailbox: DevMailbox | None = None
    traces: TraceServer | None = None
    postgres: EmbeddedPostgres | None = None
    services: dict[str, ManagedProcess] = field(default_factory=dict)
    database_urls: dict[str, str] = field(default_factory=dict)

    async def start(self) -> None:
        options = self.options
        ports = options.service_ports()
        self._check_ports(ports)
        if options.fresh and options.data_dir.exists():
            shutil.rmtree(options.data_dir)
        options.data_dir.mkdir(parents=True, exist_ok=True)

        bootstrap = options.kafka_bootstrap_servers
        if bootstrap is None:
            self.broker = EmbeddedBroker(options.broker_port, on_line=self.output.line)
            await self.broker.start()
            bootstrap = self.broker.bootstrap_servers
        else:
            await _check_kafka(bootstrap)

        server_url = options.database_url
        if server_url is None:
            self.postgres = EmbeddedPostgres(
                options.data_dir / "postgres", options.postgres_port, on_line=self.output.problem
            )
            await self.postgres.start()
            server_url = self.postgres.url
        else:
            await _check_postgres(server_url)
        self.output.say(f"broker {bootstrap}, PostgreSQL {mask_url(server_url)}")

        database_urls = {}
        for name in SERVICES:
            database_urls[name] = database_url_for(server_url, name)
            try:
                await ensure_database(server_url, name)
                applied = await migrate_service(database_urls[name], migrations_folder(name))
            except Exception as error:
                raise StackError(f"cannot prepare the {name} database: {error}") from error
            if applied:
                self.output.say(f"{name}: migrated ({', '.join(applied)})")

        # Traces go to the supervisor's own store unless the environment names a collector.
        telemetry: dict[str, str] = {}
        if "OTEL_EXPORTER_OTLP_ENDPOINT" not in os.environ:
            self.traces = TraceServer(database_url_for(server_url, "traces"), options.traces_port())
            try:
                await ensure_database(server_url, "traces")
                await self.traces.start()
            except Exception as error:
                raise StackError(f"cannot start the trace store: {error}") from error
            telemetry = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.traces.url,
                "OTEL_BSP_SCHEDULE_DELAY": "1000",  # a trace shows within a second or so
            }

        # Mail goes to the development mailbox unless the environment names an SMTP server.
        smtp: dict[str, str] = {}
        if "NOTIFICATIONS_SMTP_HOST" not in os.environ:
            self.mailbox = DevMailbox(
                options.data_dir / "mail",
                options.smtp_port,
                lambda text: self.output.line("mail", text),
            )
            self.mailbox.start()
            smtp = {
                "NOTIFICATIONS_SMTP_HOST": "127.0.0.1",
                "NOTIFICATIONS_SMTP_PORT": str(options.smtp_port),
                "NOTIFICATIONS_SMTP_TLS": "none",
                "NOTIFICATIONS_PUBLIC_BASE_URL": _base_url(ports["notifications"]),
            }

        claim_seal = claim_seal_keys(options.data_dir, os.environ)
        notifications = {
            **smtp,
            **(LOCAL_WEBHOOKS if options.local_webhooks else {}),
            **claim_seal["notifications"],
        }
        issuer = f"http://127.0.0.1:{ports['registry']}"
        for name in SERVICES:
            prefix = f"{name.upper()}_"
            env = {
                **os.environ,
                f"{prefix}DATABASE_URL": database_urls[name],
                f"{prefix}KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                # tansu does not support the idempotent producer; Apache Kafka does.
                f"{prefix}KAFKA_IDEMPOTENT_PRODUCER": str(
                    options.kafka_bootstrap_servers is not None
                ),
                f"{prefix}ENVIRONMENT": "dev",
                f"{prefix}LOG_FORMAT": "console",
                f"{prefix}MIGRATE_ON_START": "false",
                f"{prefix}JWT_ISSUER": issuer,
                f"{prefix}JWKS_URL": f"{issuer}/.well-known/jwks.json",
                **telemetry,
                **(notifications if name == "notifications" else {}),
                **(claim_seal["registry"] if name == "registry" else {}),
            }
            process = ManagedProcess(
                name,
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    f"maillage.{name}.app:create",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ports[name]),
                    "--no-access-log",
                    # The service decides which X-Forwarded-For to believe (TRUSTED_PROXIES).
                    "--no-proxy-headers",
                    "--timeout-graceful-shutdown",
                    "5",
                ],
                env=env,
                on_line=self.output.line,
            )
            self.services[name] = process
            await process.start()
        await self._start_console(ports)
        await self._wait_ready({CONSOLE: options.console_port(), **ports})
        self.database_urls = database_urls

    async def _start_console(self, ports: dict[str, int]) -> None:
        """The staff console, pointed at the five services and the registry's JWKS."""
        issuer = _base_url(ports["registry"])
        env = {
            **os.environ,
            **{f"CONSOLE_{name.upper()}_URL": _base_url(port) for name, port in ports.items()},
            "CONSOLE_ENVIRONMENT": "dev",
            "CONSOLE_LOG_FORMAT": "console",
            "CONSOLE_JWT_ISSUER": issuer,
            "CONSOLE_JWKS_URL": f"{issuer}/.well-known/jwks.json",
            **({"CONSOLE_TRACES_URL": self.traces.url} if self.traces else {}),
        }
        process = ManagedProcess(
            CONSOLE,
            [
                sys.executable,
                "-m",
                "uvicorn",
                "maillage.console.app:create",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.options.console_port()),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "5",
            ],
            env=env,
            on_line=self.output.line,
        )
        self.services[CONSOLE] = process
        await process.start()

    async def load_demo(self) -> None:
        ports = self.options.service_ports()
        context = demo.DemoContext(
            base_urls={name: _base_url(port) for name, port in ports.items()},
            database_urls=self.database_urls,
            data_dir=self.options.data_dir,
        )
        try:
            lines = await demo.load(context)
        except Exception as error:
            raise StackError(f"the demo data did not load: {error}") from error
        for line in lines:
            self.output.say(f"demo: {line}")

    def _check_ports(self, ports: dict[str, int]) -> None:
        wanted = [(port, f"the {name} service") for name, port in ports.items()]
        wanted.append((self.options.console_port(), "the staff console"))
        if "OTEL_EXPORTER_OTLP_ENDPOINT" not in os.environ:
            wanted.append((self.options.traces_port(), "the trace store (OTLP receiver)"))
        if self.options.kafka_bootstrap_servers is None:
            wanted.append((self.options.broker_port, "the embedded Kafka broker"))
        if self.options.database_url is None:
            wanted.append((self.options.postgres_port, "the embedded PostgreSQL"))
        if "NOTIFICATIONS_SMTP_HOST" not in os.environ:
            wanted.append((self.options.smtp_port, "the development mailbox (SMTP)"))
        for port, what in wanted:
            if not port_is_free(port):
                raise StackError(
                    f"port {port}, wanted by {what}, is already in use. Stop what uses it "
                    f"(`ss -ltnp 'sport = :{port}'` shows it) or choose other ports "
                    "(--port-base, --broker-port, --postgres-port, --smtp-port)."
                )

    async def _wait_ready(self, ports: dict[str, int]) -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        pending = dict(ports)
        last_answer: dict[str, str] = {}
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                for name, port in list(pending.items()):
                    process = self.services[name]
                    if process.returncode is not None:
                        await process.wait()
                        raise StackError(
                            f"the {name} service exited with code {process.returncode} while "
                            f"starting. Its last lines:\n{process.last_lines()}"
                        )
                    try:
                        response = await client.get(f"{_base_url(port)}/readyz")
                    except httpx.HTTPError as error:
                        last_answer[name] = type(error).__name__
                        continue
                    if response.status_code == 200:
                        del pending[name]
                    else:
                        last_answer[name] = f"{response.status_code} {response.text[:200]}"
                if pending and time.monotonic() > deadline:
                    names = ", ".join(pending)
                    details = "; ".join(f"{n}: {last_answer.get(n, 'no answer')}" for n in pending)
                    raise StackError(
                        f"not ready within {self.options.ready_timeout:.0f} s: {names} "
                        f"({details}); on a busy machine, --ready-timeout gives them longer"
                    )
                if pending:
                    await asyncio.sleep(0.2)

    async def watch(self, stop: asyncio.Event) -> str | None:
        """Wait for a stop request or for a service to die; say which service died."""
        stop_task = asyncio.create_task(stop.wait())
        exits = {asyncio.create_task(p.wait()): name for name, p in self.services.items()}
        if self.broker is not None:
            exits[asyncio.create_task(self.broker.process.wait())] = "broker"
        if self.postgres is not None and self.postgres.process is not None:
            exits[asyncio.create_task(self.postgres.process.wait())] = "postgres"
        done, _ = await asyncio.wait({stop_task, *exits}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop_task, *exits):
            task.cancel()
        died = [exits[task] for task in done if task in exits]
        return died[0] if died else None

    async def stop(self) -> None:
        """The services first (they export their last spans, publish, use the database), then
        the trace store (its pool closed while PostgreSQL still answers), then the broker,
        PostgreSQL and the mailbox."""
        await asyncio.gather(*(process.stop() for process in self.services.values()))
        if self.traces is not None:
            await self.traces.stop()
        if self.broker is not None:
            await self.broker.stop()
        if self.postgres is not None:
            await self.postgres.stop()
        if self.mailbox is not None:
            self.mailbox.stop()

    def summary(self) -> str:
        ports = self.options.service_ports()
        rows = [("service", "API docs (OpenAPI)", "events (AsyncAPI)", "health")]
        for name, port in ports.items():
            base = _base_url(port)
            rows.append((name, f"{base}/docs", f"{base}/asyncapi", f"{base}/readyz"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        console = _base_url(self.options.console_port())
        return f"staff console  {console}  (sign in with a staff account)\n\n" + "\n".join(lines)


class _InProcessServer(uvicorn.Server):
    """uvicorn inside the supervisor: Ctrl-C is the supervisor's, which stops this server in its
    turn (uvicorn's own handlers would stop it first, before the services exporting to it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class TraceServer:
    """The trace store's HTTP server (``maillage.cli.traces``), inside the supervisor."""

    def __init__(self, database_url: str, port: int) -> None:
        self.database_url = database_url
        self.port = port
        self.url = _base_url(port)
        self._pool: asyncpg.Pool | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=4)
        store = traces.TraceStore(self._pool)
        await store.setup()
        config = uvicorn.Config(
            traces.create_app(store),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            log_level="warning",
            access_log=False,
        )
        self._server = _InProcessServer(config)
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(200):
            if self._server.started:
                return
            if self._task.done():
                self._task.result()
                break
            await asyncio.sleep(0.05)
        raise StackError(f"the trace store did not start on port {self.port}")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._pool is not None:
            await self._pool.close()


CLAIM_SEAL_FILE = "claim-seal.pem"


def claim_seal_keys(data_dir: Path, environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The claim-seal key pair of the stack (decision 63), as each service's variables: the
    private key for notifications, its public half for the registry. Taken from
    ``NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY`` when set, else from ``<data dir>/claim-seal.pem``,
    generated there (mode 0600) on first start: codes sealed before a restart still open, and
    ``--fresh`` makes a new pair. A ``REGISTRY_CLAIM_SEAL_PUBLIC_KEY`` set is left as it is."""
    private = environ.get("NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY")
    if private is None:
        path = data_dir / CLAIM_SEAL_FILE
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(sealing.generate_private_pem())
        private = path.read_text()
    try:
        public = sealing.public_pem(private)
    except sealing.SealingKeyError as error:
        raise StackError(f"the claim-seal private key: {error}") from None
    return {
        "notifications": {"NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY": private},
        "registry": (
            {}
            if "REGISTRY_CLAIM_SEAL_PUBLIC_KEY" in environ
            else {"REGISTRY_CLAIM_SEAL_PUBLIC_KEY": public}
        ),
    }


def _base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


async def _check_kafka(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), 15)
    except Exception as error:
        raise StackError(f"cannot reach Kafka at {bootstrap}: {error}") from error
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def _check_postgres(server_url: str) -> None:
    try:
        connection = await asyncpg.connect(server_url, timeout=10)
    except Exception as error:
        raise StackError(f"cannot reach PostgreSQL at {mask_url(server_url)}: {error}") from error
    await connection.close()


async def run(options: DevOptions) -> int:
    """Run the stack until asked to stop. Returns the process exit code."""
    stack = DevStack(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    code = 0
    try:
        starting = asyncio.create_task(stack.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StackError):
                await starting
            stack.output.say("interrupted while starting")
            return 130
        stopping.cancel()
        starting.result()  # raises StackError
        stack.output.say(f"all services ready in {time.monotonic() - started:.1f} s")
        # Where everything is, before anything else: the demo's lines and the logs follow it.
        print(f"\n{stack.summary()}\n", flush=True)
        if stack.mailbox is not None:
            stack.output.say(
                f"mail: smtp://127.0.0.1:{options.smtp_port}, kept in {stack.mailbox.folder}/"
            )
        if options.local_webhooks:
            stack.output.say("webhooks: receivers on this machine allowed (http, loopback)")
        if options.demo:
            await stack.load_demo()
        stack.output.say("logs follow; Ctrl-C stops everything")
        died = await stack.watch(stop)
        if died is not None:
            stack.output.say(f"{died} stopped unexpectedly; stopping everything")
            code = 1
    except StackError as error:
        print(f"maillage dev: {error}", file=sys.stderr, flush=True)
        code = 1
    finally:
        stack.output.say("stopping")
        await stack.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stack.output.say("stopped")
    return code
