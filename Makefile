# ncf-glmix: every target creates .venv when missing and installs what it needs.
# TORCH_SPEC: the CPU build on these machines; GPU users run e.g. `make run TORCH_SPEC=torch`
# when .venv is built (it is read only then: `make clean` first to switch an existing one).
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP      := $(VENV)/.installed
ARGS       ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test test-full bench lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP) ## create .venv and install the package (CPU torch first)

run: $(STAMP) ## main job on the built-in synthetic platform (extra Hydra overrides: ARGS="...")
	$(PY) -m experiments.pipeline $(ARGS)

test: $(STAMP) ## fast tests (the CI command)
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-full: $(STAMP) ## all tests, slow ones too
	$(PY) -m pytest -q $(ARGS)

bench: $(STAMP) ## every benchmark; tables to stdout, JSON to benchmarks/results/
	$(PY) -m benchmarks.run_all $(ARGS)

lint: $(STAMP) ## ruff check + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ## ruff autofix + format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean: ## remove .venv, caches and run outputs
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache *.egg-info
