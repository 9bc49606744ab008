"""One input of 16k+ tokens on tiny rotary models (ModernBERT, NomicBert) in sliding_window and
block attention: finite, unit-norm embeddings, equal alone and inside a padded batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import Encoder, load_encoder
from sparse_core import AttentionSpec
from tests.models.conftest import TINY
from tests.models.tiny_archs import LONG_KINDS, save_tiny

TOKENS = 16_400  # past 16k, and far past the tiny models' trained 64 positions
SPECS = [AttentionSpec("sliding_window", window=64), AttentionSpec("block", block_size=64)]


@pytest.fixture(scope="module", params=LONG_KINDS)
def long_encoder(request: pytest.FixtureRequest, tmp_path_factory) -> Encoder:
    folder: Path = tmp_path_factory.mktemp(request.param)
    save_tiny(request.param, folder, layers=2)
    encoder = load_encoder(folder, device="cpu")
    encoder.max_group_tokens = 4 * TOKENS  # run the batch below as one padded pass
    return encoder


def ids_of(length: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    body = torch.randint(4, TINY["vocab_size"], (length - 2,), generator=generator).tolist()
    return [2, *body, 3]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_16k_tokens_finite_unit_norm_and_batch_invariant(
    long_encoder: Encoder, spec: AttentionSpec
) -> None:
    long, shorter = ids_of(TOKENS, 0), ids_of(TOKENS * 3 // 4, 1)
    (alone,) = long_encoder.encode_ids([long], spec)
    batched = long_encoder.encode_ids([shorter, long], spec)
    for vector in (alone, *batched):
        assert vector.shape == (TINY["hidden_size"],)
        assert torch.isfinite(vector).all()
        assert abs(vector.norm().item() - 1.0) < 1e-5
    torch.testing.assert_close(batched[1], alone, atol=1e-5, rtol=0)
    (shorter_alone,) = long_encoder.encode_ids([shorter], spec)
    torch.testing.assert_close(batched[0], shorter_alone, atol=1e-5, rtol=0)
