"""`sliding_window` (window=w, even): query i attends to key j iff |i - j| <= w / 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_core import _native
from sparse_core._lse import sdpa_lse
from sparse_core._sequences import each_sequence
from sparse_core._window_tiles import plan, tile_size
from sparse_core.dense import sequence_sdpa
from sparse_core.flex import flex_applies, flex_pattern
from sparse_core.mode import Mode, Param
from sparse_core.patterns import Band
from sparse_core.spec import AttentionSpec


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Banded attention, |i - j| <= window / 2, in O(n·w) time and memory. Returns (B, H, n, D).

    CUDA, head_dim >= 16 and n > 128: compiled FlexAttention with a BlockMask built from block
    indices (see `sparse_core.flex`). Elsewhere, including heads smaller
    than the compiled flex kernel supports: query tiles against their key neighbourhood (see
    `sparse_core._window_tiles`). Rows of padded queries come out as zeros on the tiled path.
    """
    if flex_applies(q):
        band = Band(1, spec.window // 2, q.device)
        return flex_pattern(q, k, v, band, lengths, reuse_key=spec)
    return tiled_sliding_window(q, k, v, spec.window, lengths)


def tiled_sliding_window(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """The CPU path, no torch.compile: float32 with the C++ kernels built, the block-attention
    kernel's band over query blocks of `tile_size(window)` rows, reading q, k, v where they lie
    (0.88× the SDPA path's time at 16k tokens: benchmarks/results/revision_cpu_band_*.md);
    otherwise SDPA on query tiles and overlapping key-window views.

    Extra memory on the SDPA path is the output plus one SDPA call's: ≤ CHUNK_ROWS rows of
    output, and for edge pieces a mask of ≤ MASK_BUDGET elements (see
    `sparse_core._window_tiles`); the kernel's is its per-thread scratch.
    """
    return each_sequence(
        q, lengths, lambda b, length, out: band_sequence(q[b], k[b], v[b], length, window // 2, out)
    )


def band_sequence(
    qb: torch.Tensor,
    kb: torch.Tensor,
    vb: torch.Tensor,
    length: int,
    half: int,
    out: torch.Tensor,
    lse: torch.Tensor | None = None,
) -> None:
    """|i - j| <= half over the first `length` rows of one sequence's (H, n, D) qb, kb, vb.

    Writes rows [0, length) of `out` (H, n, D), and of `lse` (H, n) float32, each row's
    log-sum-exp of its scaled scores, when given (for merging with other key sets, see
    `sparse_core._lse`).
    """
    tile = tile_size(2 * half)
    half = min(half, length - 1)
    run = _attend if lse is None else _attend_lse
    if half == length - 1:  # the window covers every valid key: plain attention
        run(qb[:, :length], kb[:, :length], vb[:, :length], None, out, lse, slice(0, length))
        return
    kernel = _native.block_attention_for(qb, kb, vb, out)
    if kernel is not None:
        _run_band_kernel(kernel, qb, kb, vb, length, half, tile, out, lse)
        return
    tiles = plan(length, half, tile)
    band = _band_bias(tile, half, qb.dtype, qb.device)  # (T, T + 2h)
    for first, stop in tiles.interior:
        queries, keys, values = _interior_views(qb, kb, vb, first, stop - first, tile, half)
        run(queries, keys, values, band, out, lse, slice(first * tile, stop * tile))
    for first, stop in tiles.pieces:
        start, end = tiles.key_range(first, stop)
        mask = _piece_bias(first, stop, start, end, half, qb.dtype, qb.device)
        run(
            qb[:, first:stop],
            kb[:, start:end],
            vb[:, start:end],
            mask,
            out,
            lse,
            slice(first, stop),
        )


def _run_band_kernel(
    kernel,
    qb: torch.Tensor,
    kb: torch.Tensor,
    vb: torch.Tensor,
    length: int,
    half: int,
    size: int,
    out: torch.Tensor,
    lse: torch.Tensor | None,
) -> None:
    """|i - j| <= half through the kernel's band: query blocks of `size` rows, each listing the
    key blocks its rows reach (those the band cuts are masked inside the kernel), one call per
    list length (shorter at the sequence's ends). Reads the rows where they lie, in the model's
    layout. Scores computed: `_window_tiles.band_block_pairs`."""
    blocks = torch.arange(-(-length // size))
    first = ((blocks * size - half).clamp(min=0)) // size
    last = ((blocks * size + size - 1 + half).clamp(max=length - 1)) // size
    counts = last - first + 1
    no_heads = torch.empty(0, dtype=torch.long)
    for count in counts.unique().tolist():
        items = (counts == count).nonzero().flatten()
        listed = first[items, None] + torch.arange(count)
        kernel(
            qb, kb, vb, out, no_heads, items, listed, size, length, qb.shape[-1] ** -0.5,
            False, half, lse,
        )  # fmt: skip


def _attend(queries, keys, values, bias, out, lse, rows: slice) -> None:
    """One SDPA call, (H, [count,] T, D) or (H, rows, D) inputs, into out[:, rows]."""
    if queries.dim() == 3:  # a batch of one: see `sequence_sdpa`
        out[:, rows] = sequence_sdpa(queries, keys, values, bias)
        return
    result = F.scaled_dot_product_attention(queries, keys, values, attn_mask=bias)
    out[:, rows] = result.flatten(1, 2)  # (H, count·T, D)


def _attend_lse(queries, keys, values, bias, out, lse, rows: slice) -> None:
    """`_attend` that also writes each row's log-sum-exp into lse[:, rows]."""
    if queries.dim() == 3:
        result, result_lse = sdpa_lse(queries[None], keys[None], values[None], bias=bias)
        out[:, rows], lse[:, rows] = result[0], result_lse[0]
        return
    result, result_lse = sdpa_lse(queries, keys, values, bias=bias)
    out[:, rows], lse[:, rows] = result.flatten(1, 2), result_lse.flatten(1, 2)


def _interior_views(
    qb: torch.Tensor,
    kb: torch.Tensor,
    vb: torch.Tensor,
    first: int,
    count: int,
    tile: int,
    half: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`count` interior tiles from tile `first`; qb, kb, vb: (H, n, D) of one sequence.

    Returns queries (H, count, T, D) and keys, values (H, count, T + 2h, D). The key windows
    overlap: as_strided views, nothing is copied.
    """
    heads, _, head_dim = qb.shape
    span = tile + 2 * half
    row = first * tile
    queries = qb[:, row:].as_strided(
        (heads, count, tile, head_dim),
        (qb.stride(0), tile * qb.stride(1), qb.stride(1), qb.stride(2)),
    )  # (H, count, T, D)
    keys, values = (
        t[:, row - half :].as_strided(
            (heads, count, span, head_dim),
            (t.stride(0), tile * t.stride(1), t.stride(1), t.stride(2)),
        )  # (H, count, T + 2h, D), tile c starts T rows after tile c - 1
        for t in (kb, vb)
    )
    return queries, keys, values


def _band_bias(tile: int, half: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(T, T + 2h) additive mask shared by all interior tiles: 0 inside the window, else -inf.

    Column c of a tile starting at row i0 is key i0 - h + c, so row r keeps c - h - r in [-h, h].
    """
    return _piece_bias(0, tile, -half, tile + half, half, dtype, device)


def _piece_bias(
    first_row: int,
    stop_row: int,
    first_key: int,
    stop_key: int,
    half: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """(rows, keys) additive mask for queries [first_row, stop_row) and keys [first_key, stop_key):
    0 where |i - j| <= half, -inf elsewhere."""
    rows = torch.arange(first_row, stop_row, device=device)[:, None]
    keys = torch.arange(first_key, stop_key, device=device)[None, :]
    outside = (rows - keys).abs() > half  # (rows, keys)
    return torch.zeros(outside.shape, dtype=dtype, device=device).masked_fill_(
        outside, float("-inf")
    )


def sliding_window_pattern(
    spec: AttentionSpec, lengths: torch.Tensor, q: torch.Tensor, k: torch.Tensor
) -> Band:
    """|i - j| <= w / 2: a band of reach w / 2 over single tokens."""
    return Band(1, spec.window // 2, q.device)


def sliding_window_cost(spec: AttentionSpec, length: int) -> int:
    """The pairs the tiled kernel scores (its interior tiles compute a few masked ones)."""
    half = min(spec.window // 2, length - 1)
    if half == length - 1:
        return length * length
    return plan(length, half, tile_size(spec.window)).computed_pairs()


MODE = Mode(
    name="sliding_window",
    params=(
        Param("window", minimum=2, even=True, help="full span: w/2 keys each side of the query"),
    ),
    kernel=sliding_window_attention,
    cost=sliding_window_cost,
    pattern=sliding_window_pattern,
    description="each query sees the window/2 keys on each side; O(n·window)",
)
