#!/usr/bin/env bash
# Build the stand-ins for the images docker-compose.yml pulls (HAProxy, Prometheus) from Debian's
# packages, and tag them with the names compose asks for, so that `podman-compose up` finds them
# locally. Grafana has no Debian package: its files are checked statically (tests/deploy).
#
#   deploy/image/standins/build.sh
#
# The base is the Debian release the longenc image falls back to (deploy/image/base-image.sh), so
# one debootstrap serves every image. An image of that name that is not a stand-in (pulled from its
# registry) is left alone; a stand-in is rebuilt, from podman's layer cache.
set -euo pipefail
cd "$(dirname "$0")"

compose_image() { # the image a compose service names
    python3 - "$1" <<'PY'
import re, sys
text = open("../../../docker-compose.yml").read()
block = re.search(rf"^  {sys.argv[1]}:\n((?:    .*\n|\n)+)", text, re.MULTILINE).group(1)
print(re.search(r"^    image: (\S+)", block, re.MULTILINE).group(1))
PY
}

qualified() { # docker.io's name for a short one, which compose engines look up
    case $1 in
        */*/*) echo "$1" ;;
        */*) echo "docker.io/$1" ;;
        *) echo "docker.io/library/$1" ;;
    esac
}

base=""
for service in balancer:haproxy prometheus:prometheus; do
    image=$(qualified "$(compose_image "${service%%:*}")")
    label='{{index .Labels "org.longenc.stand-in"}}'
    if podman image exists "$image" \
        && [ -z "$(podman image inspect --format "$label" "$image")" ]; then
        echo "stand-in: $image is the real one, pulled" >&2
        continue
    fi
    [ -n "$base" ] || base=$(../base-image.sh localhost/longenc-base:debian-bookworm)
    echo "stand-in: building $image from Debian's ${service#*:}" >&2
    podman build --format docker --build-arg "BASE_IMAGE=$base" \
        -f "${service#*:}.Containerfile" --tag "$image" .
done
