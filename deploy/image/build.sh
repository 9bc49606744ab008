#!/usr/bin/env bash
# Build the longenc image from the project's Dockerfile with podman (`make image` runs this).
#
# Variables (the Makefile passes its own):
#   IMAGE             tag to build                        default localhost/longenc:cpu
#   IMAGE_BASE        BASE_IMAGE of the Dockerfile        default ubuntu:24.04; when it cannot be
#                     pulled, a Debian base made with debootstrap (deploy/image/base-image.sh)
#   IMAGE_HAS_NVIDIA  the Dockerfile's HAS_NVIDIA         default no (the CPU image)
#   IMAGE_WHEELS      folders of wheels pip looks in first, mounted into the build; default: the
#                     folders among pip's own find-links setting
#   IMAGE_PIP_CERT    CA bundle pip trusts inside the build; default: pip's own cert setting
#   BUILDAH_ISOLATION podman's build isolation           default chroot (runs where user
#                     namespaces cannot be made, as in a container or a sandbox)
#
# Layers are cached by podman: a rebuild with nothing changed takes seconds, a change under app/,
# models/ or sparse_core/ reinstalls the project only (torch has a layer of its own).
set -euo pipefail
cd "$(dirname "$0")/../.."

image=${IMAGE:-localhost/longenc:cpu}
has_nvidia=${IMAGE_HAS_NVIDIA:-no}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}

pip_setting() { python3 -m pip config get "global.$1" 2>/dev/null || true; }

base=$(deploy/image/base-image.sh "${IMAGE_BASE:-ubuntu:24.04}")

flags=(--format docker) # Docker's format: the OCI one has no HEALTHCHECK
mounts=()
for folder in ${IMAGE_WHEELS-$(pip_setting find-links)}; do
    folder=${folder#file://}
    [ -d "$folder" ] || continue
    mounted=/wheels/${#mounts[@]}
    flags+=(-v "$(realpath "$folder"):$mounted:ro")
    mounts+=("$mounted")
done
if [ ${#mounts[@]} -gt 0 ]; then
    flags+=(--build-arg "PIP_FIND_LINKS=${mounts[*]}")
fi
cert=${IMAGE_PIP_CERT-${PIP_CERT:-$(pip_setting cert)}}
if [ -n "$cert" ] && [ -f "$cert" ]; then
    flags+=(-v "$(realpath "$cert"):/etc/pip-ca.crt:ro" --build-arg PIP_CERT=/etc/pip-ca.crt)
fi

echo "build: $image from $base (HAS_NVIDIA=$has_nvidia)" >&2
exec podman build "${flags[@]}" \
    --build-arg "BASE_IMAGE=$base" --build-arg "HAS_NVIDIA=$has_nvidia" \
    --tag "$image" .
