"""Concurrent traffic in mixed modes, and the Prometheus series it leaves behind."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch

from sparse_core import MODES
from tests.e2e.conftest import API_KEY, sample, scrape, words

pytestmark = pytest.mark.e2e

ATTENTIONS = [
    {"mode": "dense"},
    {"mode": "block", "block_size": 32},
    {"mode": "sliding_window", "window": 32},
    {"mode": "topk", "top_k": 16},
]
HISTOGRAMS = [
    "longenc_request_duration_seconds",
    "longenc_queue_duration_seconds",
    "longenc_inference_duration_seconds",
    "longenc_batch_size",
    "longenc_batch_tokens",
    "longenc_input_tokens",
]


def multi_input_batches(families: dict) -> float:
    """Batches of more than one input, over all modes (batch_size histogram: count - le=1)."""
    return sum(
        sample(families, "longenc_batch_size_count", mode=mode)
        - sample(families, "longenc_batch_size_bucket", mode=mode, le="1.0")
        for mode in MODES
    )


def test_48_concurrent_requests_in_mixed_modes_are_answered_right_and_batched(client) -> None:
    jobs = [(words(8 + 5 * (index % 8), 211 * index), ATTENTIONS[index % 4]) for index in range(48)]
    alone = [
        client.post("/encode", json={"inputs": text, "attention": attention}).json()
        for text, attention in jobs
    ]
    before = multi_input_batches(scrape(client))

    async def burst() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=str(client.base_url), headers=headers) as http:
            requests = [
                http.post("/encode", json={"inputs": text, "attention": attention}, timeout=120)
                for text, attention in jobs
            ]
            return await asyncio.gather(*requests)

    together = asyncio.run(burst())
    assert [response.status_code for response in together] == [200] * len(jobs)
    for (_, attention), single, concurrent in zip(jobs, alone, together, strict=True):
        body = concurrent.json()
        assert body["attention"] == attention
        similarity = torch.nn.functional.cosine_similarity(
            torch.tensor(body["embeddings"]), torch.tensor(single["embeddings"])
        )
        assert similarity.min() >= 0.99999
    assert multi_input_batches(scrape(client)) > before


def test_metrics_export_every_series_of_the_design_with_mode_labels(client) -> None:
    for attention in ATTENTIONS:
        response = client.post("/encode", json={"inputs": [words(30)], "attention": attention})
        assert response.status_code == 200
    client.post("/encode", json={"inputs": []})  # a 422, counted with mode "none"
    families = scrape(client)
    for name in HISTOGRAMS:
        for mode in MODES:
            assert sample(families, f"{name}_count", mode=mode) >= 1, (name, mode)
            assert sample(families, f"{name}_sum", mode=mode) > 0, (name, mode)
    for mode in MODES:
        assert sample(families, "longenc_requests_total", mode=mode, status="200") >= 1
        assert any(s.labels.get("mode") == mode for s in families["longenc_gpu_memory_peak_bytes"])
    assert sample(families, "longenc_requests_total", mode="none", status="422") >= 1
    for gauge in (
        "longenc_queue_size",
        "longenc_requests_in_flight",
        "longenc_gpu_memory_allocated_bytes",
        "longenc_gpu_memory_reserved_bytes",
    ):
        assert gauge in families, gauge
    on_gpu = client.get("/info").json()["device"].startswith("cuda")
    assert (sample(families, "longenc_gpu_memory_allocated_bytes") > 0) == on_gpu
    assert sample(families, "process_resident_memory_bytes") > 10_000_000
