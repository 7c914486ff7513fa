# The two commands: `make dev` runs the system, `make test` runs every check.
# Both start from a bare machine with python3 and make: uv is installed with pip into .tools/
# when it is not on PATH, then `uv sync --frozen` installs the locked workspace into .venv/.

UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
ARGS ?=
# Trust the system's certificate store (it holds any corporate or proxy CA), as pip does.
# (UV_SYSTEM_CERTS replaced UV_NATIVE_TLS, which uv now warns about on every call.)
export UV_SYSTEM_CERTS ?= 1

.PHONY: dev demo test lint typecheck imports pytest sync chromium screenshots clean help

help:
	@echo "make dev    run the whole system (ARGS='--fresh --demo' to pass options)"
	@echo "make test   run every check: ruff, mypy, import-linter, pytest"

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Cheap when nothing changed (about a second), so every target runs it.
sync: | $(UV)
	$(UV) sync --frozen

dev: sync
	$(UV) run --frozen --no-sync maillage dev $(ARGS)

demo: sync
	$(UV) run --frozen --no-sync maillage dev --demo $(ARGS)

lint: sync
	$(UV) run --frozen --no-sync ruff check .
	$(UV) run --frozen --no-sync ruff format --check .

typecheck: sync
	$(UV) run --frozen --no-sync mypy --strict libs/common/src

imports: sync
	$(UV) run --frozen --no-sync lint-imports

# The console's browser test drives Debian's chromium: installed when missing and we can.
chromium:
	sh services/console/tools/ensure_chromium.sh

pytest: sync chromium
	$(UV) run --frozen --no-sync pytest -n 2 --dist loadfile --durations=15

test: lint typecheck imports pytest

# The README's picture of the console's waterfall, docs/console-waterfall.png, taken by the
# browser test (any other run of it writes the picture to its temporary folder).
BROWSER_TEST := services/console/tests/test_console_browser.py
screenshots: sync chromium
	MAILLAGE_SCREENSHOTS=1 $(UV) run --frozen --no-sync pytest -q -n 0 -p no:randomly $(BROWSER_TEST)

clean:
	rm -rf .venv .tools .maillage .pytest_cache .mypy_cache .ruff_cache
