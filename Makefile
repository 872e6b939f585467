# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
UV_VERSION := 0.13.9

.PHONY: install browser demo test lint typecheck unit unit-postgres bench ui clean lock

$(STAMP): pyproject.toml requirements.lock overrides.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock --override overrides.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The browser tests (tests/test_browser_*.py) drive Debian's chromium through Playwright; it is
# installed with apt (as root, or through sudo) when `command -v chromium` finds none.
browser:
	scripts/ensure-chromium

demo: install
	$(BIN)/leadflow demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# scripts/with-dovecot: a throwaway Dovecot IMAP server on loopback for the tests (and benchmarks).
unit: install browser
	scripts/with-dovecot $(BIN)/pytest

# The same suite against a throwaway PostgreSQL server on loopback (started and removed by
# scripts/with-postgres; Debian's postgresql package is installed if missing).
unit-postgres: install browser
	scripts/with-dovecot scripts/with-postgres $(BIN)/pytest

test: lint typecheck unit unit-postgres

bench: install
	scripts/with-dovecot $(BIN)/python -m benchmarks

# Prefect's server and UI on var/prefect (the database the temporary servers use too). While it
# runs, `leadflow run` finds it at http://127.0.0.1:4200/api and uses it instead of starting a
# temporary server; with another UI_PORT, set PREFECT_API_URL (or LEADFLOW_PREFECT_UI_URL).
# Prefect makes its home folder but not the folders above it: var/ is not in a fresh clone.
UI_PORT ?= 4200
ui: install
	mkdir -p var/prefect
	PREFECT_HOME=$(CURDIR)/var/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false \
		PREFECT_SERVER_API_PORT=$(UI_PORT) \
		PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem \
		$(BIN)/prefect server start --host 127.0.0.1 --port $(UI_PORT)

# Regenerate the lock file after editing dependencies in pyproject.toml.
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra dev --override overrides.txt \
		-o requirements.lock --python-version 3.11

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
