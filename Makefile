# Two setup-free entry points: `make test` and `make run` (each creates .venv on first use).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROFILE ?= cpu
ARGS ?=

# Offline and hermetic by default for tests: no hub calls, caches in temp dirs.
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup lint test test-fast run bench clean lab tensorboard

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

setup: $(BIN)/.installed

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(TEST_ENV) $(BIN)/python -m pytest -q $(ARGS)

# Everything except the end-to-end papermill chain.
test-fast: lint
	$(TEST_ENV) $(BIN)/python -m pytest -q -m "not slow" $(ARGS)

run: setup
	$(BIN)/python -m jepa_core.study.workbook run parameters/$(PROFILE).yaml $(ARGS)

bench: setup
	$(BIN)/python -m jepa_core.bench --out outputs/bench.json $(ARGS)

lab: setup
	$(BIN)/python -m jupyter lab notebooks/

# The TensorBoard event files of one run (train.report_to): make tensorboard RUN=smoke
RUN ?= $(PROFILE)
tensorboard: setup
	$(BIN)/tensorboard --logdir outputs/$(RUN)/logs/tensorboard

clean:
	rm -rf $(VENV) .pytest_cache
