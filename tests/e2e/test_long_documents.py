"""Late chunking, chunk spans and bounded responses, on a real server."""

from __future__ import annotations

import httpx
import pytest
import torch

from sparse_core import MODES
from tests.e2e.conftest import words

pytestmark = pytest.mark.e2e

# Chunks that meet at spaces, so the joined text tokenizes as the chunks' tokens in a row.
CHUNKS = [words(40, 0) + ".", words(60, 500) + ".", words(30, 2000) + "."]
SPARSE = {
    "block": {"block_size": 16},
    "sliding_window": {"window": 16},
    "topk": {"top_k": 4},
}


def post(client: httpx.Client, path: str, **body) -> dict | list:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def spans(client: httpx.Client, chunks: list[str]) -> list[tuple[int, int]]:
    """Each chunk's token range in the joined document: [CLS] chunk tokens ... [SEP]."""
    tokens = post(client, "/tokenize", inputs=chunks, add_special_tokens=False)
    ranges, start = [], 1
    for chunk_tokens in tokens:
        ranges.append((start, start + len(chunk_tokens)))
        start += len(chunk_tokens)
    return ranges


def attention_of(mode: str) -> dict:
    return {"mode": mode, **SPARSE.get(mode, {})}


@pytest.mark.parametrize("mode", ["dense", *SPARSE])
def test_a_late_chunk_is_the_mean_of_its_rows_of_the_joined_document(client, mode) -> None:
    attention = attention_of(mode)
    late = post(client, "/encode", inputs=CHUNKS, late_chunking=True, attention=attention)
    rows = post(
        client,
        "/encode",
        inputs=" ".join(CHUNKS),
        pooling="none",
        normalize=False,
        attention=attention,
    )
    rows = torch.tensor(rows["embeddings"][0])  # (tokens, dim) of the joined document
    late_vectors = torch.tensor(late["embeddings"])
    assert late_vectors.shape[0] == len(CHUNKS)
    for vector, (start, stop) in zip(late_vectors, spans(client, CHUNKS), strict=True):
        expected = torch.nn.functional.normalize(rows[start:stop].mean(0), dim=0)
        torch.testing.assert_close(vector, expected, atol=2e-5, rtol=0)
    alone = torch.tensor(post(client, "/encode", inputs=CHUNKS, attention=attention)["embeddings"])
    # embedded alone, a chunk has not seen its document: the vectors differ
    assert (late_vectors - alone).norm(dim=-1).min() > 1e-3


def test_late_chunking_runs_in_every_mode_of_the_table(client) -> None:
    for name, mode in MODES.items():
        params = {param.name: param.example for param in mode.params}
        body = post(
            client, "/encode", inputs=CHUNKS, late_chunking=True, attention={"mode": name, **params}
        )
        vectors = torch.tensor(body["embeddings"])
        assert vectors.shape == (len(CHUNKS), 384), name
        assert torch.isfinite(vectors).all(), name
        torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(len(CHUNKS)), atol=1e-5, rtol=0)


def test_late_chunking_in_a_batch_with_other_requests_gives_the_same_vectors(client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    alone = post(client, "/v1/embeddings", input=CHUNKS, late_chunking=True)
    with ThreadPoolExecutor(6) as pool:
        others = [
            pool.submit(post, client, "/encode", inputs=[words(80, 90 * i)]) for i in range(5)
        ]
        again = pool.submit(post, client, "/v1/embeddings", input=CHUNKS, late_chunking=True)
        for other in others:
            other.result()
        again = again.result()
    first = torch.tensor([item["embedding"] for item in alone["data"]])
    second = torch.tensor([item["embedding"] for item in again["data"]])
    torch.testing.assert_close(first, second, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("size", "overlap"), [(16, 0), (16, 5), (7, 6), (1000, 0)])
def test_chunk_spans_cover_the_text_and_name_what_was_embedded(client, size, overlap) -> None:
    text = words(120, 3000) + "  Tail, with punctuation!"
    body = post(client, "/encode", inputs=[text], chunking={"tokens": size, "overlap": overlap})
    chunks = body["embeddings"][0]
    tokens = post(client, "/tokenize", inputs=text)[0]
    text_tokens = len(tokens) - 2  # [CLS] and [SEP]
    assert chunks[0]["tokens"][0] == 1 and chunks[-1]["tokens"][1] == 1 + text_tokens
    for before, after in zip(chunks, chunks[1:], strict=False):
        # consecutive chunks share exactly `overlap` tokens: no gap, no more overlap
        assert before["tokens"][1] - after["tokens"][0] == overlap
    for chunk in chunks:
        start, stop = chunk["tokens"]
        assert 0 < stop - start <= size
        first, last = tokens[start], tokens[stop - 1]
        assert chunk["chars"] == [first["start"], last["stop"]]
        decoded = post(client, "/decode", ids=[token["id"] for token in tokens[start:stop]])[0]
        piece = text[chunk["chars"][0] : chunk["chars"][1]]
        # a chunk may start inside a word: WordPiece decodes that piece with its "##"
        assert decoded.removeprefix("##").replace(" ", "") == piece.lower().replace(" ", "")
        vector = torch.tensor(chunk["embedding"])
        assert abs(vector.norm().item() - 1) < 1e-5


def test_a_chunk_embedding_is_the_mean_of_its_rows_of_the_whole_input(client) -> None:
    text = words(200, 7000)
    body = post(
        client, "/encode", inputs=text, chunking={"tokens": 50, "overlap": 10}, normalize=False
    )
    rows = post(client, "/encode", inputs=text, pooling="none", normalize=False)
    rows = torch.tensor(rows["embeddings"][0])
    for chunk in body["embeddings"][0]:
        start, stop = chunk["tokens"]
        torch.testing.assert_close(
            torch.tensor(chunk["embedding"]), rows[start:stop].mean(0), atol=2e-5, rtol=0
        )


def test_an_oversized_response_is_refused_before_any_work(start_server) -> None:
    from tests.e2e.conftest import API_KEY, sample, scrape

    settings = {"LONGENC_API_KEY": API_KEY, "LONGENC_WARMUP": "false"}
    server = start_server(settings | {"LONGENC_MAX_RESPONSE_FLOATS": "100000"})
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        big = {"inputs": [words(300, 100 * i) for i in range(2)], "pooling": "none"}
        for path, body in [
            ("/encode", big),
            ("/embed_all", {"inputs": big["inputs"]}),
            ("/encode", {"inputs": words(600), "chunking": {"tokens": 2, "overlap": 1}}),
        ]:
            response = client.post(path, json=body)
            assert response.status_code == 422, response.text
            assert "max_response_floats=100000" in response.json()["error"]
        assert sample(scrape(client), "longenc_batch_size_count") == 0  # nothing ran
        assert client.get("/health").status_code == 200
        small = client.post("/encode", json={"inputs": words(100), "pooling": "none"})
        assert small.status_code == 200


def test_a_large_response_streams_valid_json(client) -> None:
    texts = [words(1000, 50 * i) for i in range(3)]
    response = client.post("/encode", json={"inputs": texts, "pooling": "none"})
    assert response.status_code == 200, response.text
    # streamed: sent in chunks, with no Content-Length known up front
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"
    tokens = [len(pieces) for pieces in post(client, "/tokenize", inputs=texts)]
    vectors = response.json()["embeddings"]  # the whole body parses as JSON
    assert [len(rows) for rows in vectors] == tokens
    assert all(len(row) == 384 for rows in vectors for row in rows)
    assert sum(tokens) * 384 > 100_000  # above the size that is streamed


def test_truncation_direction_cuts_the_named_end(client) -> None:
    text = words(5000)
    cut = {
        direction: post(
            client, "/embed", inputs=text, truncate=True, truncation_direction=direction
        )[0]
        for direction in ("right", "Right", "left", "Left")  # TEI's clients capitalize
    }
    head = post(client, "/embed", inputs=words(3000))[0]  # the first 3,000 words fit
    assert cut["right"] == cut["Right"] and cut["left"] == cut["Left"]
    assert cut["right"] != cut["left"]
    assert (
        torch.nn.functional.cosine_similarity(torch.tensor(cut["right"]), torch.tensor(head), 0)
        > 0.9
    )


def test_a_late_chunk_without_tokens_of_its_own_is_refused(client) -> None:
    # "\b" tokenizes to nothing: its chunk would be the mean of no vectors (NaN, JSON null)
    response = client.post("/embed", json={"inputs": ["text", "\b"], "late_chunking": True})
    assert response.status_code == 422
    assert "input 1 has no tokens of its own" in response.json()["error"]
