# Two commands do all the set-up: `make demo` and `make test`. Both create .venv and
# install what they need; nothing has to be installed by hand.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
# uv resolves the large [all,dev] set in seconds where pip backtracks for minutes. Bytecode
# is compiled at install: worker processes and commands then start in a third of the time
# (nothing is compiled at import where PYTHONDONTWRITEBYTECODE is set).
UV := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python
# torch is installed first, by pip, pinned for the install only: pip finds a CPU build of
# 2.13.0 where one is offered as a local wheel; any torch>=2.4 works with modelyard.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint typecheck services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/uv: | $(BIN)/python
	$(PIP) install uv 2>&1 | grep -v '^WARNING: Location' || true

$(VENV)/.core-installed: pyproject.toml | $(BIN)/uv
	$(UV) -e .
	$(BIN)/python -c "import modelyard.cli.main"
	touch $@

$(VENV)/.all-installed: pyproject.toml | $(BIN)/uv
	$(PIP) install "$(TORCH_SPEC)" 2>&1 | grep -v '^WARNING: Location' || true
	$(UV) -e '.[all,dev]'
	$(BIN)/python -c "import modelyard.cli.main, pytest, mypy, ruff, torch"
	touch $@ $(VENV)/.core-installed $(VENV)/.ml-installed

# The demo trains a model too: it needs the [ml] extras (MLflow, LightGBM, Optuna).
$(VENV)/.ml-installed: pyproject.toml $(VENV)/.core-installed
	$(UV) -e '.[ml]'
	touch $@

demo: $(VENV)/.ml-installed
	$(BIN)/modelyard demo

services:
	bash scripts/ensure-services.sh

lint: $(VENV)/.all-installed
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(VENV)/.all-installed
	$(BIN)/mypy --strict src

test: $(VENV)/.all-installed services lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
