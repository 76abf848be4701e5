# Two commands matter: `make run` (the example flow on 127.0.0.1:8000) and `make test`.
# Both create .venv and install the package on first use. `make run PORT=9000` (or
# IVRKIT_PORT=9000 make run) listens elsewhere.
PYTHON ?= python3
PORT ?=
VENV := .venv
BIN := $(VENV)/bin

# pip -qq for the editable install: errors only (at -q setuptools still prints a notice
# about editable installs, a dozen lines on every fresh clone).
$(BIN)/ivrkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --quiet -e '.[dev]'
	touch $(BIN)/ivrkit

.PHONY: install run test lint bench
install: $(BIN)/ivrkit

# support_line's assistant keeps the account number it hears encrypted, which needs a key:
# `make run` (a development server, --insecure-dev) uses this one unless IVRKIT_SECRET_KEY is set.
run: export IVRKIT_SECRET_KEY ?= make-run-development-only-key-never-in-production
run: install
	$(BIN)/ivrkit serve flows/support_line.py --insecure-dev $(if $(PORT),--port $(PORT))

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy ivrkit simulator
	$(BIN)/pytest --ivr-coverage --ivr-coverage-fail-under=100

bench: install
	$(BIN)/python benchmarks/webhook_throughput.py
