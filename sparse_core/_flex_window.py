"""Sliding-window attention on CUDA: FlexAttention with a BlockMask built from block indices.

Only the kv blocks that can meet a query block's window are listed (at most 2 + 2h/128 per
query block), so the kernel visits O(n·w) pairs; `mask_mod` trims inside those blocks. The mask
is built from block indices in O(n/128 · w/128), never by evaluating a predicate over n² pairs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

BLOCK = 128  # FlexAttention's default sparse block size


def window_block_mask(half: int, lengths: torch.Tensor, n: int) -> BlockMask:
    """BlockMask for |i - j| <= half and key j < lengths[b]; lengths: (B,) on the target device."""
    from torch.nn.attention.flex_attention import BlockMask

    blocks = -(-n // BLOCK)
    device = lengths.device
    query_block = torch.arange(blocks, device=device)
    first = (query_block * BLOCK - half).clamp(min=0) // BLOCK  # (nb,)
    last_valid = ((lengths.clamp(min=1) - 1) // BLOCK)[:, None]  # (B, 1)
    last = torch.minimum(((query_block + 1) * BLOCK - 1 + half) // BLOCK, last_valid)  # (B, nb)
    count = (last - first + 1).clamp(min=0)  # (B, nb) kv blocks per query block
    width = max(1, int(count.max()))
    indices = (first[:, None] + torch.arange(width, device=device)).clamp(max=blocks - 1)
    indices = indices.expand(lengths.shape[0], blocks, width)  # (B, nb, width)
    return BlockMask.from_kv_blocks(
        count[:, None].to(torch.int32),  # (B, 1, nb)
        indices[:, None].to(torch.int32).contiguous(),  # (B, 1, nb, width)
        BLOCK_SIZE=BLOCK,
        mask_mod=_window_mask_mod(half, lengths),
        seq_lengths=(n, n),
    )


def _window_mask_mod(half: int, lengths: torch.Tensor) -> Callable:
    def sliding_window(b, h, q_idx, kv_idx):
        return ((q_idx - kv_idx).abs() <= half) & (kv_idx < lengths[b])

    sliding_window.__name__ = f"sliding_window_{half}"
    return sliding_window


@functools.cache
def _compiled_flex_attention() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def flex_sliding_window(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    half: int,
    lengths: torch.Tensor | None = None,
    compiled: bool = True,
) -> torch.Tensor:
    """(B, H, n, D) banded attention by FlexAttention; compiled=False runs it eagerly (tests)."""
    batch, _, n, _ = q.shape
    if lengths is None:
        lengths = torch.full((batch,), n, dtype=torch.int64, device=q.device)
    mask = window_block_mask(half, lengths.to(q.device).clamp(max=n), n)
    if compiled:
        return _compiled_flex_attention()(q, k, v, block_mask=mask)
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=mask)
