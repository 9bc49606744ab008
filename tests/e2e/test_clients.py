"""The clients people already have, unchanged, against a real server: OpenAI's and
huggingface_hub's (text-embeddings-inference's API)."""

from __future__ import annotations

import huggingface_hub.constants
import numpy as np
import openai
import pytest
import torch
from huggingface_hub import InferenceClient

from tests.e2e.conftest import API_KEY, words

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def openai_client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(autouse=True)
def hub_reaches_the_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The e2e suite sets HF_HUB_OFFLINE=1 so that nothing reaches a model hub; the client
    refuses every request then, even to this server on 127.0.0.1, which is all it talks to."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def hub_client(server) -> InferenceClient:
    return InferenceClient(model=server.url, token=API_KEY, timeout=120)


def encode(client, texts: list[str]) -> torch.Tensor:
    response = client.post("/encode", json={"inputs": texts})
    assert response.status_code == 200, response.text
    return torch.tensor(response.json()["embeddings"])


def test_openai_client_embeds_texts_as_encode_does(openai_client, client) -> None:
    texts = ["a short query", words(300, 10)]
    result = openai_client.embeddings.create(model="anything", input=texts)
    vectors = torch.tensor([item.embedding for item in result.data])
    torch.testing.assert_close(vectors, encode(client, texts), atol=1e-5, rtol=0)
    assert [item.index for item in result.data] == [0, 1]
    assert result.usage.prompt_tokens > 300


def test_openai_client_base64_and_dimensions(openai_client, client) -> None:
    # the client asks for base64 by default when numpy is present, and decodes it itself
    result = openai_client.embeddings.create(model="m", input="hello there", dimensions=64)
    vector = torch.tensor(result.data[0].embedding)
    assert vector.shape == (64,)
    expected = torch.nn.functional.normalize(encode(client, ["hello there"])[0, :64], dim=0)
    torch.testing.assert_close(vector, expected, atol=1e-5, rtol=0)


def test_openai_client_sends_token_ids(openai_client, client) -> None:
    ids = client.post("/tokenize", json={"inputs": ["token ids in", "two lists"]}).json()
    id_lists = [[token["id"] for token in tokens] for tokens in ids]
    result = openai_client.embeddings.create(model="m", input=id_lists, encoding_format="float")
    vectors = torch.tensor([item.embedding for item in result.data])
    torch.testing.assert_close(
        vectors, encode(client, ["token ids in", "two lists"]), atol=1e-5, rtol=0
    )
    single = openai_client.embeddings.create(model="m", input=id_lists[0], encoding_format="float")
    torch.testing.assert_close(
        torch.tensor(single.data[0].embedding), vectors[0], atol=1e-5, rtol=0
    )


def test_openai_client_raises_with_the_servers_message(openai_client, server) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        openai_client.embeddings.create(
            model="m", input="x", extra_body={"attention": {"mode": "sliding_window", "window": 3}}
        )
    assert "even" in refused.value.message
    assert refused.value.body["code"] == "validation"
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        openai_client.embeddings.create(model="m", input=[[1, 10**9]], encoding_format="float")
    assert "vocabulary" in refused.value.message
    wrong_key = openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong_key.embeddings.create(model="m", input="x")
    assert "invalid API key" in refused.value.message


def test_openai_client_lists_the_served_model(openai_client) -> None:
    assert [model.id for model in openai_client.models.list()] == ["all-MiniLM-L6-v2"]


def test_huggingface_hub_feature_extraction(hub_client, client) -> None:
    vectors = hub_client.feature_extraction(["hub text one", "and two"])
    assert isinstance(vectors, np.ndarray) and vectors.shape == (2, 384)
    expected = encode(client, ["hub text one", "and two"])
    torch.testing.assert_close(torch.from_numpy(vectors), expected, atol=1e-5, rtol=0)
    raw = hub_client.feature_extraction("hub text one", normalize=False, truncate=True)
    assert abs(float(np.linalg.norm(raw[0])) - 1.0) > 1e-3  # not normalized


def test_huggingface_hub_raises_with_the_servers_message(server) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    wrong_key = InferenceClient(model=server.url, token="nope", timeout=60)
    with pytest.raises(HfHubHTTPError) as refused:
        wrong_key.feature_extraction("x")
    assert "invalid API key" in str(refused.value)


def test_tei_embed_embed_all_tokenize_decode(client) -> None:
    embedded = client.post("/embed", json={"inputs": ["tei route"], "normalize": True}).json()
    torch.testing.assert_close(
        torch.tensor(embedded), encode(client, ["tei route"]), atol=1e-5, rtol=0
    )
    pieces = client.post("/tokenize", json={"inputs": "tei route"}).json()[0]
    assert pieces[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert pieces[-1]["text"] == "[SEP]" and pieces[-2]["text"] == "route"
    assert (pieces[-2]["start"], pieces[-2]["stop"]) == (4, 9)
    tokens = client.post("/embed_all", json={"inputs": "tei route"}).json()
    assert len(tokens) == 1 and len(tokens[0]) == len(pieces) and len(tokens[0][0]) == 384
    ids = [piece["id"] for piece in pieces]
    assert client.post("/decode", json={"ids": ids}).json() == ["tei route"]
    info = client.get("/info").json()
    assert info["model_id"] == "all-MiniLM-L6-v2"
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 4096
