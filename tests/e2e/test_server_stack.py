"""uvicorn's event loop and HTTP parser: uvloop and httptools by default, asyncio and h11 one
setting away (LONGENC_LOOP, LONGENC_HTTP). Read from the server process's loaded libraries."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import API_KEY

pytestmark = pytest.mark.e2e


def loaded_native_modules(pid: int) -> set[str]:
    """Which of uvloop's and httptools' compiled modules the process has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in ("uvloop", "httptools") if f"/{name}/" in maps}


def embed_one(url: str, headers: dict[str, str]) -> None:
    answer = httpx.post(f"{url}/v1/embeddings", json={"input": "a short text"}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"][0]["embedding"]) == 384


def test_the_default_server_runs_uvloop_and_httptools(server) -> None:
    embed_one(server.url, {"Authorization": f"Bearer {API_KEY}"})
    assert loaded_native_modules(server.process.pid) == {"uvloop", "httptools"}


def test_asyncio_and_h11_are_one_setting_away(start_server) -> None:
    server = start_server(
        {"LONGENC_LOOP": "asyncio", "LONGENC_HTTP": "h11", "LONGENC_WARMUP": "false"}
    )
    embed_one(server.url, {})
    assert loaded_native_modules(server.process.pid) == set()
