# Every target creates the virtualenv first if it is missing or its requirements changed:
# running needs only requirements.txt; testing, linting and the benchmark add the dev set.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check
BOOTSTRAP_PYTHON ?= python3
LOCAL_DATABASE_URL ?= postgresql+psycopg2://postgres@127.0.0.1:5432/task_api
LOCAL_REDIS_URL ?= redis://127.0.0.1:6379/0
COMPOSE = $(shell $(PYTHON) -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')

.PHONY: install install-run run serve worker beat migrate test test-sqlite test-pgbouncer lint format docker-check deploy-check bench bench-reminders demo

install: $(VENV)/.installed
install-run: $(VENV)/.installed-run

$(VENV)/.installed-run: requirements.txt
	test -x $(PYTHON) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.installed: $(VENV)/.installed-run requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

# The embedded default: a SQLite file and an in-process Redis, one process, nothing else to run.
run: install-run
	$(PYTHON) -m task_api serve

# The production server (gunicorn.conf.py) against the local PostgreSQL and Redis.
# It creates the database DATABASE_URL names (default: the local `task_api`) if it is missing.
serve: install-run
	DATABASE_URL=$${DATABASE_URL:-$(LOCAL_DATABASE_URL)} $(PYTHON) -m task_api migrate --create-database
	DATABASE_URL=$${DATABASE_URL:-$(LOCAL_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(LOCAL_REDIS_URL)} \
		$(VENV)/bin/gunicorn -c gunicorn.conf.py task_api.main:app

# Reminders beside `make serve` (which migrates first), against the same PostgreSQL and Redis.
# A Celery worker mails them through SMTP_URL (each to the log while it is unset); start more
# for more throughput, each with its own WORKER_METRICS_PORT (default 9001; 0: no /metrics).
# Beat starts a sweep every second: run exactly one.
worker: install-run
	DATABASE_URL=$${DATABASE_URL:-$(LOCAL_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(LOCAL_REDIS_URL)} \
		$(PYTHON) -m task_api worker

beat: install-run
	DATABASE_URL=$${DATABASE_URL:-$(LOCAL_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(LOCAL_REDIS_URL)} \
		$(PYTHON) -m task_api beat

migrate: install-run
	$(PYTHON) -m task_api migrate

test: install
	$(PYTHON) -m pytest

# The same suite on a throwaway SQLite file (Redis stays the real one).
test-sqlite: install
	TEST_DATABASE_URL=sqlite:// $(PYTHON) -m pytest

# The same suite with the app behind a PgBouncer in transaction mode that the tests start
# (Debian's pgbouncer); migrations and fixtures still connect directly.
test-pgbouncer: install
	TEST_PGBOUNCER=1 $(PYTHON) -m pytest

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

format: install
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

# What can be checked of the container setup without a Docker engine: the Dockerfile lints,
# compose.yaml is valid, and without a SECRET_KEY compose stops at once, saying so.
CHECK_SECRET := docker-check-only-secret-key-not-for-use-anywhere
docker-check: install
	$(VENV)/bin/hadolint Dockerfile
	$(PYTHON) deploy/runtime_requirements.py --check requirements.txt
	SECRET_KEY=$(CHECK_SECRET) $(COMPOSE) --env-file /dev/null config --quiet
	SECRET_KEY=$(CHECK_SECRET) $(COMPOSE) --env-file /dev/null --profile test config --quiet
	env -u SECRET_KEY $(COMPOSE) --env-file /dev/null config --quiet 2>&1 | grep -q "required variable SECRET_KEY is missing a value: set SECRET_KEY in .env"

# The Helm chart without a cluster: lint, render, validate the manifests, tests/test_chart.py.
# Installs a pinned, checksummed helm into .venv (deploy/install-helm).
deploy-check: install
	bash deploy/check

# The load benchmark against the local PostgreSQL and Redis (installs wrk from Debian if missing).
bench: install
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	$(PYTHON) -m bench.run

# 10,000 reminders due at one instant, mailed by two workers and a beat to a local SMTP sink
# while `bench`'s read scenario runs: time to the last, lag, and the reads kept (bench/reminders.py).
bench-reminders: install
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	$(PYTHON) -m bench.reminders

# Swagger UI driven through the embedded default in headless Chromium: a screenshot per step
# and a video, into docs/demo/ (installs Debian's chromium and ffmpeg if they are missing).
demo: install
	command -v chromium >/dev/null && command -v ffmpeg >/dev/null \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium ffmpeg)
	$(PYTHON) docs/demo/record.py
