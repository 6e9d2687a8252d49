# The only entry points a user needs: make run, make test.
# Everything below installs only what is missing, so re-running is cheap.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
ORCH      := $(BIN)/orchestrator
STAMP     := $(VENV)/.installed
DEB_PKGS  := postgresql-15 postgresql-contrib postgresql-15-cron postgresql-15-partman \
             postgresql-15-wal2json postgresql-15-pgtap pgtap bubblewrap libseccomp2 chromium shellcheck nodejs eslint git time \
             elixir rustc nats-server postgresql-15-auto-failover
SQL_DBS   := shared_queue singularity genesis nexus centralcloud postgres
# playwright (browser tests) drives Debian's chromium; it must never download a browser of its own
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: help setup deb venv db migrate run test test-ha test-sql test-py dump-schema check-drift diagram bench soak lint clean

help:
	@echo "make run    set up everything (Debian packages, venv, PostgreSQL, migrations) and run the daemon"
	@echo "make test   same setup, then pgTAP (pg_prove) and pytest"
	@echo "other targets: setup db migrate test-sql test-py dump-schema check-drift diagram bench soak lint clean"

setup: deb venv

# Debian packages: apt-get only for what is absent.
deb:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

db: setup
	$(ORCH) db start

migrate: db
	$(ORCH) migrate

run: migrate
	$(ORCH) daemon

test: migrate
	$(MAKE) --no-print-directory test-sql
	$(MAKE) --no-print-directory test-py

# The bus under pg_auto_failover alone (also part of test-py): monitor + primary + synchronous secondary,
# 1,000 requests in flight, kill -9 of the primary; prints the recovery time.
test-ha: setup
	$(BIN)/pytest -q -s tests/py/test_ha_failover.py

test-sql:
	@eval "$$($(ORCH) db env)"; rc=0; for d in $(SQL_DBS); do \
	  if ls tests/sql/$$d/*.sql >/dev/null 2>&1; then \
	    echo "== pgTAP: $$d"; pg_prove -d $$d --failures tests/sql/$$d/*.sql || rc=1; \
	  fi; done; exit $$rc

test-py:
	$(BIN)/pytest -q --durations=12 tests/py

# sql/schema/<db>.sql: a fresh install's pg_dump --schema-only per database, committed so that every
# schema change shows in review. Built in a scratch cluster of its own (tests/py/schema_tools.py), not
# from the long-lived databases; tests/py/test_schema_drift.py fails when a dump is stale.
dump-schema: setup
	$(BIN)/python tests/py/schema_tools.py --write

# This checkout's own databases (migrated over time) against sql/schema/: what they kept from earlier work.
check-drift: migrate
	$(BIN)/python tests/py/schema_tools.py --check-local

# docs/architecture.svg from its source (graphviz's dot; installed here if missing)
diagram:
	@command -v dot >/dev/null || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; $$SUDO apt-get install -y -qq graphviz; }
	dot -Tsvg docs/architecture.dot -o docs/architecture.svg

bench: migrate
	$(BIN)/python -m bench

soak: migrate
	$(BIN)/python -m bench.soak

lint: venv
	$(BIN)/ruff check orchestrator tests bench

clean:
	-$(ORCH) db stop
	rm -rf $(VENV) .state .pytest_cache .ruff_cache
