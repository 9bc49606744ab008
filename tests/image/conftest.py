"""Images and containers, run by `make test-image` only (it sets LONGENC_IMAGE_TESTS=1).

These tests build images and start containers with podman: minutes of work, and root's container
store, that `make test` does not take on. Under `make test-image` every one of them runs. One thing
only is not theirs to fail on: a host whose kernel or sandbox cannot run any container at all (the
base image, started with podman's settings here, cannot even run `true`). There each test is
skipped with podman's own words, so the run says exactly what could not run and why; everything
before that point (installing podman, making the base image) must work and fails otherwise.
"""

from __future__ import annotations

import os

import pytest

from tests.image.podman import IMAGE, build, require_containers, require_podman

if os.environ.get("LONGENC_IMAGE_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]

# A clean machine bootstraps a Debian base first; a rebuild with nothing changed takes seconds.
BUILD_TIMEOUT_S = 1800


@pytest.fixture(scope="session")
def image() -> str:
    """The CPU image, built by `make image`'s script (podman's layer cache makes reruns cheap)."""
    require_podman()
    require_containers()
    seconds = build("deploy/image/build.sh", what=f"building {IMAGE}", timeout=BUILD_TIMEOUT_S)
    print(f"\nimage {IMAGE}: build step took {seconds:.0f} s")
    return IMAGE
