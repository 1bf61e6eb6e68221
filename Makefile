# Every target creates the virtualenv first if it is missing or the requirements changed.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
BOOTSTRAP_PYTHON ?= python3
ALEMBIC := $(PYTHON) -m alembic -c migrations/alembic.ini

.PHONY: install test lint format migrate run

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PYTHON) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

test: install
	$(PYTHON) -m pytest

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: install
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

migrate: install
	$(ALEMBIC) upgrade head

run: migrate
	$(PYTHON) -m task_api serve
