"""The pieces the fast paths are made of: the sliding-window tile plan and the exact top-k."""

from __future__ import annotations

import pytest
import torch

from sparse_core import AttentionSpec, attend, reference_attend
from sparse_core import _window_tiles as window_tiles
from sparse_core._exact_topk import exact_topk
from tests.sparse_core.helpers import TOLERANCE, assert_close_on_valid_rows, make_qkv


@pytest.mark.parametrize("window", [2, 30, 128, 400, 1998])
def test_sliding_window_with_many_small_runs_and_pieces(monkeypatch, window):
    """Tiny run and mask budgets, so that interior runs and edge pieces split at a test size."""
    monkeypatch.setattr(window_tiles, "CHUNK_ROWS", 64)
    monkeypatch.setattr(window_tiles, "MASK_BUDGET", 3000)
    spec = AttentionSpec("sliding_window", window=window)
    q, k, v = make_qkv(1000, torch.float32)
    lengths = torch.tensor([1000, 613])
    out = attend(q, k, v, spec, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])


@pytest.mark.parametrize("length", [1, 5, 97, 1000, 4099])
@pytest.mark.parametrize("half", [1, 7, 256, 5000])
def test_tile_plan_covers_every_row_once(length, half):
    tiles = window_tiles.plan(length, half, window_tiles.tile_size(2 * half))
    rows = [
        r for first, stop in tiles.interior for r in range(first * tiles.tile, stop * tiles.tile)
    ]
    rows += [r for first, stop in tiles.pieces for r in range(first, stop)]
    assert sorted(rows) == list(range(length))
    assert tiles.computed_pairs() >= window_tiles.allowed_pairs(length, half)


@pytest.mark.parametrize("n", [1, 16, 97, 1000, 1003, 5000, 70000])
@pytest.mark.parametrize("k", [1, 2, 5, 64])
def test_exact_topk_finds_the_same_keys_as_torch_topk(n, k):
    k = min(k, n)
    scores = torch.randn(3, 4, n, generator=torch.Generator().manual_seed(n + k))
    scores[0, 0, n // 2 :] = float("-inf")  # padded keys rank last
    values, columns = exact_topk(scores, k)
    expected = scores.topk(k, dim=-1)
    assert torch.equal(scores.gather(-1, columns), values)
    finite = expected.values.isfinite()
    chosen = columns.sort(dim=-1).values
    torch.testing.assert_close(
        values.sort(dim=-1).values, expected.values.sort(dim=-1).values, atol=0, rtol=0
    )
    assert torch.equal(chosen[finite.all(-1)], expected.indices.sort(dim=-1).values[finite.all(-1)])
