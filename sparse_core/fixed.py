"""`fixed` (block_size=l, summary=c, 1 <= c <= l, default 1) — Sparse Transformer's fixed pattern
in both directions: i // l == j // l, or j mod l >= l - c (the last c positions of every block
summarise it for everyone).

On CPU the keys of row i are two disjoint sets: the non-summary positions of its own block
(j // l == i // l, j mod l < l - c), and every summary position of the sequence. The first is
block attention on strided views (each block's queries against its first l - c keys, no copy,
no mask), the second one unmasked SDPA call of all rows against the gathered L·c/l summary
keys; the two are merged by their log-sum-exp (`sparse_core._lse`). So the work is the allowed
pairs, L·(l - c + L·c/l), instead of every key block a summary falls in. On CUDA, FlexAttention
runs the pattern's block lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sparse_core._lse import merge_, sdpa_lse
from sparse_core._views import block_view
from sparse_core.dense import sequence_sdpa
from sparse_core.engine import attend_pattern
from sparse_core.executor import DEFAULT_BLOCK
from sparse_core.mode import Mode, Param
from sparse_core.pattern import Pattern
from sparse_core.patterns import Band, Summary
from sparse_core.spec import AttentionSpec

# Query rows per SDPA call (with the heads): bounds each call's output and the merge's temporaries.
CALL_ROWS = 1 << 15


def fixed_pattern(
    spec: AttentionSpec, lengths: torch.Tensor, q: torch.Tensor, k: torch.Tensor
) -> Pattern:
    """blocks ∪ summary columns."""
    return Band(spec.block_size, 0, q.device) | Summary(spec.block_size, spec.summary, q.device)


def fixed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D); every query meets its block and the L·c/l summary keys,
    so the cost is O(L·(l + L·c/l)). Padded rows are zeros on CPU."""
    return attend_pattern(
        q, k, v, spec, lengths, fixed_pattern,
        sequence=lambda qb, kb, vb, length, out: sequence_fixed(
            qb, kb, vb, length, spec.block_size, spec.summary, out
        ),
    )  # fmt: skip


def sequence_fixed(
    qb: torch.Tensor,
    kb: torch.Tensor,
    vb: torch.Tensor,
    length: int,
    block: int,
    summary: int,
    out: torch.Tensor,
) -> None:
    """Writes rows [0, length) of `out` (H, n, D) for one sequence's (H, n, D) qb, kb, vb."""
    heads = qb.shape[0]
    own = block - summary  # non-summary keys at the start of every block
    if own == 0:  # every position summarises: dense
        out[:, :length] = sequence_sdpa(qb[:, :length], kb[:, :length], vb[:, :length])
        return
    lse = torch.empty(qb.shape[:2], dtype=torch.float32, device=qb.device)  # (H, n)
    whole = length // block  # blocks of `block` rows inside the sequence
    per_call = max(1, CALL_ROWS // (heads * block))
    for first in range(0, whole, per_call):
        count = min(per_call, whole - first)
        part, part_lse = sdpa_lse(
            block_view(qb, first, count, block, 0, block),
            block_view(kb, first, count, block, 0, own),
            block_view(vb, first, count, block, 0, own),
        )  # (H, count, l, D), (H, count, l)
        block_view(out, first, count, block, 0, block).copy_(part)
        block_view(lse, first, count, block, 0, block).copy_(part_lse)
    start = whole * block
    if start < length:  # the last, shorter block
        rows, keys = slice(start, length), slice(start, min(length, start + own))
        part, part_lse = sdpa_lse(qb[None, :, rows], kb[None, :, keys], vb[None, :, keys])
        out[:, rows], lse[:, rows] = part[0], part_lse[0]
    # every summary position: the last c of each whole block, and of the last block those < L
    keys, values = (
        torch.cat(
            (
                block_view(t, 0, whole, block, own, summary).flatten(1, 2),
                t[:, start + own : length],
            ),
            dim=1,
        )
        for t in (kb, vb)
    )  # (H, S, D)
    if keys.shape[1] == 0:
        return
    chunk = max(1, CALL_ROWS // heads)
    for row in range(0, length, chunk):
        rows = slice(row, min(length, row + chunk))
        part, part_lse = sdpa_lse(qb[None, :, rows], keys[None], values[None])
        merge_(out[:, rows], lse[:, rows], part[0], part_lse[0])


def fixed_cost(spec: AttentionSpec, length: int) -> int:
    """Listed blocks' pairs: the own block's, plus every key block holding a summary."""
    size, block = DEFAULT_BLOCK, spec.block_size
    own = min(length, block + 2 * size)
    summary_blocks = (
        length if block <= size else (-(-length // block) + 1) * (spec.summary + 2 * size)
    )
    return min(length * length, length * (own + min(length, summary_blocks)))


def check_summary(params: Mapping[str, Any]) -> None:
    if params["summary"] > params["block_size"]:
        raise ValueError(
            f"'summary' must be at most 'block_size' ({params['block_size']}); "
            f"got {params['summary']}"
        )


MODE = Mode(
    name="fixed",
    params=(
        Param("block_size", help="tokens per block l; blocks start at position 0"),
        Param(
            "summary", default=1, help="the last c positions of every block, seen by all; c <= l"
        ),
    ),
    kernel=fixed_attention,
    cost=fixed_cost,
    pattern=fixed_pattern,
    cross_check=check_summary,
    description="Sparse Transformer fixed: own block, plus every block's last summary tokens",
)
