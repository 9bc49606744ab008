"""Every fast kernel against the float64 oracle: odd sizes, padding, batch 2, extreme params."""

from __future__ import annotations

import pytest
import torch

from sparse_core import AttentionSpec, attend, reference_attend
from tests.sparse_core.helpers import (
    SIZES,
    TOLERANCE,
    assert_close_on_valid_rows,
    clear_choice_rows,
    make_lengths,
    make_qkv,
)

# Parameter values per mode, extremes included; see `resolve` for the relative ones.
EXTREMES = {
    "block": ("block_size", [1, 16, "n-1", "2n"]),
    "sliding_window": ("window", [2, 64, "2n"]),
}


def resolve(value: int | str, n: int) -> int:
    """A parameter value: an int, or "n", "n-1" (at least 1), "2n" relative to the length."""
    if isinstance(value, int):
        return value
    return {"n": n, "n-1": max(1, n - 1), "2n": 2 * n + 2}[value]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lengths_kind", ["none", "ragged"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(
    ("mode", "value"),
    [(mode, value) for mode, (_, values) in EXTREMES.items() for value in values],
)
def test_structured_kernel_matches_reference(mode, value, n, lengths_kind, dtype):
    name, _ = EXTREMES[mode]
    spec = AttentionSpec(mode, **{name: resolve(value, n)})
    q, k, v = make_qkv(n, dtype)
    lengths = make_lengths(n, lengths_kind)
    out = attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(
        out, reference_attend(q, k, v, spec, lengths), lengths, TOLERANCE[dtype]
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lengths_kind", ["none", "ragged"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("top_k", [1, 2, 16, "n"])
def test_topk_matches_reference(top_k, n, lengths_kind, dtype):
    top_k = resolve(top_k, n)
    spec = AttentionSpec("topk", top_k=top_k)
    q, k, v = make_qkv(n, dtype)
    lengths = make_lengths(n, lengths_kind)
    out = attend(q, k, v, spec, lengths)
    rows = clear_choice_rows(q, k, top_k, lengths)
    assert rows.float().mean() > 0.95, "too many near-tied rows for the test to mean anything"
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[dtype], rows=rows)


@pytest.mark.parametrize("mode", ["block", "sliding_window", "topk"])
def test_non_contiguous_inputs(mode):
    """Inputs as a model produces them: (B, n, H, D) projections viewed as (B, H, n, D)."""
    spec = AttentionSpec(
        mode,
        **{"block": {"block_size": 8}, "sliding_window": {"window": 6}, "topk": {"top_k": 5}}[mode],
    )
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in make_qkv(97, torch.float32))
    assert not q.is_contiguous()
    lengths = torch.tensor([97, 40])
    out = attend(q, k, v, spec, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    assert_close_on_valid_rows(out, expected, lengths, TOLERANCE[torch.float32])
