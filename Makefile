# segue: `make quickstart` and `make test` work from a fresh clone (beside ../shared when present).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Real datasets live in ../shared/data (never in the repo); fall back to ~/.cache/segue.
SHARED_DATA := $(abspath ../shared/data)
export SEGUE_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),$(HOME)/.cache/segue)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: install quickstart test lint bench clean

$(BIN)/segue: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, pinned: the CPU wheel on these machines (a range could pull GBs of CUDA wheels)
	$(BIN)/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[serve,peers,dev,audio]"
	touch $(BIN)/segue

install: $(BIN)/segue

quickstart: install
	$(BIN)/segue quickstart

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check segue tests benchmarks
	$(BIN)/ruff format --check segue tests benchmarks

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
