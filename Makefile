# Two commands do everything on a fresh machine:
#   make run    install, then serve the bundled default model on LONGENC_HOST:LONGENC_PORT
#   make test   install, then lint and run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# Without an NVIDIA driver, take the CPU build of torch so no multi-GB CUDA wheels are pulled.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_NVIDIA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_NVIDIA),yes)
TORCH_REQ := torch==$(TORCH_VERSION)
TORCH_PIP_ARGS :=
else
TORCH_REQ := torch==$(TORCH_VERSION)+cpu
TORCH_PIP_ARGS := --extra-index-url $(TORCH_CPU_INDEX)
endif

.PHONY: install install-dev run test lint format bench system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and alone, so that later installs find it satisfied and pull no other build.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_REQ)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Debian's prometheus (and promtool) for the observability end-to-end test.
system-deps:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }

run: install
	$(BIN)/python -m app

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install-dev system-deps lint
	$(BIN)/python -m pytest -q -ra

bench: install-dev
	$(BIN)/python -m benchmarks.attention
	$(BIN)/python -m benchmarks.fidelity
	$(BIN)/python -m benchmarks.service

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
