"""/docs renders in a real headless browser with no internet: Swagger UI's assets are local."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.e2e.conftest import API_KEY

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As the machine's own Chromium is run offline: no sandbox (root), no GPU, no background traffic.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",  # let Swagger UI fetch /openapi.json and render
]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (make test installs Debian's)")
def test_docs_render_every_operation_from_local_assets(start_server, tmp_path) -> None:
    public = json.dumps(["/docs", "/openapi.json"])
    server = start_server(
        {"LONGENC_API_KEY": API_KEY, "LONGENC_WARMUP": "false", "LONGENC_PUBLIC_ROUTES": public}
    )
    page = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path}", "--dump-dom", f"{server.url}/docs"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "cdn.jsdelivr.net" not in page and "/docs/assets/swagger-ui-bundle.js" in page
    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', page))
    assert {"/encode", "/v1/embeddings", "/embed", "/health", "/info"} <= rendered
