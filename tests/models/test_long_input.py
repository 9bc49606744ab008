"""One input of 65,536+ tokens in one sliding-window pass on CPU, checked against short passes."""

from __future__ import annotations

import pytest
import torch

from models import Encoder
from sparse_core import AttentionSpec
from tests.models.conftest import long_text

WINDOW = 256
# With 6 layers each looking WINDOW/2 each way, token i depends only on tokens within 6·128 = 768.
REACH = 1024  # >= 768, and a multiple of 512 so that copied positions line up
TOKENS = 65_540


@pytest.fixture(scope="module")
def long_ids(encoder: Encoder) -> list[int]:
    (ids,) = encoder.tokenize([long_text()])
    body = ids[1:-1]
    repeats = TOKENS // len(body) + 1
    return [ids[0], *(body * repeats)[: TOKENS - 2], ids[-1]]  # [CLS] real text ... [SEP]


def test_65k_tokens_in_one_sliding_window_pass(encoder: Encoder, long_ids: list[int]) -> None:
    spec = AttentionSpec("sliding_window", window=WINDOW)
    (tokens,) = encoder.encode_ids([long_ids], spec, pooling="none", normalize=False)
    assert tokens.shape == (TOKENS, encoder.dim)
    assert torch.isfinite(tokens).all()

    # The start and a stretch in the middle must equal short passes over their neighbourhoods.
    checked = 64
    for start in (0, 32 * 1024):
        lo = max(start - REACH, 0)
        window_ids = long_ids[lo : start + checked + REACH]
        (short,) = encoder.encode_ids([window_ids], spec, pooling="none", normalize=False)
        torch.testing.assert_close(
            tokens[start : start + checked],
            short[start - lo : start - lo + checked],
            atol=1e-4,
            rtol=0,
        )
