# v2g task runner. The two set-up commands of the README:
#   make demo   run the whole system on embedded defaults (SQLite, ...)
#   make test   run the test suite against real Redis, Mosquitto and PostgreSQL
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
# The test suite runs on PostgreSQL, the production database (scripts/services.sh makes the role).
TEST_DATABASE_URL ?= postgres://v2g:v2g@127.0.0.1:5432/v2g
# Its own Redis database, so a demo or dev worker on db 0 never takes the tests' tasks.
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15
PYTEST_ARGS ?=

.PHONY: help venv services test test-fast e2e lint format check migrate demo run-web run-worker run-beat run-bridge health bench bench-quick clean

help:
	@echo "make demo      run web, worker, beat and MQTT bridge on embedded defaults"
	@echo "make test      start/install Redis, Mosquitto, PostgreSQL if needed, then run all tests"
	@echo "               (on PostgreSQL; the dispatch pipeline once more on SQLite; then make e2e)"
	@echo "make e2e       the whole stack end to end + the demo (JUnit and coverage in coverage/)"
	@echo "make lint      ruff lint and format check; make check: migrations and Django checks"
	@echo "make run-web | run-worker | run-beat | run-bridge   one process in the foreground"
	@echo "make health    check database, broker, MQTT and a live worker"
	@echo "make bench     every benchmark at full size (4-10 min): bench/results/summary.{json,md}"
	@echo "make bench-quick  the same at tiny sizes (a smoke run, 30-90 s)"

$(VENV)/.installed: requirements.txt requirements-demo.txt requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.installed

services:
	bash scripts/services.sh

test: venv services
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)
	@echo "--- the dispatch pipeline again on SQLite, the embedded default"
	env -u DATABASE_URL CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) -m pytest $(PYTEST_ARGS) \
		tests/dispatch/test_pipeline.py tests/dispatch/test_status_api.py tests/telemetry tests/scheduler
	@echo "--- end to end"
	$(MAKE) --no-print-directory e2e

# The whole stack end to end, and the demo on embedded defaults; JUnit XML and
# coverage (of every process of the stack) under coverage/.
e2e: venv services
	mkdir -p coverage
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) -m pytest -m e2e $(PYTEST_ARGS) \
		--junitxml=coverage/e2e-junit.xml --cov --cov-report=xml:coverage/e2e-coverage.xml --cov-report=term
	@echo "JUnit report: coverage/e2e-junit.xml, coverage: coverage/e2e-coverage.xml"

# Pure-logic tests only: no servers needed.
test-fast: venv
	$(PY) -m pytest -m "not services" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

check: venv
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

migrate: venv
	$(PY) manage.py migrate

demo: venv
	$(PY) manage.py demo

run-web: venv
	$(PY) manage.py runserver 127.0.0.1:8000

run-worker: venv
	$(VENV)/bin/celery -A v2g_project worker --loglevel INFO

run-beat: venv
	$(VENV)/bin/celery -A v2g_project beat --loglevel INFO

run-bridge: venv
	$(PY) manage.py mqtt_bridge

health: venv
	$(PY) manage.py health --worker

# Benchmarks print figures and write bench/results/*.json (see bench/README.md);
# the suite runs them all and writes bench/results/summary.json and summary.md.
BENCH_ARGS ?=
bench: venv services
	$(PY) -m bench.suite $(BENCH_ARGS)

bench-quick: venv services
	$(PY) -m bench.suite --quick $(BENCH_ARGS)

clean:
	rm -rf var/celery .pytest_cache coverage
