"""`pool` on hand-made hidden states, and what the encoder hands it: no model weights needed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import Encoder
from models.pooling import pool
from sparse_core import AttentionSpec


def hidden_with_poisoned_padding() -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 5, 4) hidden states whose padded rows hold NaN and inf, and their lengths (5, 2, 1)."""
    hidden = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([5, 2, 1])
    hidden[1, 2:] = float("nan")
    hidden[2, 1:] = float("inf")
    return hidden, lengths


@pytest.mark.parametrize("normalize", [False, True])
def test_mean_ignores_padded_rows_even_when_they_hold_nan(normalize: bool) -> None:
    hidden, lengths = hidden_with_poisoned_padding()
    vectors = pool(hidden, lengths, "mean", normalize)  # (3, 4)
    expected = torch.stack([hidden[b, :length].mean(dim=0) for b, length in enumerate([5, 2, 1])])
    if normalize:
        expected = F.normalize(expected, dim=-1)
    assert vectors.isfinite().all()
    torch.testing.assert_close(vectors, expected)


def test_cls_and_none_keep_only_valid_rows() -> None:
    hidden, lengths = hidden_with_poisoned_padding()
    torch.testing.assert_close(pool(hidden, lengths, "cls", False), hidden[:, 0])
    tokens = pool(hidden, lengths, "none", True)  # (5 + 2 + 1, 4), inputs in order
    expected = torch.cat([hidden[0], hidden[1, :2], hidden[2, :1]])
    torch.testing.assert_close(tokens, F.normalize(expected, dim=-1))


def test_bfloat16_hidden_pools_in_float32() -> None:
    hidden, lengths = hidden_with_poisoned_padding()
    vectors = pool(hidden.bfloat16(), lengths, "mean", False)
    assert vectors.dtype == torch.float32


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "eager"])
@pytest.mark.parametrize(("sizes", "padded"), [([7, 7, 7], False), ([7, 4, 6], True)])
def test_the_model_sees_lengths_only_when_a_row_is_padded(
    encoder: Encoder, monkeypatch, sizes: list[int], padded: bool, graph: bool
) -> None:
    seen: list[torch.Tensor | None] = []
    model, graphs = encoder.model, encoder.graphs
    assert graphs is not None and graphs.runs(AttentionSpec("dense"))

    class Recording:
        def runs(self, spec: AttentionSpec) -> bool:
            return graph

        def __call__(self, ids, lengths):
            seen.append(lengths)
            return graphs(ids, lengths)

    def spy(ids, attention, lengths):
        seen.append(lengths)
        return model(ids, attention, lengths)

    monkeypatch.setattr(encoder, "graphs", Recording())
    monkeypatch.setattr(encoder, "model", spy)
    batch = [[101] + [2023] * (size - 2) + [102] for size in sizes]
    pooled = encoder.forward_group(batch, AttentionSpec("dense"), "none", False)
    assert pooled.shape == (sum(sizes), encoder.dim)
    (lengths,) = seen
    if padded:
        assert lengths is not None and lengths.tolist() == sizes
    else:
        assert lengths is None
