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

from maillage.cli.dev import SERVICES
from maillage.cli.embedded import free_port, port_is_free

MAILLAGE = str(Path(sys.executable).parent / "maillage")
pytestmark = pytest.mark.slow


def consecutive_free_ports(count: int) -> int:
    for _ in range(50):
        base = free_port()
        if base + count < 65535 and all(port_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free ports")


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

    def finish(self) -> str:
        self._thread.join(timeout=10)
        return self.text

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def test_dev_starts_everything_and_stops_clean_on_ctrl_c(tmp_path: Path) -> None:
    port_base = consecutive_free_ports(len(SERVICES))
    process = start_dev(tmp_path, port_base, "--demo")
    try:
        started = time.monotonic()
        output = Output(process)
        text = output.wait_for("logs follow", timeout=60)
        ready_after = time.monotonic() - started
        assert "all services ready" in text
        assert "demo:" in text
        # The demo's e-mail channels: their confirmation mails reach the development mailbox.
        output.wait_for("Confirmez votre adresse", timeout=30)
        assert len(list((tmp_path / "data" / "mail").glob("*.eml"))) >= 2
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

        children = psutil.Process(process.pid).children(recursive=True)
        listening = {
            c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN
        }
        ports = [port_base + i for i in range(len(SERVICES))]
        assert set(ports) <= listening
        assert len(children) >= len(SERVICES) + 2  # five services, broker, postgres (+ backends)

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert output.finish().endswith("maillage: stopped")
        survivors = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert survivors == []
        assert all(port_is_free(port) for port in ports)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_dev_refuses_a_port_in_use_with_a_clear_message(tmp_path: Path) -> None:
    port_base = consecutive_free_ports(len(SERVICES))
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
    port_base = consecutive_free_ports(len(SERVICES))
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
        tmp_path, consecutive_free_ports(len(SERVICES)), **{variable: value.format(port=port)}
    )
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert message.format(port=port) in output
    assert "Traceback" not in output
