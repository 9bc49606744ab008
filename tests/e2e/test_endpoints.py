"""Every endpoint of a real server, and every attention mode, checked against references."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
import torch

from app.streams import stream_layout
from sparse_core import MODES
from tests.e2e.conftest import words

pytestmark = pytest.mark.e2e

# Parameters at which each sparse mode is exactly dense for inputs of up to 1000 tokens, and
# small ones at which it is not.
AS_DENSE = {
    "block": {"block_size": 1024},
    "sliding_window": {"window": 2048},
    "topk": {"top_k": 1024},
}
SPARSE = {"block": {"block_size": 16}, "sliding_window": {"window": 16}, "topk": {"top_k": 4}}


def encode(client: httpx.Client, inputs, **fields) -> dict:
    response = client.post("/encode", json={"inputs": inputs, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def vectors(body: dict) -> torch.Tensor:
    return torch.tensor(body["embeddings"])


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_health_info_docs_and_openapi(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ready"}
    info = client.get("/info").json()
    assert (info["model"], info["dimension"], info["dtype"]) == ("all-MiniLM-L6-v2", 384, "float32")
    assert info["device"].startswith(("cpu", "cuda"))
    assert info["default_attention"] == {
        "mode": "auto",
        "dense_up_to_tokens": 512,
        "beyond": {"mode": "sliding_window", "window": 512},
    }
    assert set(info["modes"]) == set(MODES)
    for name, mode in MODES.items():
        assert set(info["modes"][name]["params"]) == {param.name for param in mode.params}
    assert info["limits"]["max_input_tokens"] == 4096
    layout = info["forward_threads"]  # LONGENC_CPU_STREAMS unset: the server's own choice
    if info["device"] == "cpu":
        assert (layout["streams"], layout["threads_per_stream"]) == stream_layout(layout["threads"])
    else:
        assert layout["streams"] == 1
    # the default model has no local layers: its dense passes run as a graph on a CPU
    assert info["graph_forward"] is (info["device"] == "cpu")
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/encode", "/v1/embeddings", "/health", "/info", "/metrics"} <= set(paths)


def test_dense_encode_equals_sentence_transformers(client, sentence_transformer) -> None:
    texts = ["A short sentence.", words(40, 100), words(300, 2000)]
    body = encode(client, texts, attention={"mode": "dense"})
    reference = sentence_transformer.encode(
        texts, convert_to_tensor=True, normalize_embeddings=True
    )
    assert body["attention"] == {"mode": "dense"}
    assert cosine(vectors(body), reference.cpu()).min() >= 0.99999


@pytest.mark.parametrize("mode", sorted(SPARSE))
def test_each_sparse_mode_is_dense_at_full_span_and_differs_when_sparse(client, mode) -> None:
    texts = [words(450, 50)]  # ~580 tokens: beyond the native 512 positions
    dense = vectors(encode(client, texts, attention={"mode": "dense"}))
    full = encode(client, texts, attention={"mode": mode, **AS_DENSE[mode]})
    sparse = encode(client, texts, attention={"mode": mode, **SPARSE[mode]})
    assert full["usage"]["prompt_tokens"] > 512
    assert full["attention"] == {"mode": mode, **AS_DENSE[mode]}
    assert sparse["attention"] == {"mode": mode, **SPARSE[mode]}
    assert cosine(vectors(full), dense).min() >= 0.99999
    assert cosine(vectors(sparse), dense).max() < 0.9999
    assert torch.allclose(vectors(sparse).norm(dim=-1), torch.ones(1), atol=1e-5)


@pytest.mark.parametrize("attention", [{"mode": "dense"}, {"mode": "sliding_window", "window": 64}])
def test_a_mixed_length_batch_equals_one_by_one(client, attention) -> None:
    texts = [words(3, 7), words(90, 400), words(450, 3000), words(25, 900)]
    together = vectors(encode(client, texts, attention=attention))
    alone = torch.cat([vectors(encode(client, [text], attention=attention)) for text in texts])
    assert cosine(together, alone).min() >= 0.99999


def test_auto_attention_resolves_per_request_and_says_so(client) -> None:
    short = encode(client, words(50))
    long = encode(client, [words(30), words(450, 10)])
    assert short["attention"] == {"mode": "dense"}
    assert long["attention"] == {"mode": "sliding_window", "window": 512}


def test_pooling_none_gives_token_vectors_whose_mean_is_the_embedding(client) -> None:
    text = words(60, 77)
    tokens = encode(client, text, pooling="none", normalize=False)
    pooled = vectors(encode(client, text, pooling="mean"))
    token_vectors = torch.tensor(tokens["embeddings"][0])
    assert token_vectors.shape == (tokens["usage"]["prompt_tokens"], 384)
    mean = torch.nn.functional.normalize(token_vectors.mean(dim=0), dim=0)
    assert cosine(mean, pooled[0]) >= 0.99999
    cls = vectors(encode(client, text, pooling="cls", normalize=False))
    assert torch.allclose(cls[0], token_vectors[0], atol=1e-5)


def test_response_headers_split_the_time_and_count_tokens(client) -> None:
    response = client.post("/encode", json={"inputs": [words(20), words(40)]})
    usage = response.json()["usage"]
    assert response.headers["x-prompt-tokens"] == str(usage["prompt_tokens"])
    assert usage["total_tokens"] == usage["prompt_tokens"] > 60
    times = {
        name: float(response.headers[f"x-{name}-time"])
        for name in ("total", "tokenization", "queue", "inference")
    }
    assert all(value >= 0 for value in times.values())
    assert times["total"] >= times["inference"]
    assert response.headers["x-attention-mode"] == "dense"


def test_openai_embeddings_float_base64_and_dimensions(client) -> None:
    texts = [words(12, 5), words(30, 600)]
    reference = vectors(encode(client, texts))
    floats = client.post("/v1/embeddings", json={"input": texts, "model": "whatever"}).json()
    assert floats["object"] == "list" and floats["model"] == "all-MiniLM-L6-v2"
    assert [item["index"] for item in floats["data"]] == [0, 1]
    as_floats = torch.tensor([item["embedding"] for item in floats["data"]])
    assert cosine(as_floats, reference).min() >= 0.99999
    assert floats["usage"]["prompt_tokens"] > 40

    encoded = client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
    decoded = [
        np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        for item in encoded.json()["data"]
    ]
    assert torch.equal(torch.tensor(np.stack(decoded)), as_floats)

    single = client.post("/v1/embeddings", json={"input": texts[0], "dimensions": 64}).json()
    short = torch.tensor(single["data"][0]["embedding"])
    assert short.shape == (64,)
    expected = torch.nn.functional.normalize(reference[0, :64], dim=0)
    assert torch.allclose(short, expected, atol=1e-6)


def test_openai_embeddings_accept_the_attention_extension(client) -> None:
    body = {"input": words(100), "attention": {"mode": "block", "block_size": 32}}
    response = client.post("/v1/embeddings", json=body).json()
    assert response["attention"] == {"mode": "block", "block_size": 32}
    reference = vectors(encode(client, words(100), attention=body["attention"]))
    assert cosine(torch.tensor(response["data"][0]["embedding"]), reference[0]) >= 0.99999


def test_truncate_cuts_an_over_long_input_to_the_limit(client) -> None:
    body = encode(client, words(4000), truncate=True, attention={"mode": "block", "block_size": 64})
    assert body["usage"]["prompt_tokens"] == 4096
