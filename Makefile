# wdexp: every target sets up .venv first (once), then does its job.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 5000
STORE  ?= sqlite:///$(CURDIR)/mlflow.db
# The CPU build of torch. Here pip finds it on disk; elsewhere add the CPU wheel index, e.g.
#   make run TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP  := $(VENV)/.wdexp-installed
# pytest-xdist workers for make test / test-fast (0: none, one process)
WORKERS ?= 2
XDIST   = -n $(WORKERS) --dist loadgroup

.PHONY: help setup run test test-fast lint docs ui bench bench-hosts clean
.DEFAULT_GOAL := help

## help: list these targets
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed -e 's/^## /  make /'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

## setup: create .venv and install wdexp with torch (CPU) and the test tools, once
setup: $(STAMP)

## run [ARGS="optimizer.weight_decay=0.1"]: one paired comparison into ./mlflow.db
run: setup
	$(PY) -m wdexp.train $(ARGS)

## test [PYTEST_ARGS=…] [WORKERS=2]: the whole suite, tests/system/ included, on 2 pytest-xdist workers (19–26 minutes on this project's 2-core machines, both cores busy all along; longer under load)
test: setup
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

## test-fast [PYTEST_ARGS=…]: without tests/system/ and the slow tests: the in-process checks and one real job (2–3 minutes)
test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not slow and not system" $(PYTEST_ARGS)

## lint: ruff
lint: setup
	$(VENV)/bin/ruff check .

## docs: build the docs site from docs/ into site/, --strict (a broken link or a missing page fails)
# NO_MKDOCS_2_WARNING: Material would print a banner about its successor into every build
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

## ui [PORT=5001] [STORE=uri]: the MLflow UI for ./mlflow.db on 127.0.0.1, with a link to the comparison
ui: setup
	$(PY) -m wdexp.ui --store "$(STORE)" --port $(PORT)

## bench [BENCH_ARGS="--smoke"]: wdexp against its reference scripts, a markdown table
bench: setup
	$(PY) benchmarks/run.py $(BENCH_ARGS)

## bench-hosts [BENCH_ARGS="--jobs 64"]: the team set-up under load across hosts of our own (root, Slurm; minutes)
bench-hosts: setup
	$(PY) benchmarks/hosts_load.py $(BENCH_ARGS)

## clean: remove .venv, outputs/, multirun/, site/ and caches (mlflow.db and mlartifacts/ stay)
clean:
	rm -rf $(VENV) outputs multirun site .cache .pytest_cache .ruff_cache *.egg-info
