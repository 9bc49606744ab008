"""Every attention mode: batch invariance, and equality with dense when the pattern covers n."""

from __future__ import annotations

import pytest
import torch

from models import Encoder
from models.batching import group_by_length
from sparse_core import AttentionSpec

# Patterns narrow enough to be really sparse on texts of 100-250 tokens.
SPARSE = [
    AttentionSpec("block", block_size=32),
    AttentionSpec("sliding_window", window=32),
    AttentionSpec("topk", top_k=16),
]
EVERY_MODE = [AttentionSpec("dense"), *SPARSE]
# Patterns that cover every key of inputs up to 256 tokens.
COVERING = [
    AttentionSpec("block", block_size=256),
    AttentionSpec("sliding_window", window=512),
    AttentionSpec("topk", top_k=256),
]


@pytest.fixture(scope="module")
def mixed_batch(encoder: Encoder, texts_by_length: list[str]) -> list[list[int]]:
    """Real texts of 120-256 tokens, unsorted, which encode_ids runs as one padded pass."""
    batch = [ids for ids in encoder.tokenize(texts_by_length) if len(ids) > 120]
    batch = batch[1::2] + batch[0::2]
    assert len({len(ids) for ids in batch}) == len(batch) >= 4
    assert len(group_by_length([len(ids) for ids in batch], encoder.max_group_tokens)) == 1
    return batch


@pytest.mark.parametrize("spec", EVERY_MODE, ids=str)
@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_input_alone_equals_input_in_a_mixed_batch(
    encoder: Encoder, mixed_batch: list[list[int]], spec: AttentionSpec, pooling: str
) -> None:
    batched = encoder.encode_ids(mixed_batch, spec, pooling=pooling)
    for ids, in_batch in zip(mixed_batch, batched, strict=True):
        (alone,) = encoder.encode_ids([ids], spec, pooling=pooling)
        assert alone.shape == in_batch.shape
        torch.testing.assert_close(in_batch, alone, atol=2e-5, rtol=0)


@pytest.mark.parametrize("spec", SPARSE, ids=str)
def test_sparse_patterns_differ_from_dense(
    encoder: Encoder, mixed_batch: list[list[int]], spec: AttentionSpec
) -> None:
    """The narrow patterns really drop keys (so the invariance above is not dense in disguise)."""
    dense = torch.stack(encoder.encode_ids(mixed_batch, AttentionSpec("dense")))
    sparse = torch.stack(encoder.encode_ids(mixed_batch, spec))
    assert (dense - sparse).abs().max() > 1e-3


@pytest.mark.parametrize("spec", COVERING, ids=str)
def test_covering_patterns_equal_dense(
    encoder: Encoder, mixed_batch: list[list[int]], spec: AttentionSpec
) -> None:
    dense = encoder.encode_ids(mixed_batch, AttentionSpec("dense"), pooling="none")
    sparse = encoder.encode_ids(mixed_batch, spec, pooling="none")
    for expected, actual in zip(dense, sparse, strict=True):
        torch.testing.assert_close(actual, expected, atol=2e-5, rtol=0)


def test_results_come_back_in_input_order_across_groups(encoder: Encoder, texts_by_length) -> None:
    """Lengths 10..130 make several groups; each result still lines up with its input."""
    batch = encoder.tokenize(texts_by_length[4::-1] + texts_by_length[:2])
    assert len(group_by_length([len(ids) for ids in batch], encoder.max_group_tokens)) > 2
    together = encoder.encode_ids(batch, AttentionSpec("dense"), pooling="none")
    for ids, tokens in zip(batch, together, strict=True):
        assert tokens.shape == (len(ids), encoder.dim)
        torch.testing.assert_close(
            tokens, encoder.encode_ids([ids], AttentionSpec("dense"), pooling="none")[0]
        )
