"""`block` (block_size=b): query i attends to key j iff i // b == j // b."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_core.dense import dense_attention
from sparse_core.mode import Mode, Param
from sparse_core.patterns import Band
from sparse_core.spec import AttentionSpec

# SDPA batch rows per call: CUDA's flash and memory-efficient kernels put the batch and heads axes
# on grid dimensions capped at 65535, and here the heads axis is H·n/b.
MAX_GRID_ROWS = 65535


def block_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention within non-overlapping blocks of `spec.block_size` tokens; O(n·b) time and memory.

    The sequence is padded up to a whole number of blocks only when n is not a multiple of b,
    then folded so that every block is one SDPA batch row: one SDPA call per MAX_GRID_ROWS blocks
    of all heads (a single call unless H·n/b is larger), no n×n anything. A (B, H·n/b, 1, b) key
    mask is passed only when some key is padding. Returns (B, H, n, D).
    """
    batch, heads, n, head_dim = q.shape
    size = spec.block_size
    if size >= n:  # one block holds the whole sequence
        return dense_attention(q, k, v, spec, lengths)
    blocks = -(-n // size)
    padded = blocks * size
    if padded != n:
        q, k, v = (F.pad(t, (0, 0, 0, padded - n)) for t in (q, k, v))  # (B, H, padded, D)
    has_padding = lengths is not None and bool((lengths < n).any())
    mask = None
    if padded != n or has_padding:
        valid = n if lengths is None else lengths.clamp(max=n)
        mask = _block_key_mask(valid, batch, heads, blocks, size, q.device)
    fold = (batch, heads * blocks, size, head_dim)
    q, k, v = (t.reshape(fold) for t in (q, k, v))  # (B, H·blocks, b, D)
    pieces = [
        F.scaled_dot_product_attention(
            q[:, rows], k[:, rows], v[:, rows], attn_mask=None if mask is None else mask[:, rows]
        )
        for rows in _grid_slices(heads * blocks)
    ]
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)  # (B, H·blocks, b, D)
    # reshape: CUDA's memory-efficient kernel returns (B, H·blocks, b, D) with b outermost
    out = out.reshape(batch, heads, padded, head_dim)
    return out if padded == n else out[:, :, :n].contiguous()


def _grid_slices(rows: int) -> list[slice]:
    """Consecutive slices of at most MAX_GRID_ROWS covering range(rows)."""
    return [slice(start, start + MAX_GRID_ROWS) for start in range(0, rows, MAX_GRID_ROWS)]


def _block_key_mask(
    valid: int | torch.Tensor, batch: int, heads: int, blocks: int, size: int, device: torch.device
) -> torch.Tensor:
    """(B, H·blocks, 1, b) bool, True where the key inside its block is a real, unpadded token."""
    positions = torch.arange(blocks * size, device=device)
    if isinstance(valid, int):
        key_valid = (positions < valid).expand(batch, -1)  # (B, blocks·b)
    else:
        key_valid = positions < valid.to(device)[:, None]  # (B, blocks·b)
    per_block = key_valid.view(batch, 1, blocks, 1, size).expand(batch, heads, blocks, 1, size)
    return per_block.reshape(batch, heads * blocks, 1, size)


def block_pattern(
    spec: AttentionSpec, lengths: torch.Tensor, q: torch.Tensor, k: torch.Tensor
) -> Band:
    """i // b == j // b: a band of reach 0 over blocks of b tokens."""
    return Band(spec.block_size, 0, q.device)


def block_cost(spec: AttentionSpec, length: int) -> int:
    """The kernel pads to whole blocks: ⌈L/b⌉·b² pairs, or L² when one block holds it all."""
    size = spec.block_size
    if size >= length:
        return length * length
    return -(-length // size) * size * size


MODE = Mode(
    name="block",
    params=(Param("block_size", help="tokens per block; blocks start at position 0"),),
    kernel=block_attention,
    cost=block_cost,
    pattern=block_pattern,
    description="non-overlapping blocks of block_size tokens; O(n·block_size)",
)
