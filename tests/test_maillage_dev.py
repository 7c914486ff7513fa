"""`maillage dev` as a developer runs it: a real process tree, real ports, a real Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from maillage.cli.dev import SERVICES
from maillage.cli.embedded import free_port, free_ports, port_is_free
from maillage.cli.main import app

MAILLAGE = str(Path(sys.executable).parent / "maillage")
pytestmark = pytest.mark.slow


def start_dev(
    tmp_path: Path, port_base: int, *extra: str, **variables: str
) -> subprocess.Popen[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    env["NO_COLOR"] = "1"
    env.update(variables)
    return subprocess.Popen(
        [
            MAILLAGE,
            "dev",
            "--data-dir",
            str(tmp_path / "data"),
            "--port-base",
            str(port_base),
            "--broker-port",
            str(free_port()),
            "--postgres-port",
            str(free_port()),
            "--smtp-port",
            str(free_port()),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


class Output:
    """Collects a child's output on a thread, so the test can wait for a line without blocking."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.arguments = [str(argument) for argument in process.args]  # type: ignore[union-attr]
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(marker in line for line in self.lines):
                return self.text
            if not self._thread.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no {marker!r} within {timeout} s; output:\n{self.text[-6000:]}")

    def option(self, name: str) -> str:
        """The value the child was given for option ``name``."""
        return self.arguments[self.arguments.index(name) + 1]

    def after(self, marker: str) -> str:
        """The rest of the first line holding ``marker``, after it."""
        line = next(line for line in self.lines if marker in line)
        return line.split(marker, 1)[1].strip()

    def finish(self) -> str:
        self._thread.join(timeout=10)
        return self.text

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def test_dev_starts_everything_and_stops_clean_on_ctrl_c(tmp_path: Path) -> None:
    port_base = free_ports(len(SERVICES) + 2)
    # Generous deadlines: the machine running the suite is shared and often loaded.
    process = start_dev(tmp_path, port_base, "--demo", "--local-webhooks", "--ready-timeout", "120")
    try:
        started = time.monotonic()
        output = Output(process)
        text = output.wait_for("logs follow", timeout=180)
        ready_after = time.monotonic() - started
        # Where everything is comes right after "ready", before the demo's lines and the logs.
        ours = [line for line in output.lines if line.startswith("maillage: ")]
        ready = next(i for i, line in enumerate(ours) if "all services ready" in line)
        assert ours[ready + 1 : ready + 3] == [
            f"maillage: mail: smtp://127.0.0.1:{output.option('--smtp-port')}, "
            f"kept in {tmp_path / 'data' / 'mail'}/",
            "maillage: webhooks: receivers on this machine allowed (http, loopback)",
        ]
        assert ours[ready + 3].startswith("maillage: demo: ")
        table = output.lines.index(ours[ready]) + 1
        assert output.lines[table] == ""
        # The staff console first (decision 53), then the services' table.
        console = f"http://127.0.0.1:{port_base + len(SERVICES)}"
        assert output.lines[table + 1].split()[:3] == ["staff", "console", console]
        assert output.lines[table + 2] == ""
        table += 2
        assert output.lines[table + 1].split() == [
            "service",
            "API",
            "docs",
            "(OpenAPI)",
            "events",
            "(AsyncAPI)",
            "health",
        ]
        assert set(output.lines[table + 2]) == {"-", " "}
        # No line of a group assignment runs to thousands of characters (aiokafka's sets).
        assignments = [line for line in output.lines if "assigned" in line and "partitions" in line]
        assert assignments
        assert max(len(line) for line in assignments) < 1000, max(assignments, key=len)
        assert "TopicPartition(" not in text
        # The demo's e-mail channels: their confirmation mails reach the development mailbox.
        output.wait_for("Confirmez votre adresse", timeout=30)
        assert len(list((tmp_path / "data" / "mail").glob("*.eml"))) >= 2
        # The stack's claim-seal pair, generated at first start, readable by its owner only.
        assert (tmp_path / "data" / "claim-seal.pem").stat().st_mode & 0o777 == 0o600
        for index, name in enumerate(SERVICES):
            base = f"http://127.0.0.1:{port_base + index}"
            assert f"{base}/docs" in text
            assert f"{base}/asyncapi" in text
            ready = httpx.get(f"{base}/readyz", timeout=5)
            assert ready.status_code == 200, (name, ready.text)
            checks = ready.json()["checks"]
            assert {"database", "broker", "outbox"} <= set(checks), checks  # + workers if any
            assert set(checks.values()) == {"ok"}, checks
            assert httpx.get(f"{base}/openapi.json", timeout=5).json()["info"]["title"]
            assert httpx.get(f"{base}/asyncapi.json", timeout=5).json()["asyncapi"]
        print(f"maillage dev: five services ready after {ready_after:.1f} s")
        sign_in_to_the_console_with_the_demo_operator(console)
        # The supervisor's trace store received the demo's spans (decision 54).
        store = f"http://127.0.0.1:{port_base + len(SERVICES) + 1}"
        services = httpx.get(f"{store}/api/v3/services", timeout=5).json()["services"]
        assert {f"maillage-{name}" for name in SERVICES} <= set(services), services
        receive_a_partners_webhooks_as_the_readme_shows(output, port_base)

        children = psutil.Process(process.pid).children(recursive=True)
        listening = {
            c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN
        }
        ports = [port_base + i for i in range(len(SERVICES) + 2)]  # + console, trace store
        assert set(ports) <= listening
        assert len(children) >= len(SERVICES) + 2  # five services, broker, postgres (+ backends)

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert output.finish().endswith("maillage: stopped")
        # Services first, then the trace store, then PostgreSQL: no export retried against a
        # stopped store, no pool trying to reconnect to a stopping database.
        stopping = output.lines[output.lines.index("maillage: stopping") :]
        noise = ("while exporting", "Failed to export", "connection floor", "Traceback")
        assert [line for line in stopping if any(n in line for n in noise)] == []
        survivors = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert survivors == []
        # Nothing listens on the services' ports any more. (A bind probe is not the check: the
        # ports come from the ephemeral range, so another test's outgoing connection may hold one.)
        still_listening = {
            c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN
        } & set(ports)
        assert still_listening == set()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_dev_refuses_a_port_in_use_with_a_clear_message(tmp_path: Path) -> None:
    port_base = free_ports(len(SERVICES) + 2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port_base + 2))
        squatter.listen()
        process = start_dev(tmp_path, port_base)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"port {port_base + 2}, wanted by the stages3e service, is already in use" in output
    assert "Traceback" not in output
    # Nothing was started, so nothing is left behind.
    assert not (tmp_path / "data" / "postgres").exists()


def test_dev_reports_a_service_that_crashes_at_start(tmp_path: Path) -> None:
    port_base = free_ports(len(SERVICES) + 2)
    env_key = "FUNDING_DATABASE_POOL_MAX"
    os.environ[env_key] = "0"  # invalid (must be >= 1): the funding service refuses its settings
    try:
        process = start_dev(tmp_path, port_base)
        output, _ = process.communicate(timeout=90)
    finally:
        del os.environ[env_key]
    assert process.returncode == 1
    assert "the funding service exited with code" in output
    assert "database_pool_max" in output


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:{port}", "cannot reach Kafka at 127.0.0.1:{port}"),
        (
            "DATABASE_URL",
            "postgresql://maillage:pw@127.0.0.1:{port}/postgres",
            "cannot reach PostgreSQL at postgresql://maillage:***@127.0.0.1:{port}/postgres",
        ),
    ],
)
def test_dev_reports_an_unreachable_external_part(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    port = free_port()  # nothing listens there
    process = start_dev(
        tmp_path, free_ports(len(SERVICES) + 2), **{variable: value.format(port=port)}
    )
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert message.format(port=port) in output
    assert "Traceback" not in output


def sign_in_to_the_console_with_the_demo_operator(console: str) -> None:
    """`--demo` makes the demo staff accounts usable in the console at once."""
    with httpx.Client(base_url=console, timeout=10) as browser:
        page = browser.get("/connexion")
        assert page.status_code == 200
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        signed = browser.post(
            "/connexion",
            data={"csrf": csrf, "username": "operator@maillage.test", "password": "demo-operator"},
        )
        assert signed.status_code == 303, signed.text
        assert browser.get("/partenaires").status_code == 200


def receive_a_partners_webhooks_as_the_readme_shows(output: Output, port_base: int) -> None:
    """The README's offline example, on the stack ``--local-webhooks`` started: a partner
    subscribes http receivers on loopback, runs ``maillage webhooks receive`` with the secret,
    changes its record, and the receiver verifies the delivery; one run with another secret
    refuses it (401), which the delivery log shows."""
    registry, notifications = f"http://127.0.0.1:{port_base}", f"http://127.0.0.1:{port_base + 4}"
    # The token is printed shortened; whole in a file only its owner reads.
    shown = output.after("operator token (15 min):")
    path = Path(shown.split("whole in ", 1)[1].rstrip(")"))
    assert path.stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    assert shown.startswith(token[:28] + "…")
    assert token not in output.text
    operator = {"Authorization": f"Bearer {token}"}
    efrei = output.after("demo: registry: EFREI Paris (démo)").strip("()")
    client = httpx.post(
        f"{registry}/partners/{efrei}/clients", json={"name": "tour"}, headers=operator
    )
    assert client.status_code == 201, client.text
    issued = httpx.post(
        f"{registry}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.json()["client_id"], client.json()["client_secret"]),
    )
    partner = {"Authorization": f"Bearer {issued.json()['access_token']}"}

    receivers: dict[str, tuple[dict[str, object], subprocess.Popen[str], Output]] = {}
    try:
        for name in ("right secret", "wrong secret"):
            port = free_port()
            endpoint = httpx.post(
                f"{notifications}/webhook-endpoints",
                json={"url": f"http://127.0.0.1:{port}/maillage", "event_types": []},
                headers=partner,
            )
            assert endpoint.status_code == 201, endpoint.text
            secret = endpoint.json()["secret"]
            if name == "wrong secret":
                secret = "whsec_" + "QUJD" * 8  # well formed, not this endpoint's
            process = subprocess.Popen(
                [MAILLAGE, "webhooks", "receive", "--port", str(port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "WEBHOOK_SECRET": secret},
            )
            receivers[name] = (endpoint.json(), process, Output(process))
        for _, _, lines in receivers.values():  # a loaded machine takes its time to start them
            lines.wait_for("receiving webhooks on http://127.0.0.1:", timeout=180)

        changed = httpx.patch(
            f"{registry}/partners/{efrei}", json={"commune_name": "Villejuif"}, headers=partner
        )
        assert changed.status_code == 200, changed.text
        verified = receivers["right secret"][2].wait_for("verified", timeout=120)
        assert "fr.maillage.registry.partner.updated.v1" in verified
        assert '"commune_name":"Villejuif"' in verified
        refused = receivers["wrong secret"][2].wait_for("refused", timeout=120)
        assert "No matching signature found" in refused
        assert "verified" not in refused

        # The delivery log says the same: delivered (204), and refused (401, to be retried).
        for name, answer in (("right secret", 204), ("wrong secret", 401)):
            deliveries = f"{notifications}/webhook-endpoints/{receivers[name][0]['id']}/deliveries"
            deadline = time.monotonic() + 60
            while True:
                log = httpx.get(deliveries, headers=partner).json()["items"]
                if (log and log[0]["last_status_code"] == answer) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert [d["event_type"] for d in log] == ["fr.maillage.registry.partner.updated.v1"]
            assert log[0]["last_status_code"] == answer, log
            assert log[0]["status"] == ("delivered" if answer == 204 else "pending"), log
        for _, process, _ in receivers.values():  # Ctrl-C stops a receiver cleanly
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
    finally:
        for _, process, _ in receivers.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.parametrize("secret", ["", "nope", "whsec_not base64!"])
def test_the_webhook_receiver_refuses_what_is_not_a_secret(secret: str) -> None:
    refused = CliRunner().invoke(app, ["webhooks", "receive", "--port", "0", "--secret", secret])
    assert refused.exit_code == 2, refused.output
    assert "not the endpoint's whsec_ secret" in refused.output


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_webhook_receiver_stops_on_a_signal_even_started_with_sigint_ignored(
    stop: signal.Signals,
) -> None:
    """A background job of a non-interactive shell (CI) starts with SIGINT ignored; Ctrl-C and
    SIGTERM must still stop the receiver (it hung there, and a CI run failed on it)."""
    process = subprocess.Popen(
        [MAILLAGE, "webhooks", "receive", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WEBHOOK_SECRET": "whsec_" + "QUJD" * 8},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert process.stdout is not None
        assert "receiving webhooks on http://127.0.0.1:" in process.stdout.readline()
        process.send_signal(stop)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_dev_generates_the_claim_seal_pair_once_and_keeps_a_configured_one(tmp_path: Path) -> None:
    """Decision 63: notifications gets the private key, the registry its public half; the pair is
    kept in the data directory (codes sealed before a restart still open)."""
    from maillage.cli.dev import claim_seal_keys
    from maillage.cli.embedded import StackError
    from maillage.common import sealing

    first = claim_seal_keys(tmp_path, {})
    again = claim_seal_keys(tmp_path, {})
    assert first == again
    private = first["notifications"]["NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY"]
    public = first["registry"]["REGISTRY_CLAIM_SEAL_PUBLIC_KEY"]
    assert public == sealing.public_pem(private)
    assert private != sealing.DEV_PRIVATE_KEY_PEM
    chosen = sealing.generate_private_pem()
    configured = claim_seal_keys(tmp_path, {"NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY": chosen})
    assert configured["registry"]["REGISTRY_CLAIM_SEAL_PUBLIC_KEY"] == sealing.public_pem(chosen)
    kept = claim_seal_keys(tmp_path, {"REGISTRY_CLAIM_SEAL_PUBLIC_KEY": "theirs"})
    assert kept["registry"] == {}
    with pytest.raises(StackError, match="claim-seal private key"):
        claim_seal_keys(tmp_path, {"NOTIFICATIONS_CLAIM_SEAL_PRIVATE_KEY": "not a key"})


def test_ports_picked_for_servers_lie_below_the_ephemeral_range() -> None:
    """A listening port picked inside the kernel's ephemeral range can be taken by any outgoing
    connection before the server binds it (a CI run lost a `maillage dev` service that way)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for count in (1, 2, len(SERVICES) + 2):
        for _ in range(20):
            base = free_ports(count)
            assert base + count <= low
            assert all(port_is_free(base + offset) for offset in range(count))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        assert not port_is_free(taken)
