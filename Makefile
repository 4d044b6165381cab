# Tally: everything a fresh machine needs, from the project's own files.
#   make test   installs everything, starts the local stack, runs the tests, stops the stack
#   make demo   installs everything, starts the local stack and runs the platform end to end,
#               serving the API and the dashboard until Ctrl-C

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TALLY := $(VENV)/bin/tally
export TALLY_STATE_DIR ?= $(CURDIR)/.tally
PYTEST_ARGS ?=

.PHONY: setup venv jars system-deps stack-up stack-down stack-status cluster-up cluster-down test unit-test demo bench clean dashboard-png docs

setup: system-deps venv jars

system-deps:
	@bash infra/install-system-deps.sh

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -e ".[devstack,test,bench]"
	touch $@

venv: $(VENV)/.installed

jars:
	@mvn -q -B -Dstyle.color=never -f infra/pom.xml package

stack-up: setup
	$(TALLY) stack up

stack-down:
	-$(TALLY) stack down

stack-status:
	$(TALLY) stack status

# The local Spark standalone cluster (`tally cluster submit batch|stream` runs the jobs on it).
cluster-up: setup
	$(TALLY) cluster up

cluster-down:
	-$(TALLY) cluster down

# Unit tests only: no stack needed.
unit-test: setup
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# The whole suite against the real stack; the stack is stopped again even when tests fail.
# The tests not marked `serial` first, on TEST_WORKERS pytest-xdist workers (each file on one
# worker; 0: in this process), then the `serial` ones, which would stop or kill a shared part of
# the stack, alone (the fault tests kill parts of their own instead). Two workers keep both cores
# busy while one test waits on a trigger or a service.
TEST_WORKERS ?= 2
test: setup
	@$(TALLY) stack up && \
	  { $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" $(PYTEST_ARGS); rc=$$?; \
	    $(PY) -m pytest -n 0 -m serial $(PYTEST_ARGS); rc2=$$?; [ $$rc2 -eq 5 ] && rc2=0; \
	    $(TALLY) stack down; [ $$rc -eq 0 ] && exit $$rc2; exit $$rc; } || \
	  { rc=$$?; $(TALLY) stack down; exit $$rc; }

# Starts the stack itself (and stops it again on Ctrl-C); `make demo DEMO_ARGS="--lake s3"` for the
# S3 lake. (Not TALLY_-prefixed: make exports command-line variables, and the config reads every
# TALLY_* variable of the environment as a setting, rejecting unknown ones.)
demo: setup
	$(TALLY) demo $(DEMO_ARGS)

bench: stack-up
	$(PY) bench/ingest.py

# docs/dashboard.png, the picture of the dashboard in docs/serving.md (its own tables, dropped after).
dashboard-png: stack-up
	$(PY) tests/dashboard_png.py

# docs/architecture.svg from its source docs/architecture.dot (Graphviz, installed by system-deps).
docs: system-deps
	dot -Tsvg docs/architecture.dot -o docs/architecture.svg

clean: stack-down cluster-down
	rm -rf $(TALLY_STATE_DIR) infra/lib $(VENV)
