# SEND-IT: `make run` = install + the main job on the embedded default; `make test` = install + test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 pins the CPU build (a looser pin can pull a multi-GB CUDA build); override on GPU machines.
TORCH ?= torch==2.13.0

.PHONY: install install-dev run test test-all clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)" -e .

install-dev: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)" -e ".[dev]"

run: install
	$(BIN)/sendit run --config quick

test: install-dev
	$(BIN)/python -m pytest -q

test-all: install-dev
	$(BIN)/python -m pytest -q -m "slow or not slow"

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
