#!/usr/bin/env bash
# Print the name of a base image podman has locally, making one when it must.
#
#   deploy/image/base-image.sh IMAGE
#
# IMAGE when it is already there or can be pulled; otherwise a Debian image made with debootstrap
# (suite DEBIAN_SUITE, default bookworm, whose Python 3.11 matches the cp311 torch wheel) and
# imported as localhost/longenc-base:debian-SUITE. The root filesystem is kept as a tarball in
# IMAGE_CACHE (default: ~/.cache/longenc/image, outside the checkout, so that a fresh clone finds
# it too), so that a later run, or a podman store that was emptied, imports it again in seconds
# instead of bootstrapping it again.
set -euo pipefail

wanted=${1:?usage: base-image.sh IMAGE}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/longenc/image}
fallback=localhost/longenc-base:debian-${suite}

log() { echo "base-image: $*" >&2; }

if podman image exists "$wanted"; then
    echo "$wanted"
    exit 0
fi
# A registry that cannot be reached fails in seconds; retries are the registry's business.
if timeout 120 podman pull --quiet "$wanted" >/dev/null 2>&1; then
    echo "$wanted"
    exit 0
fi
log "cannot pull $wanted; using a Debian $suite base made with debootstrap ($fallback)"
if podman image exists "$fallback"; then
    echo "$fallback"
    exit 0
fi

tarball=$cache/debian-$suite-rootfs.tar
if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing (make image-deps)"; exit 1; }
    mkdir -p "$cache"
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap $suite into $rootfs (about a minute)"
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >&2
    # Security updates too, as a published Debian image carries them (a release has them,
    # unstable has none).
    case $suite in
        sid | unstable) ;;
        *) echo "deb ${mirror%/debian}/debian-security $suite-security main" \
            >>"$rootfs/etc/apt/sources.list" ;;
    esac
    # As in Debian's published images: packages installed later never try to start services.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
fi
podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$fallback" >/dev/null
log "imported $tarball as $fallback"
echo "$fallback"
