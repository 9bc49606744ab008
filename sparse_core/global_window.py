"""`global_window` (window=w even, global_tokens=g, default 1) — Longformer: |i - j| <= w / 2,
or i < g, or j < g. The first g tokens ([CLS] by default) see and are seen by every token."""

from __future__ import annotations

import torch

from sparse_core.engine import attend_pattern
from sparse_core.executor import DEFAULT_BLOCK
from sparse_core.mode import Mode, Param
from sparse_core.pattern import Pattern
from sparse_core.patterns import Band, Global
from sparse_core.spec import AttentionSpec


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
    """(B, H, n, D) -> (B, H, n, D); O(n·(w + g)) plus O(g·n) for the global rows."""
    return attend_pattern(q, k, v, spec, lengths, global_window_pattern)


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
