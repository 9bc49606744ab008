"""Dense mode reproduces sentence-transformers' embeddings of the bundled model."""

from __future__ import annotations

import pytest
import torch

from models import Encoder, load_encoder
from models.encoder import default_model_path


@pytest.fixture(scope="module")
def sentence_transformer():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model_path()), device="cpu")


def test_dense_equals_sentence_transformers(
    encoder: Encoder, sentence_transformer, texts_by_length: list[str]
) -> None:
    lengths = [len(ids) for ids in encoder.tokenize(texts_by_length)]
    assert max(lengths) <= sentence_transformer.max_seq_length  # nothing cut on their side
    assert max(lengths) > 200 and min(lengths) < 20

    ours = encoder.encode(texts_by_length)  # defaults: dense, the folder's mean pooling, normalized
    theirs = torch.from_numpy(sentence_transformer.encode(texts_by_length, batch_size=3))

    cosine = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
    assert cosine.min().item() >= 0.99999, cosine
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_folder_defaults_follow_sentence_transformers_config(encoder: Encoder) -> None:
    assert encoder.name == "all-MiniLM-L6-v2"
    assert encoder.dim == 384
    assert encoder.max_position_embeddings == 512
    assert encoder.default_pooling == "mean"
    assert encoder.default_normalize is True
    assert encoder.dtype == torch.float32 and encoder.device == torch.device("cpu")


def test_bfloat16_embeddings_stay_close_to_float32(
    encoder: Encoder, texts_by_length: list[str]
) -> None:
    """LONGENC_DTYPE=bfloat16 (faster on CPUs with native bfloat16) keeps the embeddings."""
    half = load_encoder(dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(
        half.encode(texts_by_length).float(), encoder.encode(texts_by_length), dim=-1
    )
    assert cosine.min().item() >= 0.999, cosine
