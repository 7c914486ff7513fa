"""Every command the documentation shows runs as written after ``make dev`` on a bare machine.

A bare machine has ``python3`` and ``make``: ``uv`` lives in ``.tools/bin`` and the project's
commands in ``.venv/bin``, neither on ``PATH``. So every command of every shell block (```sh,
```bash, ```shell, ```console) of every Markdown file is one of

* ``make TARGET [VAR=…]``: the Makefile has the target, and each ``maillage`` command it would
  run (``make -n``) answers ``--help`` with the options given;
* ``.venv/bin/maillage …`` or ``.venv/bin/python script.py|-m module …``: it answers ``--help``;
* ``curl`` (not run: it needs the stack) or another outside tool the README names as needed.

Anything else (``uv run …``, a bare ``maillage``) fails here with the file and line.
"""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from maillage.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
SHELL_BLOCK = re.compile(r"^```(sh|bash|shell|console)[ \t]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
# Outside tools the README says a reader needs besides python3 and make, and for what.
OUTSIDE_TOOLS = {
    "curl": "the tours' HTTP calls",
    "jq": "reading JSON answers in the tours",
    "docker": "the compose stack",
    "openssl": "the compose stack's secrets",
    "kubectl": "deploying to Kubernetes (docs/operations.md)",
}
MAKE = shutil.which("make") or "make"
BUILTINS = {"export", "cd", "source", "."}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    where: str  # file:line of the block
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.words)}"


def documents() -> list[Path]:
    skipped = {".venv", ".tools", ".maillage", ".git", "node_modules"}
    return sorted(
        path
        for path in ROOT.rglob("*.md")
        if not skipped.intersection(path.relative_to(ROOT).parts)
        and not any(part.startswith(".pytest") for part in path.parts)
    )


def _closing(text: str, start: int) -> int:
    """Index of the ``)`` closing a ``$(`` whose body starts at ``start``."""
    depth, quote, index = 1, "", start
    while index < len(text):
        char = text[index]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise ValueError(f"unclosed $( in {text!r}")


def simple_commands(text: str) -> list[str]:
    """The simple commands of a shell text: split at unquoted newlines (after joining ``\\``
    continuations), ``;``, ``&``, ``|``; comments dropped; each ``$(…)`` is a command of its own
    and leaves a placeholder word where it stood."""
    found: list[str] = []
    current: list[str] = []
    quote, index = "", 0
    while index < len(text):
        char = text[index]
        if char == "\\" and quote != "'" and index + 1 < len(text):
            if text[index + 1] != "\n":
                current.append(text[index : index + 2])
            index += 2
            continue
        if text.startswith("$(", index) and quote != "'":
            end = _closing(text, index + 2)
            found += simple_commands(text[index + 2 : end])
            current.append("SUBSTITUTED")
            index = end + 1
            continue
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (not current or current[-1].isspace()):
            while index < len(text) and text[index] != "\n":
                index += 1
            continue
        elif char in "\n;&|":
            found.append("".join(current))
            current = []
            index += 1
            continue
        current.append(char)
        index += 1
    found.append("".join(current))
    return [command.strip() for command in found if command.strip()]


def documented_commands() -> list[Command]:
    commands: dict[tuple[str, ...], Command] = {}
    for path in documents():
        text = path.read_text(encoding="utf-8")
        for block in SHELL_BLOCK.finditer(text):
            line = text.count("\n", 0, block.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            body = "\n".join(
                row.removeprefix("$ ") for row in block.group(2).splitlines()
            )  # a console block's prompts
            for command in simple_commands(body):
                words = shlex.split(command)
                while words and ASSIGNMENT.match(words[0]):
                    words.pop(0)  # VAR=value before the program
                if words and words[0] not in BUILTINS:
                    commands.setdefault(tuple(words), Command(where, tuple(words)))
    return list(commands.values())


COMMANDS = documented_commands()


def _help(argv: list[str]) -> None:
    """``ARGV --help`` answers its usage. The ``maillage`` console script and Python scripts run
    in this process: as subprocesses they take seconds each to import on a loaded machine."""
    output = io.StringIO()
    if argv[0] == ".venv/bin/maillage":
        script = (ROOT / argv[0]).read_text(encoding="utf-8")
        assert "from maillage.cli.main import app" in script, script
        invoked = CliRunner().invoke(app, [*argv[1:], "--help"], prog_name="maillage")
        code = invoked.exit_code
        output.write(invoked.output)
    else:
        assert argv[0] == ".venv/bin/python", argv
        if argv[1] == "-m":
            run, target, arguments = runpy.run_module, argv[2], argv[3:]
        else:
            run, target, arguments = runpy.run_path, str(ROOT / argv[1]), argv[2:]
        saved, saved_path = sys.argv, list(sys.path)
        sys.argv = [target, *arguments, "--help"]
        if run is runpy.run_path:
            sys.path.insert(0, str(Path(target).parent))  # as `python script.py` does
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                run(target, run_name="__main__")
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        finally:
            sys.argv, sys.path[:] = saved, saved_path
    assert code == 0, f"{shlex.join(argv)} --help:\n{output.getvalue()}"
    assert "usage" in output.getvalue().lower(), output.getvalue()


def _maillage_commands_of_make(arguments: tuple[str, ...]) -> list[list[str]]:
    """What ``make ARGUMENTS`` would run (``make -n``), as ``.venv/bin/maillage …`` commands."""
    dry_run = subprocess.run(
        ["make", "-n", "--no-print-directory", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
    found = []
    for line in dry_run.stdout.splitlines():
        words = shlex.split(line)
        if "maillage" in words:
            found.append([".venv/bin/maillage", *words[words.index("maillage") + 1 :]])
    return found


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_a_documented_command_exists_and_answers_help(command: Command) -> None:
    program, *arguments = command.words
    if program == "make":
        for maillage in _maillage_commands_of_make(tuple(arguments)):
            _help(maillage)
    elif program in (".venv/bin/maillage", ".venv/bin/python"):
        assert (ROOT / program).exists(), f"{command}: no {program} after `make`"
        if program == ".venv/bin/python":
            assert arguments[0].endswith(".py") or arguments[0] == "-m", command
            assert arguments[0] == "-m" or (ROOT / arguments[0]).is_file(), command
        _help([program, *arguments])
    else:
        assert program in OUTSIDE_TOOLS, (
            f"{command}: `{program}` is not on a bare machine after `make dev`; write "
            "`.venv/bin/{program}` or a make target, or name it in README's outside tools"
        )


def test_the_documentation_shows_the_commands_this_test_reads() -> None:
    """The reader finds the blocks: a change of fence or layout would make the test above empty."""
    programs = {command.words[0] for command in COMMANDS}
    assert {"make", ".venv/bin/maillage", "curl"} <= programs
    maillage = {command.words[1] for command in COMMANDS if command.words[0].endswith("maillage")}
    assert {"dev", "dlq", "events", "registry", "webhooks"} <= maillage
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for tool in OUTSIDE_TOOLS:
        assert f"`{tool}`" in readme or tool == "docker", f"README does not name `{tool}`"


def test_the_reader_splits_commands_as_a_shell_does() -> None:
    block = (
        "# a comment\n"
        "TOKEN=$(curl -s http://x | jq -r .t)  # why\n"
        "A=1 B='two words' .venv/bin/maillage dev \\\n"
        '    --demo; make test && echo "$(date +%s) # not a comment"\n'
    )
    assert simple_commands(block) == [
        "curl -s http://x",
        "jq -r .t",
        "TOKEN=SUBSTITUTED",
        "A=1 B='two words' .venv/bin/maillage dev     --demo",
        "make test",
        "date +%s",
        'echo "SUBSTITUTED # not a comment"',
    ]


def test_make_installs_uv_into_tools_when_path_has_none(tmp_path: Path) -> None:
    """`make` on a machine whose PATH has no uv: pip installs it into .tools/, which then syncs;
    and no make call sets uv's deprecated UV_NATIVE_TLS (uv warns on every call)."""
    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())
    (tmp_path / "bin").mkdir()  # nothing on PATH: make runs its recipes with /bin/sh
    bare = {"PATH": str(tmp_path / "bin"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [MAKE, "-n", "sync"], cwd=tmp_path, env=bare, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    tools = tmp_path / ".tools"
    venv, pip, sync = result.stdout.splitlines()
    assert venv == f"python3 -m venv {tools}"
    assert pip.startswith(f"{tools}/bin/python -m pip install")
    assert '"uv==' in pip
    assert sync == f"{tools}/bin/uv sync --frozen"
    # The environment every recipe (so every uv call) gets.
    (tmp_path / "env.mk").write_text("recipe-environment:\n\t@export -p\n")  # a builtin
    recipe = subprocess.run(
        [MAKE, "-f", "Makefile", "-f", "env.mk", "recipe-environment"],
        cwd=tmp_path,
        env=bare,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"\bUV_SYSTEM_CERTS=['\"]?1['\"]?$", recipe, re.MULTILINE), recipe
    assert "UV_NATIVE_TLS" not in recipe
