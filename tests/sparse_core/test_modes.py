"""The pattern-engine modes and the formula modes against the float64 oracle: odd sizes, batch 2
with different lengths, parameters at their extremes, float32 and bfloat16; batch invariance."""

from __future__ import annotations

import pytest
import torch

from sparse_core import AttentionSpec, attend, reference_attend
from tests.sparse_core.helpers import (
    SIZES,
    TOLERANCE,
    assert_close_on_valid_rows,
    clear_threshold_rows,
    make_lengths,
    make_qkv,
)

# Parameter sets per mode, extremes included; "2n" stands for a value beyond the length.
CASES = {
    "global_window": [
        {"window": 2, "global_tokens": 0},
        {"window": 8, "global_tokens": 1},
        {"window": 64, "global_tokens": 5},
        {"window": "2n", "global_tokens": "2n"},
    ],
    "dilated": [
        {"window": 2, "dilation": 1},
        {"window": 4, "dilation": 3},
        {"window": 16, "dilation": 1024},
        {"window": "2n", "dilation": 2},
    ],
    "strided": [{"stride": 1}, {"stride": 5}, {"stride": 70}, {"stride": "2n"}],
    "fixed": [
        {"block_size": 1, "summary": 1},
        {"block_size": 10, "summary": 3},
        {"block_size": 100, "summary": 100},
        {"block_size": "2n", "summary": 1},
    ],
    "bigbird": [
        {"block_size": 1, "window_blocks": 1, "global_blocks": 0, "random_blocks": 0},
        {"block_size": 8},
        {
            "block_size": 16,
            "window_blocks": 5,
            "global_blocks": 0,
            "random_blocks": 64,
            "seed": 2**31 - 1,
        },
        {"block_size": "2n", "global_blocks": 3},
    ],
    "routing": [
        {"block_size": 1, "blocks": 0},
        {"block_size": 8, "blocks": 2},
        {"block_size": 16, "blocks": 1000},
        {"block_size": "2n"},
    ],
    "threshold": [{"threshold": 1.0}, {"threshold": 0.1}, {"threshold": 1e-6}],
    "performer": [{"features": 1}, {"features": 64, "seed": 3}, {"features": 4096}],
    "nystrom": [{"landmarks": 1}, {"landmarks": 7}, {"landmarks": 64}, {"landmarks": "2n"}],
}
PARAMETRIZED = [(mode, params) for mode, cases in CASES.items() for params in cases]


def build(mode: str, params: dict, n: int) -> AttentionSpec:
    return AttentionSpec(mode, **{k: 2 * n + 2 if v == "2n" else v for k, v in params.items()})


def compare(spec, q, k, v, lengths, atol) -> None:
    out = attend(q, k, v, spec, lengths)
    expected = reference_attend(q, k, v, spec, lengths)
    rows = clear_threshold_rows(q, k, spec.threshold, lengths) if spec.mode == "threshold" else None
    if rows is not None:
        assert rows.float().mean() > 0.9, "too many rows near the cut for the test to mean anything"
    assert_close_on_valid_rows(out, expected, lengths, atol, rows=rows)


# Every parameter set at the small sizes in float32, and at 97 in bfloat16; 1000 and 4099 take
# one set per mode below, since the float64 oracle's n² work dominates the suite's time.
GRID = [(n, torch.float32) for n in SIZES if 1 < n < 1000] + [(97, torch.bfloat16)]
# performer sums m·L products per output in float32: its rounding reaches ~1e-5 at m = 4096
FLOAT32_TOLERANCE = {"performer": 5e-5}


def tolerance(mode: str, dtype: torch.dtype) -> float:
    if dtype == torch.float32:
        return FLOAT32_TOLERANCE.get(mode, TOLERANCE[dtype])
    return TOLERANCE[dtype]


@pytest.mark.parametrize(("n", "dtype"), GRID, ids=[f"{n}-{str(d)[6:]}" for n, d in GRID])
@pytest.mark.parametrize(
    ("mode", "params"), PARAMETRIZED, ids=[f"{m}-{p}" for m, p in PARAMETRIZED]
)
def test_mode_matches_reference_on_a_ragged_batch(mode, params, n, dtype):
    spec = build(mode, params, n)
    q, k, v = make_qkv(n, dtype)
    compare(spec, q, k, v, make_lengths(n, "ragged"), tolerance(mode, dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("mode", "params"), [(m, c[1]) for m, c in CASES.items()])
def test_mode_matches_reference_at_1000(mode, params, dtype):
    q, k, v = make_qkv(1000, dtype)
    compare(
        build(mode, params, 1000), q, k, v, make_lengths(1000, "ragged"), tolerance(mode, dtype)
    )


@pytest.mark.parametrize(("mode", "params"), [(m, c[1]) for m, c in CASES.items()])
def test_mode_matches_reference_unpadded_and_at_one_token(mode, params):
    q, k, v = make_qkv(256, torch.float32)
    compare(build(mode, params, 256), q, k, v, None, tolerance(mode, torch.float32))
    q, k, v = make_qkv(1, torch.float32)
    compare(build(mode, params, 1), q, k, v, make_lengths(1, "ragged"), TOLERANCE[torch.float32])


@pytest.mark.parametrize(("mode", "params"), [(m, c[1]) for m, c in CASES.items()])
def test_mode_matches_reference_at_a_long_odd_length(mode, params):
    """n = 4099 (the last block short at every block size), batch 2 of lengths n and n/3, one
    head; the oracle computes a sample of rows (both ends, block edges, the middle)."""
    n = 4099
    spec = build(mode, params, n)
    q, k, v = make_qkv(n, torch.float32, heads=1)
    lengths = make_lengths(n, "ragged")
    sample = torch.tensor(
        sorted({0, 1, 63, 64, 127, 128, 1365, 1366, 2047, 2048, 4034, 4097, 4098})
    )
    out = attend(q, k, v, spec, lengths)[:, :, sample]
    expected = reference_attend(q, k, v, spec, lengths, rows=sample)
    rows = None
    if mode == "threshold":
        rows = clear_threshold_rows(q[:, :, sample], k, spec.threshold, lengths)
    for b, length in enumerate(lengths.tolist()):
        keep = sample < length if rows is None else (sample < length) & rows[b, 0]
        torch.testing.assert_close(
            out[b, :, keep], expected[b, :, keep], atol=tolerance(mode, torch.float32), rtol=0
        )


@pytest.mark.parametrize(
    ("mode", "params"), PARAMETRIZED, ids=[f"{m}-{p}" for m, p in PARAMETRIZED]
)
def test_an_input_alone_equals_it_inside_a_padded_batch(mode, params):
    """Exactly: an embedding must not depend on the batch its input came in."""
    spec = build(mode, params, 300)
    q, k, v = make_qkv(301, torch.float32, batch=3)
    lengths = torch.tensor([301, 213, 40])
    batched = attend(q, k, v, spec, lengths)
    for b, length in enumerate(lengths.tolist()):
        alone = attend(
            q[b : b + 1, :, :length], k[b : b + 1, :, :length], v[b : b + 1, :, :length], spec
        )
        assert torch.equal(batched[b, :, :length], alone[0]), f"sequence {b}"


@pytest.mark.parametrize(
    "mode", ["global_window", "dilated", "strided", "fixed", "bigbird", "routing"]
)
def test_non_contiguous_inputs(mode):
    """Inputs as a model produces them: (B, n, H, D) projections viewed as (B, H, n, D)."""
    spec = build(mode, CASES[mode][1], 97)
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in make_qkv(97, torch.float32))
    assert not q.is_contiguous()
    compare(spec, q, k, v, torch.tensor([97, 40]), TOLERANCE[torch.float32])


@pytest.mark.parametrize(
    "spec",
    [
        AttentionSpec("routing", block_size=1500, blocks=0),
        AttentionSpec(
            "bigbird", block_size=1100, window_blocks=1, global_blocks=0, random_blocks=1
        ),
        AttentionSpec("fixed", block_size=1500, summary=700),
    ],
    ids=repr,
)
def test_pattern_blocks_larger_than_the_executor_block(spec):
    """Blocks beyond executor.MAX_BLOCK run on resampled lists, where they are partial."""
    n = 2500
    q, k, v = make_qkv(n, torch.float32, heads=1)
    lengths = torch.tensor([n, 1700])
    sample = torch.tensor([0, 1023, 1024, 1099, 1100, 1499, 1500, 1699, 2047, 2048, 2499])
    out = attend(q, k, v, spec, lengths)[:, :, sample]
    expected = reference_attend(q, k, v, spec, lengths, rows=sample)
    for b, length in enumerate(lengths.tolist()):
        keep = sample < length
        torch.testing.assert_close(out[b, :, keep], expected[b, :, keep], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "spec",
    [
        AttentionSpec("dense"),
        AttentionSpec("sliding_window", window=8),
        AttentionSpec("topk", top_k=4),
    ],
    ids=repr,
)
def test_mixed_dtypes_are_refused_with_a_clear_error(spec):
    """Every mode takes q, k and v of one dtype; a mix is a caller's error, named as such (the
    C++ kernel and SDPA each failed with their own message)."""
    q, k, v = make_qkv(40, torch.float32)
    with pytest.raises(ValueError, match="one dtype and device"):
        attend(q, k.bfloat16(), v, spec)
