# The two commands: `make run` (serve the pages and the API on embedded defaults) and `make test`.
# Both build the virtual environment first; nothing needs installing by hand.

PYTHON ?= python3
# The pip the virtual environment installs with (pip-tools, which compiles the requirements, follows it).
PIP_VERSION := 26.3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000

# Settings for a deployment can live in .env (see .env.example).
-include .env
export
# Development defaults for the embedded mode; .env or the environment override them.
DEBUG ?= true
# Links in emails name the port the server really listens on (PORT=18610 make run).
SITE_URL ?= http://127.0.0.1:$(PORT)
# The browser tests drive Debian's Chromium; nothing downloads a browser.
CHROMIUM ?= /usr/bin/chromium

# The tests and the type check run in an environment of their own: nothing from .env (which may hold a
# deployment's settings, REKINDLE_ENGINE=comfyui and all) or the shell reaches them but these. The tests then
# choose their own services (rekindle/testing/services.py).
CLEAN_ENV := env -i PATH="$(PATH)" HOME="$(HOME)" LANG=C.UTF-8 TMPDIR="$${TMPDIR:-/tmp}" \
	CI="$${CI:-}" REKINDLE_CHROMIUM="$${REKINDLE_CHROMIUM:-$(CHROMIUM)}" $${REKINDLE_ARTIFACTS:+REKINDLE_ARTIFACTS="$$REKINDLE_ARTIFACTS"} \
	TEST_POSTGRES_URL="$${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/rekindle}" \
	TEST_REDIS_URL="$${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"

.PHONY: setup run worker test lint typecheck pytest browser bench requirements clean

# requirements-dev.txt holds every package of requirements.txt too, at the same versions, all with hashes.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $(STAMP)

# After editing requirements.in or requirements-dev.in: compile both, with hashes, keeping the other pins.
requirements: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links --output-file requirements.txt requirements.in
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links --output-file requirements-dev.txt requirements-dev.in

setup: $(STAMP)
	$(BIN)/python manage.py migrate --noinput

run: setup
	$(BIN)/python manage.py serve --port $(PORT)

worker: setup
	$(BIN)/python manage.py rundramatiq

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(CLEAN_ENV) DEBUG=true $(BIN)/mypy .

# The chaos run and the schema fuzz start whole stacks of processes of their own: they run after the rest, one
# at a time, so they never share the two cores with the parallel tests (exit code 5: PYTEST_ARGS selected none).
SERIAL_MARKS := chaos or fuzz
pytest: $(STAMP)
	$(CLEAN_ENV) $(BIN)/python -m pytest -n 2 -m "not ($(SERIAL_MARKS))" $(PYTEST_ARGS)
	$(CLEAN_ENV) $(BIN)/python -m pytest -n 0 -s -m "$(SERIAL_MARKS)" $(PYTEST_ARGS) || test $$? -eq 5

# Debian's chromium package, when it is missing and we may install it (root, as in CI). Without it the
# browser tests are skipped with a message, or fail when CI is set.
browser:
	@if [ ! -x "$(CHROMIUM)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's chromium for the browser tests"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
			|| echo "Could not install chromium"; \
	fi
	@test -x "$(CHROMIUM)" || echo "No Chromium at $(CHROMIUM): the browser tests will be skipped (or fail with CI set)"

test: setup browser lint typecheck pytest

bench: $(STAMP)
	@echo "Benchmarks are run one by one: see bench/README.md"

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
