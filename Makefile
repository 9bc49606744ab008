# Two commands do everything on a fresh machine:
#   make run    install, then serve the bundled default model on LONGENC_HOST:LONGENC_PORT
#   make test   install, then lint and run every test
include make/torch.mk

.PHONY: install install-dev run test lint format bench bench-deps system-deps clean \
	image image-deps test-image

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Debian's prometheus (and promtool) for the observability end-to-end test, chromium for the
# test that renders /docs offline, haproxy to check the balancer's configuration.
system-deps:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
	  && command -v chromium >/dev/null 2>&1 && command -v haproxy >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus chromium haproxy; }

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

# Debian's wrk: the closed-loop load generator of benchmarks/serving.py.
bench-deps:
	@command -v wrk >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends wrk; }

bench: install-dev bench-deps
	$(BIN)/python -m benchmarks.attention
	$(BIN)/python -m benchmarks.fidelity
	$(BIN)/python -m benchmarks.service
	$(BIN)/python -m benchmarks.floor
	$(BIN)/python -m benchmarks.serving

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
