# torch 2.13.0, installed first and alone into the virtual environment, so that later installs find
# it satisfied and pull no other build. The Makefile includes this file; the Dockerfile runs it by
# itself (make -f make/torch.mk .venv/.torch), so that the image's torch layer depends on this file
# only and survives every other change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# Without an NVIDIA driver, take the CPU build of torch so no multi-GB CUDA wheels are pulled.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_NVIDIA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_NVIDIA),yes)
TORCH_REQ := torch==$(TORCH_VERSION)
TORCH_INSTALL := $(BIN)/pip install --quiet "$(TORCH_REQ)"
else
TORCH_REQ := torch==$(TORCH_VERSION)+cpu
# The +cpu wheel from pip's local wheel folders (find-links) when they have it, its dependencies
# from the usual indexes: nothing then waits on the torch index. The torch index otherwise.
TORCH_INSTALL := { $(BIN)/pip install --quiet --no-index --no-deps "$(TORCH_REQ)" 2>/dev/null \
	&& $(BIN)/pip install --quiet "$(TORCH_REQ)"; } \
	|| $(BIN)/pip install --quiet --extra-index-url $(TORCH_CPU_INDEX) "$(TORCH_REQ)"
endif

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(TORCH_INSTALL)
	touch $@
