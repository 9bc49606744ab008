"""`global_window` (window=w even, global_tokens=g, default 1) — Longformer: |i - j| <= w / 2,
or i < g, or j < g. The first g tokens ([CLS] by default) see and are seen by every token.

On CPU the keys of a row i >= g are two disjoint sets: its band, and the global keys left of the
band, j < min(g, i - w/2). The band runs as the tiled sliding window (overlapping views, one
shared mask), the global keys as one unmasked SDPA call for the rows that see all g of them and
a small masked one for the few that see a prefix; the two are merged by their log-sum-exp
(`sparse_core._lse`). The g global rows are plain attention over every key. On CUDA,
FlexAttention runs the pattern's block lists.
"""

from __future__ import annotations

import torch

from sparse_core._lse import merge_, sdpa_lse
from sparse_core._window_tiles import MASK_BUDGET
from sparse_core.dense import sequence_sdpa
from sparse_core.engine import attend_pattern
from sparse_core.executor import DEFAULT_BLOCK
from sparse_core.mode import Mode, Param
from sparse_core.pattern import Pattern
from sparse_core.patterns import Band, Global
from sparse_core.sliding_window import band_sequence
from sparse_core.spec import AttentionSpec

# Rows merged at a time: the merge's float32 temporaries stay a few MB whatever the length.
MERGE_ROWS = 2048


def global_window_pattern(
    spec: AttentionSpec, lengths: torch.Tensor, q: torch.Tensor, k: torch.Tensor
) -> Pattern:
    """sliding_window ∪ global tokens."""
    return Band(1, spec.window // 2, q.device) | Global(1, spec.global_tokens, q.device)


def global_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D); O(n·(w + g)) plus O(g·n) for the global rows. Padded rows
    are zeros on CPU."""
    return attend_pattern(
        q, k, v, spec, lengths, global_window_pattern,
        sequence=lambda qb, kb, vb, length, out: sequence_global_window(
            qb, kb, vb, length, spec.window // 2, spec.global_tokens, out
        ),
    )  # fmt: skip


def sequence_global_window(
    qb: torch.Tensor,
    kb: torch.Tensor,
    vb: torch.Tensor,
    length: int,
    half: int,
    global_tokens: int,
    out: torch.Tensor,
) -> None:
    """Writes rows [0, length) of `out` (H, n, D) for one sequence's (H, n, D) qb, kb, vb."""
    count = min(global_tokens, length)
    if count == 0:
        band_sequence(qb, kb, vb, length, half, out)
        return
    lse = torch.empty(qb.shape[:2], dtype=torch.float32, device=qb.device)  # (H, n)
    band_sequence(qb, kb, vb, length, half, out, lse)
    keys, values = kb[:, :count], vb[:, :count]  # (H, g, D)
    # rows [count + half, length) see every global key outside their band: no mask
    for start in range(count + half, length, MERGE_ROWS):
        rows = slice(start, min(length, start + MERGE_ROWS))
        part, part_lse = sdpa_lse(qb[None, :, rows], keys[None], values[None])
        merge_(out[:, rows], lse[:, rows], part[0], part_lse[0])
    # rows in [max(count, half + 1), count + half) see the prefix j < i - half
    first, stop = max(count, half + 1), min(length, count + half)
    chunk = max(1, MASK_BUDGET // count)
    for start in range(first, stop, chunk):
        rows = slice(start, min(stop, start + chunk))
        seen = min(count, rows.stop - 1 - half)  # the last row's prefix is the longest
        positions = torch.arange(rows.start, rows.stop, device=qb.device)[:, None]
        mask = torch.arange(seen, device=qb.device)[None, :] < positions - half  # (rows, keys)
        part, part_lse = sdpa_lse(
            qb[None, :, rows], keys[None, :, :seen], values[None, :, :seen], mask=mask
        )
        merge_(out[:, rows], lse[:, rows], part[0], part_lse[0])
    # the global rows see every key
    out[:, :count] = sequence_sdpa(qb[:, :count], kb[:, :length], vb[:, :length])


def global_window_cost(spec: AttentionSpec, length: int) -> int:
    """Listed blocks' pairs: each query block meets its window's blocks and the global ones;
    the blocks holding global rows meet every key."""
    size = DEFAULT_BLOCK
    span = min(length, (spec.window // size + 3) * size)
    global_keys = min(length, -(-spec.global_tokens // size) * size)
    global_rows = min(length, -(-spec.global_tokens // size) * size)
    return min(length * length, length * (span + global_keys) + global_rows * length)


MODE = Mode(
    name="global_window",
    params=(
        Param("window", minimum=2, even=True, help="full span: w/2 keys each side of the query"),
        Param(
            "global_tokens",
            minimum=0,
            default=1,
            help="the first g tokens see and are seen by all ([CLS] by default)",
        ),
    ),
    kernel=global_window_attention,
    cost=global_window_cost,
    pattern=global_window_pattern,
    description="Longformer: a sliding window plus global_tokens that see and are seen by all",
)
