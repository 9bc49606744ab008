"""`routing` (block_size=b, blocks=r, default 4) — content-based block routing, the training-free
form of Routing Transformer / clustered attention: per head, q̄_t and k̄_s are the means of the
valid queries of block t and valid keys of block s; query block t attends its own block and the
r other blocks s with the largest q̄_t·k̄_s (ties to the lower s)."""

from __future__ import annotations

import torch

from sparse_core.engine import attend_pattern
from sparse_core.mode import Mode, Param
from sparse_core.pattern import Pattern
from sparse_core.patterns import BlockTable
from sparse_core.spec import AttentionSpec

# Rows summed per step into the block means.
SUM_ROWS = 4096


def routed_blocks(q: torch.Tensor, k: torch.Tensor, size: int, count: int) -> torch.Tensor:
    """One unpadded sequence's (H, L, D) queries and keys -> (H, nb, 1 + r') int64: each query
    block's own block, then its r' = min(r, nb - 1) best other blocks, best first.

    The block means and their scores are float64 whatever the input dtype, so the choice is the
    same for every dtype the scores are exact in, and ties resolve by a stable sort."""
    heads, length, head_dim = q.shape
    blocks = -(-length // size)
    block_of = torch.arange(length, device=q.device) // size  # (L,)
    # (H, nb, D) sums, in float64 a chunk of rows at a time: no float64 copy of the sequence,
    # and no padding to whole blocks (b may be far beyond L)
    sums = [
        torch.zeros(heads, blocks, head_dim, dtype=torch.float64, device=q.device) for _ in "qk"
    ]
    for start in range(0, length, SUM_ROWS):
        rows = slice(start, start + SUM_ROWS)
        for total, t in zip(sums, (q, k), strict=True):
            total.index_add_(1, block_of[rows], t[:, rows].to(torch.float64))
    counts = torch.full((blocks,), size, dtype=torch.float64, device=q.device)
    counts[-1] = length - (blocks - 1) * size  # the last block's valid tokens
    query_means, key_means = (total / counts[:, None] for total in sums)
    scores = query_means @ key_means.transpose(-2, -1)  # (H, nb, nb)
    own = torch.arange(blocks, device=q.device)
    scores[:, own, own] = float("-inf")  # the own block is always in; pick r others
    others = min(count, blocks - 1)
    order = scores.sort(dim=-1, descending=True, stable=True).indices[..., :others]
    return torch.cat((own[None, :, None].expand(heads, blocks, 1), order), dim=-1)


def routing_pattern(
    spec: AttentionSpec, lengths: torch.Tensor, q: torch.Tensor, k: torch.Tensor
) -> Pattern:
    batch, heads, n, _ = q.shape
    # A block_size far beyond the input costs nothing extra: the block means are summed without
    # padding, and the executor runs blocks of at most executor.MAX_BLOCK (see bigbird.py).
    size = spec.block_size
    blocks = -(-n // size)
    width = 1 + min(spec.blocks, blocks - 1)
    table = torch.full((batch, heads, blocks, width), -1, dtype=torch.int64, device=q.device)
    for b, length in enumerate(lengths.tolist()):
        if length:
            chosen = routed_blocks(q[b, :, :length], k[b, :, :length], size, spec.blocks)
            table[b, :, : chosen.shape[1], : chosen.shape[2]] = chosen
    return BlockTable(size, table)


def routing_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D): each query block meets 1 + r key blocks, chosen per head."""
    return attend_pattern(q, k, v, spec, lengths, routing_pattern)


def routing_cost(spec: AttentionSpec, length: int) -> int:
    keys = (spec.blocks + 1) * spec.block_size
    return min(length * length, length * keys)


MODE = Mode(
    name="routing",
    params=(
        Param("block_size", help="tokens per block b"),
        Param(
            "blocks",
            minimum=0,
            default=4,
            help="other blocks each query block attends, by mean score",
        ),
    ),
    kernel=routing_attention,
    cost=routing_cost,
    pattern=routing_pattern,
    description="content-based routing: each query block attends its own and its best blocks",
)
