"""The pieces the fast paths are made of: the sliding-window tile plan, the exact top-k, the
threshold weights and the block-attention kernel."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sparse_core import AttentionSpec, _native, attend, reference_attend, sliding_window
from sparse_core import _window_tiles as window_tiles
from sparse_core._exact_topk import exact_topk, topk_selection
from sparse_core.threshold import sequence_threshold
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


def require_native() -> None:
    """The C++ kernels must be built wherever the tests run, unless turned off on purpose."""
    if not _native.enabled():
        pytest.skip(f"{_native.ENV_SWITCH}=0 turns the C++ kernels off")
    assert _native.topk_rows() is not None, "the C++ kernels failed to build; see their warning"


def native_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The C++ top-k kernel on (..., n) scores."""
    require_native()
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


def native_threshold_columns():
    """The C++ threshold-weights kernel."""
    require_native()
    return _native.threshold_columns()


@pytest.mark.parametrize("n", [1, 7, 100, 4099])
@pytest.mark.parametrize("columns", [1, 8, 13, 64])
@pytest.mark.parametrize("log_cut", [0.0, -4.6, -30.0, -200.0])
@pytest.mark.parametrize("portable", [False, True], ids=["best", "portable"])
def test_native_threshold_columns_matches_float64_weights(n, columns, log_cut, portable):
    """exp(s - max) where s - max >= log_cut, else 0, per column, in place; returns the column
    sums. Shapes that use the vector body, the scalar tail and several row runs per group, with
    ties at the max, -inf scores and scores far below the max (exp underflows); the build this
    CPU runs (AVX2 on x86-64) and the portable one."""
    scores = torch.randn(3, n, columns, generator=torch.Generator().manual_seed(n)) * 8
    scores[0, : max(1, n // 3), 0] = scores[0, :, 0].max()  # ties at the max: all weight 1
    scores[1, ::2] = float("-inf")
    scores[2] *= 100  # most weights below FLT_MIN
    x = scores.double() - scores.double().amax(dim=1, keepdim=True)
    kept = x >= log_cut
    expected = torch.where(kept, x.exp(), 0.0)
    weights = scores.clone()
    sums = native_threshold_columns()(weights, log_cut, portable)
    assert sums.shape == (3, columns) and sums.dtype == torch.float32
    assert torch.equal(weights > 0, kept)  # the same keys survive
    # float32 s - max is itself rounded: about 1e-6 relative in a weight at s - max = -30
    torch.testing.assert_close(weights.double(), expected, rtol=4e-6, atol=1e-37)
    torch.testing.assert_close(sums.double(), expected.sum(dim=1), rtol=1e-5, atol=0)
    assert (weights[0, : max(1, n // 3), 0] == 1).all()


def test_native_threshold_columns_rejects_bad_arguments():
    kernel = native_threshold_columns()
    assert kernel(torch.empty(2, 0, 5), -1.0).equal(torch.zeros(2, 5))
    assert kernel(torch.empty(0, 10, 5), -1.0).shape == (0, 5)
    for bad, log_cut, message in [
        (torch.randn(1, 4, 10, dtype=torch.float64), -1.0, "float32"),
        (torch.randn(4, 10), -1.0, "3-D"),
        (torch.randn(1, 10, 4).transpose(1, 2), -1.0, "contiguous"),
        (torch.randn(1, 4, 10), 0.5, "log_cut"),
    ]:
        with pytest.raises(RuntimeError, match=message):
            kernel(bad, log_cut)


@pytest.mark.parametrize("threshold", [1.0, 0.01, 1e-30])
def test_threshold_attention_is_the_same_with_and_without_the_native_kernel(monkeypatch, threshold):
    q, k, v = (
        torch.randn(3, 1500, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)
    )
    native_threshold_columns()  # built, or the test fails here
    with_native = sequence_threshold(q, k, v, threshold)
    monkeypatch.setenv(_native.ENV_SWITCH, "0")
    assert _native.threshold_columns() is None
    without = sequence_threshold(q, k, v, threshold)
    torch.testing.assert_close(with_native, without, atol=1e-5, rtol=1e-5)


def native_block_attention():
    """The C++ block-attention kernel."""
    require_native()
    return _native.block_attention()


def block_attention_float64(q, k, v, heads, query_blocks, key_blocks, size, length):
    """The kernel's contract in float64, on (H, n, D) rows cut into blocks of `size` rows, rows
    from `length` on absent: {(h, t): (attention of block t's query rows over the listed blocks'
    rows, the largest |score|)}."""

    def rows(x, h, block):
        return x[h, block * size : min((block + 1) * size, length)].double()

    expected = {}
    for g, (t, listed) in enumerate(zip(query_blocks.tolist(), key_blocks.tolist(), strict=True)):
        for h in [heads[g].item()] if len(heads) else range(q.shape[0]):
            keys, values = (torch.cat([rows(x, h, s) for s in listed]) for x in (k, v))
            scores = rows(q, h, t) @ keys.T / math.sqrt(q.shape[-1])
            expected[h, t] = scores.softmax(dim=-1) @ values, scores.abs().max().item()
    return expected


def assert_block_attention(out, expected, size, length):
    for (h, t), (rows, largest) in expected.items():
        # a float32 score s is off by ~|s|·1e-7, which exp carries into the weights: a bound
        # that grows with the largest score (torch's SDPA is off by 6e-6 at |s| = 60 here)
        atol = 1e-6 + 4e-7 * largest
        written = out[h, t * size : min((t + 1) * size, length)].double()
        torch.testing.assert_close(written, rows, atol=atol, rtol=1e-5)


@pytest.mark.parametrize(
    ("size", "dim", "count"),
    # one row; a short block and head; 64-row tiles and a 2-row tail; 600 keys per block (past
    # the 512-key softmax chunk: one block per chunk); 20 listed blocks of 64 (three chunks);
    # 600 one-key blocks (two chunks of many blocks); wide heads; the executor's largest block
    [
        (1, 1, 1),
        (7, 5, 3),
        (130, 33, 4),
        (600, 8, 2),
        (64, 32, 20),
        (1, 4, 600),
        (16, 128, 3),
        (1024, 4, 2),
    ],  # fmt: skip
)
@pytest.mark.parametrize("per_head", [False, True], ids=["shared", "per_head"])
@pytest.mark.parametrize("ends", ["whole", "inside"], ids=["whole_blocks", "ends_in_block"])
@pytest.mark.parametrize("portable", [False, True], ids=["best", "portable"])
def test_native_block_attention_matches_float64(size, dim, count, per_head, ends, portable):
    """Block t's query rows = softmax(q · Kᵀ / √D) V over item t's listed blocks, every head or
    the item's own; the build this CPU runs and the portable one. Scores up to ~±60, so that the
    running maximum of the online softmax moves between chunks; a repeated block counts twice;
    a sequence that ends inside its last block (rows past it neither read nor written: they are
    NaN in the inputs and stay 7 in the output); rows of blocks not listed stay as they were."""
    heads, blocks = 3, 6
    length = blocks * size if ends == "whole" or size == 1 else blocks * size - size // 2
    generator = torch.Generator().manual_seed(size * 31 + dim)
    q, k, v = (torch.randn(heads, blocks * size, dim, generator=generator) for _ in range(3))
    for x in (q, k, v):
        x[:, length:] = float("nan")
    k[:, 4 * size : 5 * size] *= 12  # block 4 scores far above the others
    query_blocks = torch.tensor([0, 4, 5, 2])
    key_blocks = torch.randint(0, blocks, (4, count), generator=generator)
    key_blocks[0, 0] = key_blocks[0, -1] = 5  # listed twice, and the block the sequence ends in
    head_ids = torch.tensor([2, 0, 1, 2]) if per_head else torch.empty(0, dtype=torch.int64)
    out = torch.full_like(q, 7.0)
    native_block_attention()(
        q, k, v, out, head_ids, query_blocks, key_blocks, size, length, dim**-0.5, portable
    )
    expected = block_attention_float64(q, k, v, head_ids, query_blocks, key_blocks, size, length)
    assert_block_attention(out, expected, size, length)
    written = torch.zeros(heads, blocks * size, dtype=torch.bool)
    for h, t in expected:
        written[h, t * size : min((t + 1) * size, length)] = True
    assert (out[~written[..., None].expand_as(out)] == 7.0).all()


@pytest.mark.parametrize("portable", [False, True], ids=["best", "portable"])
def test_native_block_attention_survives_a_first_chunk_of_overflowed_scores(portable):
    """Scores that overflow to -inf in the whole first 512-key chunk, finite ones after it: the
    running maximum starts at -inf, which must not turn the sums into NaN (exp(-inf - -inf))."""
    q, k, v = (
        torch.randn(1, 9 * 64, 2, generator=torch.Generator().manual_seed(i)) for i in range(3)
    )
    q[..., 0], q[..., 1] = 1e20, 0.0
    k[:, : 8 * 64, 0] = -1e20  # blocks 0-7: q·k = -1e40 -> -inf in float32
    out = torch.empty_like(q)
    native_block_attention()(
        q, k, v, out, torch.empty(0, dtype=torch.int64), torch.tensor([0]),
        torch.arange(9)[None], 64, 9 * 64, 2**-0.5, portable,
    )  # fmt: skip
    keys, values = k[0, 8 * 64 :], v[0, 8 * 64 :]  # only block 8 counts
    expected = F.scaled_dot_product_attention(q[0, :64], keys, values)
    torch.testing.assert_close(out[0, :64], expected, atol=1e-6, rtol=1e-5)


def test_native_block_attention_takes_strided_rows_and_rejects_bad_arguments():
    """The model's layout, (n, H, D) rows seen as (H, n, D); an output with heads interleaved
    another way; then every bad argument."""
    kernel = native_block_attention()
    q, k, v = (
        torch.randn(40, 4, 8, generator=torch.Generator().manual_seed(i)).transpose(0, 1)
        for i in range(3)
    )  # (4, 40, 8), rows 32 floats apart
    out = torch.empty(4, 2, 40, 8)[:, 1]  # rows 8 floats apart, heads 640
    none = torch.empty(0, dtype=torch.int64)
    listed = torch.tensor([[0, 2]])
    kernel(q, k, v, out, none, torch.tensor([2]), listed, 16, 37, 8**-0.5)
    expected = block_attention_float64(q, k, v, none, torch.tensor([2]), listed, 16, 37)
    assert_block_attention(out, expected, 16, 37)
    one, pair = torch.tensor([0]), torch.tensor([[0, 1]])
    columns = v.transpose(1, 2).contiguous().transpose(1, 2)  # rows stored column-major
    for args, message in [
        ((q.double(), k, v, out, none, one, pair, 16, 37), "float32"),
        ((q, k[:2], v, out, none, one, pair, 16, 37), "heads and head size"),
        ((q, k, columns, out, none, one, pair, 16, 37), "contiguous"),
        ((q, k, v, out, none, one, pair, 16, 41), "length"),
        ((q, k, v, out, none, one, pair, 0, 37), "block_size"),
        ((q, k, v, out, none, one, torch.tensor([[0, 3]]), 16, 37), "key block out of range"),
        ((q, k, v, out, none, one, pair, 16, 16), "key block out of range"),  # one block only
        ((q, k, v, out, none, torch.tensor([-1]), pair, 16, 37), "query block out of range"),
        ((q, k, v, out, torch.tensor([4]), one, pair, 16, 37), "head out of range"),
        ((q, k, v, out, none, one, torch.empty(1, 0, dtype=torch.int64), 16, 37), "at least one"),
        ((q, k, v, out, none, one, pair.int(), 16, 37), "int64"),
        ((q, k, v, out, none, torch.tensor([0, 1]), pair, 16, 37), "agree"),
        ((q, k, v, q, none, one, pair, 16, 37), "memory location"),  # out must not be an input
        (
            (q, k, v, out.as_strided(out.shape, (0, *out.stride()[1:])), none, one, pair, 16, 37),
            "memory location",
        ),
    ]:
        with pytest.raises(RuntimeError, match=message):
            kernel(*args, 1.0)


@pytest.mark.parametrize(
    "spec",
    [
        AttentionSpec("bigbird", block_size=32, random_blocks=2),
        AttentionSpec("routing", block_size=16, blocks=3),  # lists per head
    ],
    ids=str,
)
def test_executor_is_the_same_with_and_without_the_native_kernel(monkeypatch, spec):
    """A length of whole blocks and one that ends inside a block, in the model's row layout (q,
    k, v views of (B, n, H, D) rows); then every item through gather + SDPA."""
    q, k, v = (
        x.transpose(1, 2).contiguous().transpose(1, 2) for x in make_qkv(1024, torch.float32)
    )
    lengths = torch.tensor([1024, 345])
    native_block_attention()  # built, or the test fails here
    with_native = attend(q, k, v, spec, lengths)
    monkeypatch.setenv(_native.ENV_SWITCH, "0")
    assert _native.block_attention() is None
    without = attend(q, k, v, spec, lengths)
    torch.testing.assert_close(with_native, without, atol=1e-6, rtol=1e-5)


def band_attention_float64(q, k, v, query_blocks, key_blocks, size, length, half):
    """The kernel's band contract in float64: block t's query rows over the listed blocks' rows,
    only pairs with |i - j| <= half, on every head: {(h, t): (rows, the largest |score|)}, and
    {(h, t): each row's log-sum-exp of its scaled scores}."""
    expected, lse = {}, {}
    for t, listed in zip(query_blocks.tolist(), key_blocks.tolist(), strict=True):
        queries = torch.arange(t * size, min((t + 1) * size, length))
        keys = torch.cat([torch.arange(s * size, min((s + 1) * size, length)) for s in listed])
        outside = (queries[:, None] - keys[None, :]).abs() > half
        for h in range(q.shape[0]):
            scores = q[h, queries].double() @ k[h, keys].double().T / math.sqrt(q.shape[-1])
            largest = scores.abs().max().item()
            scores = scores.masked_fill(outside, float("-inf"))
            expected[h, t] = scores.softmax(dim=-1) @ v[h, keys].double(), largest
            lse[h, t] = scores.logsumexp(dim=-1)
    return expected, lse


@pytest.mark.parametrize(
    ("size", "half", "ends"),
    # a band inside one block; a half that is no multiple of the block; 64-row tiles with a band
    # wider than a 512-key chunk; half 0 (each row itself); a sequence ending inside its block;
    # blocks longer than a chunk (one block per chunk: rows with every key of a chunk masked)
    [
        (16, 5, "whole"),
        (32, 45, "whole"),
        (64, 300, "whole"),
        (8, 0, "whole"),
        (32, 40, "inside"),
        (600, 100, "inside"),
    ],
)
@pytest.mark.parametrize("portable", [False, True], ids=["best", "portable"])
def test_native_block_attention_band_matches_float64(size, half, ends, portable):
    """half_window: only pairs with |i - j| <= half count, in blocks the band cuts (masked in
    the kernel) and in those it covers; every query block listing the blocks its rows reach,
    rows past the sequence's end NaN in the inputs and untouched in the output; each row's
    log-sum-exp written to `lse` (rows past the end untouched there too)."""
    heads, blocks, dim = 2, 24, 16
    length = blocks * size if ends == "whole" else blocks * size - size // 3
    generator = torch.Generator().manual_seed(size + half)
    q, k, v = (torch.randn(heads, blocks * size, dim, generator=generator) * 2 for _ in range(3))
    for x in (q, k, v):
        x[:, length:] = float("nan")
    out, lse = torch.full_like(q, 7.0), torch.full((heads, blocks * size), 7.0)
    t = torch.arange(blocks)
    first = (t * size - half).clamp(min=0) // size
    last = (t * size + size - 1 + half).clamp(max=length - 1) // size
    kernel, none = native_block_attention(), torch.empty(0, dtype=torch.int64)
    expected, expected_lse = {}, {}
    for count in (last - first + 1).unique().tolist():
        items = ((last - first + 1) == count).nonzero().flatten()
        listed = first[items, None] + torch.arange(count)
        kernel(q, k, v, out, none, items, listed, size, length, dim**-0.5, portable, half, lse)
        rows, row_lse = band_attention_float64(q, k, v, items, listed, size, length, half)
        expected |= rows
        expected_lse |= row_lse
    assert len(expected) == heads * blocks
    assert_block_attention(out, expected, size, length)
    assert (out[:, length:] == 7.0).all()
    for (h, t), row_lse in expected_lse.items():
        written = lse[h, t * size : min((t + 1) * size, length)].double()
        torch.testing.assert_close(written, row_lse, atol=1e-5, rtol=1e-6)
    assert (lse[:, length:] == 7.0).all()


def test_native_block_attention_rejects_a_negative_band_and_a_bad_lse():
    kernel, none = native_block_attention(), torch.empty(0, dtype=torch.int64)
    q = torch.randn(1, 16, 4)
    args = (q, q, q, torch.empty_like(q), none, torch.tensor([0]), torch.tensor([[0]]), 16, 16)
    with pytest.raises(RuntimeError, match="half_window"):
        kernel(*args, 1.0, False, -2)
    for lse, message in [
        (torch.empty(1, 15), "lse must be"),  # shorter than the sequence
        (torch.empty(1, 32)[:, ::2], "lse must be"),  # rows not contiguous
        (torch.empty(1, 16, dtype=torch.float64), "lse must be"),
        (q.view(1, 64)[:, :16], "memory location"),  # lse inside q
    ]:
        with pytest.raises(RuntimeError, match=message):
            kernel(*args, 1.0, False, 3, lse)


@pytest.mark.parametrize("window", [2, 30, 128, 512, 1998])
def test_sliding_window_is_the_same_through_the_kernel_and_sdpa(monkeypatch, window):
    """The kernel's band (float32 CPU) against the SDPA tiles, on the model's row layout, for a
    whole sequence and one ending mid-block; and band_sequence's other users (dilated, and
    global_window and strided, which merge the band with other keys by its log-sum-exp)
    through both."""
    q, k, v = (
        x.transpose(1, 2).contiguous().transpose(1, 2) for x in make_qkv(1000, torch.float32)
    )
    lengths = torch.tensor([1000, 613])
    native_block_attention()  # built, or the test fails here
    specs = [
        AttentionSpec("sliding_window", window=window),
        AttentionSpec("dilated", window=window, dilation=3),
        AttentionSpec("global_window", window=window, global_tokens=2),
        AttentionSpec("strided", stride=max(2, window // 4)),
    ]
    with_native = [attend(q, k, v, spec, lengths) for spec in specs]
    monkeypatch.setenv(_native.ENV_SWITCH, "0")
    assert _native.block_attention() is None
    for spec, result in zip(specs, with_native, strict=True):
        without = attend(q, k, v, spec, lengths)
        assert_close_on_valid_rows(result, without, lengths, TOLERANCE[torch.float32])


@pytest.mark.parametrize("length", [1, 5, 97, 1000, 4099])
@pytest.mark.parametrize("half", [0, 7, 256, 5000])
@pytest.mark.parametrize("block", [16, 32, 64])
def test_band_block_pairs_counts_what_the_kernel_lists(length, half, block):
    """Per query block, its rows × the rows of the whole key blocks they reach: counted one
    block at a time here, and never fewer than the band's pairs."""
    expected = 0
    for start in range(0, length, block):
        rows = range(start, min(start + block, length))
        reached = {j // block for i in rows for j in (max(0, i - half), min(length - 1, i + half))}
        listed = range(min(reached), max(reached) + 1)
        expected += len(rows) * sum(min(block, length - s * block) for s in listed)
    computed = window_tiles.band_block_pairs(length, half, block)
    assert computed == expected
    assert computed >= window_tiles.allowed_pairs(length, half)


@pytest.mark.parametrize("length", [1, 2, 20, 33, 70])
def test_band_on_sequences_shorter_than_a_few_blocks(monkeypatch, length):
    """Every half from 0 to length - 2 (the widest band that still reaches the kernel) on
    sequences of one or a few 32-row blocks, through the kernel and through SDPA."""
    q, k, v = (torch.randn(3, 80, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    native_block_attention()
    for half in range(max(1, length - 1)):
        through_kernel = torch.zeros(3, 80, 8)
        sliding_window.band_sequence(q, k, v, length, half, through_kernel)
        with monkeypatch.context() as patch:
            patch.setenv(_native.ENV_SWITCH, "0")
            through_sdpa = torch.zeros(3, 80, 8)
            sliding_window.band_sequence(q, k, v, length, half, through_sdpa)
        torch.testing.assert_close(through_kernel, through_sdpa, atol=1e-6, rtol=1e-5)
