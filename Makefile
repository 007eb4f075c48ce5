# Two commands do all the set-up: `make demo` and `make test`. Both create .venv and
# install what they need; nothing has to be installed by hand.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
# torch is pinned for the install only: 2.13.0 has a CPU build where one is offered as a
# local wheel; any torch>=2.4 works with modelyard.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint typecheck unit services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e . 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import modelyard.cli.main"
	touch $@

$(VENV)/.all-installed: pyproject.toml | $(BIN)/python
	$(PIP) install "$(TORCH_SPEC)" 2>&1 | grep -v '^WARNING: Location' || true
	$(PIP) install -e '.[all,dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import modelyard.cli.main, pytest, mypy, ruff"
	touch $@ $(VENV)/.core-installed

demo: $(VENV)/.core-installed
	$(BIN)/python examples/quickstart.py

services:
	bash scripts/ensure-services.sh

lint: $(VENV)/.all-installed
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

typecheck: $(VENV)/.all-installed
	$(BIN)/mypy --strict src

test: $(VENV)/.all-installed services lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
