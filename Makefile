# unimeter — the two commands a newcomer needs: `make demo` and `make test`.
#
#   make setup      virtual environment + the project and its dev tools (once)
#   make demo       start local services, migrate, run the main job end to end
#   make test       lint, type-check, import contracts, unit + integration tests
#   make test-slow  the long soak, fuzz and fault runs (not in CI's default run)
#   make faults     the full fault run (kill -9 / outages, 100,000 readings) and its oracle
#   make bench      every benchmark; results in bench/results/
#   make lint       ruff + mypy + import-linter only
#   make services   start Kafka, PostgreSQL and Mosquitto locally; `make stop` stops them

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
UNIMETER := $(VENV)/bin/unimeter
STARTED  := .unimeter/make-test.started
PYTEST_ARGS ?=
FAULTS_ARGS ?=

.PHONY: setup demo test test-slow faults bench lint services stop clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Starts what the tests need, runs every check, and stops only what it started (a developer's
# already-running services are left alone), whatever the outcome.
test: setup
	@mkdir -p .unimeter
	$(UNIMETER) services up --started-file $(STARTED)
	@status=0; \
	$(MAKE) --no-print-directory lint || status=$$?; \
	if [ $$status -eq 0 ]; then $(PY) -m pytest $(PYTEST_ARGS) || status=$$?; fi; \
	$(UNIMETER) services down --started-file $(STARTED); \
	exit $$status

test-slow: setup
	@mkdir -p .unimeter
	$(UNIMETER) services up --started-file $(STARTED)
	@status=0; $(PY) -m pytest -m slow $(PYTEST_ARGS) || status=$$?; \
	$(UNIMETER) services down --started-file $(STARTED); exit $$status

# The full fault run (about 20-30 minutes): 100,000 readings, every process and both services
# killed, Kafka and PostgreSQL down 60 s each, uploads delivered 1-5 times out of order — on
# private Kafka/PostgreSQL instances (the shared ones are never touched). Exit 1 unless the
# oracle finds 0 lost, 0 duplicated and equal totals; report in bench/results/faults.json.
faults: setup
	$(UNIMETER) services fetch
	$(UNIMETER) faults run --json bench/results/faults.json $(FAULTS_ARGS)

bench: setup
	$(UNIMETER) services up
	$(UNIMETER) bench

# The demo starts the services, migrates and creates the topics itself; e.g.
# `make demo DEMO_ARGS="--meters 1000 --days 1"` for a quicker run, `--keep-running` to look
# around afterwards.
DEMO_ARGS ?=
demo: setup
	$(UNIMETER) demo $(DEMO_ARGS)

services: setup
	$(UNIMETER) services up

stop: setup
	$(UNIMETER) services down

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
