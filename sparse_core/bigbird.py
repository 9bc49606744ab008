"""`bigbird` (block_size=b, window_blocks=w odd, default 3, global_blocks=g, default 2,
random_blocks=r, default 3, seed, default 0): with t = i // b, s = j // b and nb = ⌈L / b⌉:
|t - s| <= (w - 1) / 2, or t < g, or s < g, or s in R(t) (see `sparse_core.random_blocks`)."""

from __future__ import annotations

import torch

from sparse_core.engine import attend_pattern
from sparse_core.mode import MAX_RANDOM_BLOCKS, MAX_SEED, Mode, Param
from sparse_core.pattern import Pattern
from sparse_core.patterns import Band, BlockTable, Global
from sparse_core.random_blocks import random_blocks
from sparse_core.spec import AttentionSpec


def bigbird_pattern(
    spec: AttentionSpec, lengths: torch.Tensor, q: torch.Tensor, k: torch.Tensor
) -> Pattern:
    """window ∪ global ∪ random blocks; R(t) depends on each sequence's own nb."""
    # A block_size far beyond the input costs nothing extra: the executor runs blocks of at most
    # executor.MAX_BLOCK and resamples the lists (not min(b, n), which would make the executor's
    # block, and so the result's rounding, depend on the batch's padded length).
    size, reach = spec.block_size, (spec.window_blocks - 1) // 2
    blocks = -(-q.shape[-2] // size)
    table = torch.full(
        (lengths.shape[0], 1, blocks, max(1, spec.random_blocks)), -1, device=q.device
    )
    if spec.random_blocks:
        for b, length in enumerate(lengths.tolist()):
            own = -(-length // size)  # this sequence's nb
            table[b, 0, :own] = random_blocks(
                spec.seed, own, reach, spec.global_blocks, spec.random_blocks, q.device
            )
    # (B, 1, nb, r): the same for every head, so the lists stay one per sequence, not per head
    return (
        Band(size, reach, q.device)
        | Global(size, spec.global_blocks, q.device)
        | BlockTable(size, table)
    )


def bigbird_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D): each query block meets (w + g + r) key blocks; the g
    global query blocks meet all."""
    return attend_pattern(q, k, v, spec, lengths, bigbird_pattern)


def bigbird_cost(spec: AttentionSpec, length: int) -> int:
    size = spec.block_size
    keys = (spec.window_blocks + spec.global_blocks + spec.random_blocks) * size
    global_rows = min(length, spec.global_blocks * size)
    return min(length * length, length * min(length, keys) + global_rows * length)


MODE = Mode(
    name="bigbird",
    params=(
        Param("block_size", help="tokens per block b"),
        Param("window_blocks", default=3, odd=True, help="blocks in the sliding window (odd)"),
        Param(
            "global_blocks", minimum=0, default=2, help="first blocks that see and are seen by all"
        ),
        Param(
            "random_blocks",
            minimum=0,
            maximum=MAX_RANDOM_BLOCKS,
            default=3,
            help="random key blocks per query block, a pure function of (seed, block, nb)",
        ),
        Param("seed", minimum=0, maximum=MAX_SEED, default=0, help="seed of the random blocks"),
    ),
    kernel=bigbird_attention,
    cost=bigbird_cost,
    pattern=bigbird_pattern,
    description="BigBird: window, global and seeded random blocks of block_size tokens",
)
