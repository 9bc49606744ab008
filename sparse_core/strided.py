"""`strided` (stride=l) — Sparse Transformer's strided pattern in both directions:
|i - j| < l, or (i - j) mod l == 0."""

from __future__ import annotations

import torch

from sparse_core.engine import attend_pattern
from sparse_core.executor import DEFAULT_BLOCK
from sparse_core.mode import Mode, Param
from sparse_core.pattern import Pattern
from sparse_core.patterns import Strided
from sparse_core.spec import AttentionSpec


def strided_pattern(
    spec: AttentionSpec, lengths: torch.Tensor, q: torch.Tensor, k: torch.Tensor
) -> Pattern:
    return Strided(spec.stride, q.device)


def strided_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D) by the block-sparse executor. The strided columns fall in
    every key block when l <= the block size (then it costs n²), in about 2n/l blocks per query
    block otherwise."""
    return attend_pattern(q, k, v, spec, lengths, strided_pattern)


def strided_cost(spec: AttentionSpec, length: int) -> int:
    """Listed blocks' pairs: the local band, plus the key blocks the strided columns fall in."""
    size, stride = DEFAULT_BLOCK, spec.stride
    local = min(length, 2 * stride + 2 * size)
    columns = length if stride <= size else min(length, 2 * (-(-length // stride) + 1) * size)
    return min(length * length, length * (local + columns))


MODE = Mode(
    name="strided",
    params=(Param("stride", help="local span l (|i - j| < l) and column stride"),),
    kernel=strided_attention,
    cost=strided_cost,
    pattern=strided_pattern,
    description="Sparse Transformer strided: |i - j| < stride, or i - j a multiple of stride",
)
