# wdexp: every target sets up .venv first (once), then does its job.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 5000
# The CPU build of torch. Here pip finds it on disk; elsewhere add the CPU wheel index, e.g.
#   make run TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP  := $(VENV)/.wdexp-installed

.PHONY: setup run test test-fast lint ui bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

## make run ARGS="optimizer.weight_decay=0.1": the paired comparison into ./mlflow.db
run: setup
	$(PY) -m wdexp.train $(ARGS)

## make test: the whole suite; make test-fast skips tests marked slow
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

## make ui [PORT=5001]: the MLflow UI for ./mlflow.db on 127.0.0.1
ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" \
		--host 127.0.0.1 --port $(PORT)

## make bench [BENCH_ARGS="--smoke"]: wdexp against its reference scripts, a markdown table
bench: setup
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache *.egg-info
