# tracehop: the verbs a person types. `make` alone lists them.
#
# Every target that runs Python depends on an install stamp, so .venv is created and the locked dependencies
# installed only when requirements.lock or pyproject.toml changed since the last install. The stack's verbs
# install what the stack runs; `make install`, `make test` and the other development verbs add the test, lint
# and profiling tools (the dev extra). Installs print one line; the installer's output goes to var/install.log.

.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.tracehop-installed
DEV_STAMP := $(VENV)/.tracehop-installed-dev
# Python for a new .venv: 3.11 when there is one, else whatever python3 is.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV := $(shell command -v uv)
INSTALL := VENV=$(VENV) PYTHON=$(PYTHON) UV=$(UV) tools/install_venv.sh
TRACEHOP := $(PY) -m tracehop

.PHONY: help install runtime up down status urls traffic trace logs test test-stack audit bench lint fmt

help: ## list the targets
	@echo "tracehop: one trace across Flask and Celery, with logs and metrics that line up"
	@echo
	@awk -f tools/help.awk $(MAKEFILE_LIST)
	@echo
	@echo "Start here: make up, then make traffic, then make trace."

install: $(DEV_STAMP) ## create .venv with everything: the stack, its tooling, the test, lint and profiling tools

runtime: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements.lock pyproject.toml
	@$(INSTALL) "the stack's locked dependencies" --editable .
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	@$(INSTALL) "the test, lint and profiling tools" --editable '.[dev]'
	@touch $@

# --- the running system -------------------------------------------------------------------------------

up: runtime ## start everything (docker compose if a Docker engine answers, else the embedded local stack)
	@$(TRACEHOP) up

down: runtime ## stop everything `make up` started
	@$(TRACEHOP) down

# A stopped stack is an answer, not an error of make: `python -m tracehop status` exits 3 then (the LSB code for
# "not running", for scripts), which make would report as "Error 3".
status: runtime ## state, pid and readiness of each component ("not running" is not an error)
	@$(TRACEHOP) status || test $$? -eq 3

urls: runtime ## where each component listens
	@$(TRACEHOP) urls

traffic: runtime ## send a bounded, realistic mix of requests and print their trace ids (COUNT=30, FAULTS=1 adds fault-injected ones)
	@$(TRACEHOP) traffic $(if $(COUNT),--count $(COUNT)) $(if $(FAULTS),--faults)

# ID may be a trace id or a whole traceparent/traceresponse value, even with its header name: quoted, so the
# space in "traceresponse: 00-…" reaches the command as one argument.
trace: runtime ## show one trace as a waterfall: ID=<trace id or traceresponse>, default the latest POST /api/users in the trace store
	@$(TRACEHOP) trace "$(ID)"

logs: runtime ## every log line of one trace from all services, in time order: ID=<trace id or traceresponse> (JSON=1 for raw lines)
	@test -n "$(ID)" || { echo "usage: make logs ID=<trace id>   (make traffic prints trace ids)"; exit 2; }
	@$(TRACEHOP) logs "$(ID)" $(if $(JSON),--json)

# --- measuring -----------------------------------------------------------------------------------------

.PHONY: chaos
chaos: install ## faults under load on a private stack, then every job accounted for: bench/chaos.json (SHORT=1, BROKER=amqp)
	@$(PY) -m tracehop.bench.chaos $(if $(SHORT),--short) $(if $(BROKER),--broker $(BROKER))

.PHONY: bench
bench: install ## the cost of tracing: untraced, stock OpenTelemetry and tracehop side by side (BENCH_MODES, BENCH_ROUNDS=5, BENCH_DURATION=15; PROFILE=1: py-spy)
	@$(PY) -m tracehop.bench $(if $(PROFILE),--profile bench/profiles)

.PHONY: export-cost
export-cost: install ## what exporting a span costs in one process (CPU µs per span: encoding, POST, batch processor), on spans recorded from the services
	@$(PY) -m tracehop.bench.export_cost $(EXPORT_COST_ARGS)

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
