# SEND-IT: `make run` = install + the main job on the embedded default; `make test` = install + test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 pins the CPU build (a looser pin can pull a multi-GB CUDA build); override on GPU machines.
TORCH ?= torch==2.13.0
# The tests whose code paths depend on precision (training, predict, export, distill, bench, resume, determinism).
# (tests/test_ddp.py pins fp32: it checks DDP's arithmetic against one process to float rounding.)
PRECISION_TESTS := tests/test_precision.py tests/test_methods.py tests/test_predict.py tests/test_export.py \
	tests/test_distill.py tests/test_bench.py tests/test_resume.py tests/test_determinism.py \
	tests/test_training_checks.py
# ... and single tests of other files whose path depends on precision (tune's head features run under autocast).
PRECISION_NODES := tests/test_tune.py::test_head_trials_train_on_features_computed_once_as_through_the_whole_model

# make test runs the suite in one pytest-xdist worker per core, at most 4; TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

.PHONY: install install-dev run test test-other-precision test-all lint clean

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
	$(PYTEST)

# The precision tests again with `precision: auto` forced to the path this machine would NOT pick (bf16 on a CPU
# without AMX, fp32 on a CPU with AMX or a GPU), through SENDIT_PRECISION.
test-other-precision: install-dev
	SENDIT_PRECISION=$$($(BIN)/python -c "from sendit.train.device import resolve_precision as r; \
	print('fp32' if r('auto') == 'bf16' else 'bf16')") && echo "forcing SENDIT_PRECISION=$$SENDIT_PRECISION" && \
	SENDIT_PRECISION=$$SENDIT_PRECISION $(PYTEST) $(wildcard $(PRECISION_TESTS)) $(PRECISION_NODES)

test-all: install-dev
	$(PYTEST) -m "slow or not slow"

lint: install-dev
	$(BIN)/ruff check src tests scripts

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
