"""`fixed` (block_size=l, summary=c, 1 <= c <= l, default 1) — Sparse Transformer's fixed pattern
in both directions: i // l == j // l, or j mod l >= l - c (the last c positions of every block
summarise it for everyone)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sparse_core.engine import attend_pattern
from sparse_core.executor import DEFAULT_BLOCK
from sparse_core.mode import Mode, Param
from sparse_core.pattern import Pattern
from sparse_core.patterns import Band, Summary
from sparse_core.spec import AttentionSpec


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
    """(B, H, n, D) -> (B, H, n, D) by the block-sparse executor; every query meets its block
    and the n·c/l summary keys, so the cost is O(n·(l + n·c/l))."""
    return attend_pattern(q, k, v, spec, lengths, fixed_pattern)


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
