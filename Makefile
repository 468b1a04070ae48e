# The two commands a newcomer needs: `make run` and `make test`.
# Both create .venv on first use and install what the project needs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Development: without ENABLE_AUTH in the environment, `make run` runs without
# authentication (it logs that every endpoint is open). The service itself, under
# gunicorn or Docker, defaults to ENABLE_AUTH=true.
run: $(VENV)/.runtime
	ENABLE_AUTH="$${ENABLE_AUTH:-false}" $(BIN)/python -m pushservice

test: $(VENV)/.dev
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .

# The benchmark suite (about 25 minutes on 2 cores); rewrites docs/benchmarks.md.
$(VENV)/.bench: $(VENV)/.runtime bench/requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python -m bench.run --all --write-docs
