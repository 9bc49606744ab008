"""The pieces the fast paths are made of: the sliding-window tile plan and the exact top-k."""

from __future__ import annotations

import pytest
import torch

from sparse_core import AttentionSpec, _native, attend, reference_attend
from sparse_core import _window_tiles as window_tiles
from sparse_core._exact_topk import exact_topk, topk_selection
from sparse_core.topk import sequence_topk
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


def native_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The C++ kernel on (..., n) scores; it must be built wherever the tests run."""
    if not _native.enabled():
        pytest.skip(f"{_native.ENV_SWITCH}=0 turns the C++ kernel off")
    assert _native.topk_rows() is not None, "the C++ top-k kernel failed to build; see its warning"
    return topk_selection(scores.device, scores.dtype)(scores, k)


SELECTIONS = {"torch": exact_topk, "native": native_topk}


def assert_same_selection(scores, k, values, columns):
    """Same values as torch.topk; the same columns wherever no two scores tie."""
    expected = scores.topk(k, dim=-1)
    assert columns.dtype == torch.int64
    assert torch.equal(scores.gather(-1, columns), values)
    assert torch.equal(values.sort(dim=-1).values, expected.values.sort(dim=-1).values)
    distinct = torch.tensor([len(row.unique()) == row.numel() for row in scores.flatten(0, -2)])
    chosen = columns.sort(dim=-1).values.flatten(0, -2)
    assert torch.equal(
        chosen[distinct], expected.indices.sort(dim=-1).values.flatten(0, -2)[distinct]
    )
    assert all(len(row.unique()) == k for row in columns.flatten(0, -2))  # k distinct columns


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("n", [1, 15, 16, 97, 1000, 1003, 5000, 70000])
@pytest.mark.parametrize("k", [1, 2, 5, 64])
def test_exact_topk_finds_the_same_keys_as_torch_topk(selection, n, k):
    k = min(k, n)
    scores = torch.randn(3, 4, n, generator=torch.Generator().manual_seed(n + k))
    scores[0, 0, n // 2 :] = float("-inf")  # padded keys rank last
    values, columns = SELECTIONS[selection](scores, k)
    assert_same_selection(scores, k, values, columns)


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("n", [5, 64, 1024, 4099])
def test_exact_topk_with_ties_and_k_up_to_n(selection, n):
    generator = torch.Generator().manual_seed(n)
    scores = torch.randint(0, 5, (6, n), generator=generator).float()  # many ties
    scores[1] = 2.0  # one value everywhere
    scores[2, : n // 2] = float("-inf")
    for k in sorted({1, 3, n // 2 or 1, n - 1 or 1, n}):
        values, columns = SELECTIONS[selection](scores, k)
        assert_same_selection(scores, k, values, columns)


@pytest.mark.parametrize("n", [7, 300, 5000])
def test_native_topk_ranks_nan_first_like_torch_topk(n):
    scores = torch.randn(4, n, generator=torch.Generator().manual_seed(n))
    scores[0, [1, n // 2, n - 1]] = float("nan")
    scores[1, :] = float("nan")
    values, columns = native_topk(scores, 3)
    assert values[0].isnan().all() and sorted(columns[0].tolist()) == [1, n // 2, n - 1]
    assert values[1].isnan().all() and len(columns[1].unique()) == 3
    assert_same_selection(scores[2:], 3, values[2:], columns[2:])


def test_native_topk_takes_strided_input_and_rejects_bad_arguments():
    scores = torch.randn(40, 300)
    values, columns = native_topk(scores[::2, 5:], 8)  # not contiguous
    assert_same_selection(scores[::2, 5:], 8, values, columns)
    kernel = _native.topk_rows()
    empty_values, empty_columns = kernel(torch.empty(0, 10), 3)
    assert empty_values.shape == empty_columns.shape == (0, 3)
    for scores, k, message in [
        (torch.randn(4, 10), 0, "1 <= k <= n"),
        (torch.randn(4, 10), 11, "1 <= k <= n"),
        (torch.randn(4, 10, dtype=torch.float64), 3, "float32"),
        (torch.randn(10), 3, "2-D"),
    ]:
        with pytest.raises(RuntimeError, match=message):
            kernel(scores, k)


def test_topk_attention_is_the_same_with_and_without_the_native_kernel(monkeypatch):
    q, k, v = (
        torch.randn(2, 3000, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)
    )
    native_topk(torch.zeros(1, 1), 1)  # built, or the test fails here
    with_native = sequence_topk(q, k, v, 40)
    monkeypatch.setenv(_native.ENV_SWITCH, "0")
    assert _native.topk_rows() is None
    torch.testing.assert_close(sequence_topk(q, k, v, 40), with_native, atol=1e-6, rtol=1e-5)
