# The two commands of the README: `make demo` (main job) and `make test` (the suite).
# Both create .venv and install what they need on a fresh Debian machine with Python 3.11+.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck pytest setup system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) system-deps

# Real services for the tests: mosquitto from Debian's packages when it is missing.
system-deps:
	@bash .ci/system-deps

# The main job: a whole station on the simulator (no broker, no hardware needed).
# Options: make demo DEMO_ARGS="--hubs 48 --faults harsh"
demo: $(STAMP)
	$(BIN)/jigd demo $(DEMO_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: setup
	$(BIN)/mypy

# Two workers, a test file each at a time: the suite mostly waits on real processes.
pytest: setup
	$(BIN)/pytest -n 2 --dist loadfile

test: lint typecheck pytest

# A quick check while working (not what CI runs): everything but the `slow` end-to-end tests.
test-fast: setup
	$(BIN)/pytest -n 2 --dist loadfile -m "not slow"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
