"""On a CUDA host: the default half-precision encoder agrees with float32 on CPU in every mode."""

from __future__ import annotations

import pytest
import torch

from models import Encoder, load_encoder
from sparse_core import AttentionSpec

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
SPECS = [
    AttentionSpec("dense"),
    AttentionSpec("block", block_size=32),
    AttentionSpec("sliding_window", window=32),
    AttentionSpec("topk", top_k=16),
]


@pytest.fixture(scope="module")
def cuda_encoder() -> Encoder:
    return load_encoder(device="auto")


def test_auto_picks_cuda_and_float16(cuda_encoder: Encoder) -> None:
    assert cuda_encoder.device.type == "cuda"
    assert cuda_encoder.dtype == torch.float16


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_cuda_matches_cpu_float32(
    cuda_encoder: Encoder, encoder: Encoder, texts_by_length: list[str], spec: AttentionSpec
) -> None:
    batch = encoder.tokenize(texts_by_length)
    expected = torch.stack(encoder.encode_ids(batch, spec))
    actual = torch.stack(cuda_encoder.encode_ids(batch, spec))
    assert actual.device.type == "cpu" and actual.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(actual, expected, dim=-1)
    assert cosine.min() > 0.995, cosine  # topk may pick a few other keys at near-ties
