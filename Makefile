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

.PHONY: install install-dev run test lint format bench system-deps clean \
	image image-deps test-image

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

# Debian's prometheus (and promtool) for the observability end-to-end test, and chromium for
# the test that renders /docs offline.
system-deps:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
	  && command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus chromium; }

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

# --- Container image, built and run with podman (make image, make test-image) -----------------
# IMAGE_BASE is pulled when it can be; otherwise deploy/image/base-image.sh makes a Debian base
# with debootstrap. deploy/image/build.sh documents the other variables (wheel folders, CA bundle).
IMAGE ?= localhost/longenc:cpu
IMAGE_BASE ?= ubuntu:24.04
IMAGE_DEPS := podman runc debootstrap netavark aardvark-dns iptables uidmap
image image-deps test-image: export CONTAINERS_CONF := $(CURDIR)/deploy/image/containers.conf
image image-deps test-image: export IMAGE := $(IMAGE)
image image-deps test-image: export IMAGE_BASE := $(IMAGE_BASE)

# Debian's podman (with runc) and debootstrap, installed when missing.
image-deps:
	@command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 \
	  && command -v debootstrap >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    $(IMAGE_DEPS); }

image: image-deps
	deploy/image/build.sh

# The image end to end (tests/image): build it, run it until its own health check passes, encode,
# scrape, drain on SIGTERM; then docker-compose.yml with two replicas behind the balancer.
test-image: install-dev image-deps
	LONGENC_IMAGE_TESTS=1 $(BIN)/python -m pytest -q -ra --durations=0 tests/image

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
