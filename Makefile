# tracehop: the verbs a person types. `make` alone lists them.
#
# Every target that runs Python depends on `install`, which creates .venv and installs the locked
# dependencies only when requirements.lock or pyproject.toml changed since the last install (a stamp file).

.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
INSTALL_STAMP := $(VENV)/.tracehop-installed
# Python for a new .venv: 3.11 when there is one, else whatever python3 is.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV := $(shell command -v uv)
TRACEHOP := $(PY) -m tracehop

.PHONY: help install up down status urls traffic trace logs test test-stack audit bench lint fmt

help: ## list the targets
	@echo "tracehop: one trace across Flask and Celery, with logs and metrics that line up"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Start here: make up, then make traffic, then make trace."

install: $(INSTALL_STAMP) ## create .venv and install the locked dependencies (only when they changed)

$(INSTALL_STAMP): requirements.lock pyproject.toml
ifneq ($(UV),)
	@test -x $(PY) || $(UV) venv --python 3.11 $(VENV)
	$(UV) pip install --python $(PY) -r requirements.lock
	$(UV) pip install --python $(PY) -e . --no-deps
else
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -r requirements.lock
	$(PY) -m pip install -e . --no-deps
endif
	@touch $@

# --- the running system -------------------------------------------------------------------------------

up: install ## start everything (docker compose if a Docker engine answers, else the embedded local stack)
	@$(TRACEHOP) up

down: install ## stop everything `make up` started
	@$(TRACEHOP) down

status: install ## state, pid and readiness of each component
	@$(TRACEHOP) status

urls: install ## where each component listens
	@$(TRACEHOP) urls

traffic: install ## send a bounded, realistic mix of requests and print their trace ids (COUNT=30, FAULTS=1 adds fault-injected ones)
	@$(TRACEHOP) traffic $(if $(COUNT),--count $(COUNT)) $(if $(FAULTS),--faults)

trace: install ## show one trace as a waterfall: ID=<trace id>, default the latest POST /api/users of `make traffic`
	@$(TRACEHOP) trace $(ID)

logs: install ## every log line of one trace from all services, in time order: ID=<trace id> (JSON=1 for raw lines)
	@test -n "$(ID)" || { echo "usage: make logs ID=<trace id>   (make traffic prints trace ids)"; exit 2; }
	@$(TRACEHOP) logs $(ID) $(if $(JSON),--json)

# --- measuring -----------------------------------------------------------------------------------------

.PHONY: bench
bench: install ## measure the cost of tracing, traced vs untraced (BENCH_ROUNDS=3 BENCH_DURATION=15; PROFILE=1: py-spy)
	@$(PY) -m tracehop.bench $(if $(PROFILE),--profile bench/profiles)

# --- development ----------------------------------------------------------------------------------------

test: install ## run the whole test suite (unit, integration with a private local stack, static checks)
	$(PY) -m pytest $(PYTEST_ARGS)

test-stack: install ## the same trace/log/metric checks against a running compose stack (exits non-zero if none answers)
	$(PY) -m pytest tests/stack $(PYTEST_ARGS)

audit: install ## audit the locked dependencies for known vulnerabilities (pip-audit)
	$(PY) -m tools.dependency_audit

lint: install ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: install ## format the code and apply ruff's safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
