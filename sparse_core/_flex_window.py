"""Sliding-window attention on CUDA: FlexAttention with a BlockMask built from block indices.

Query block t (rows [128t, 128t + 128)) can only meet kv blocks t - r .. t + r, r = ⌈h/128⌉ for
half-width h: at most 1 + 2⌈h/128⌉ kv blocks per query block, so the kernel visits O(n·w) pairs.
Kv blocks wholly inside the window and the valid keys are listed as "full" (no mask_mod there);
the others as partial, where `mask_mod` trims. The mask is built from block indices in
O(n/128 · w/128) with no device-to-host sync, never by evaluating a predicate over n² pairs.

Compiled once with dynamic shapes: batch, n and the window reach the kernel as tensors or
symbolic sizes, so mixed requests reuse a few graphs instead of recompiling per shape (after
torch's recompile limit, dynamo would fall back to the unfused n² implementation).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

BLOCK = 128  # FlexAttention's default sparse block size
# inductor's flex kernel needs head_dim >= 16
MIN_HEAD_DIM = 16


def flex_applies(q: torch.Tensor) -> bool:
    """Whether `flex_sliding_window` should run for q (B, H, n, D): on CUDA, head_dim >= 16, and
    more than one 128-row block. A single block has nothing to skip, and keeping one-block shapes
    away spares dynamo the extra graphs it specializes for size-1 block dimensions."""
    return q.device.type == "cuda" and q.shape[-1] >= MIN_HEAD_DIM and q.shape[-2] > BLOCK


def window_width(half: int, n: int) -> int:
    """Kv blocks listed per query block: 1 + 2⌈half/128⌉, capped at the n/128 blocks there are."""
    blocks = -(-n // BLOCK)
    return min(blocks, 1 + 2 * -(-half // BLOCK))


def window_block_mask(half: int, lengths: torch.Tensor, n: int) -> BlockMask:
    """BlockMask for |i - j| <= half and key j < lengths[b]; lengths: (B,) on the target device.

    kv_indices (and full_kv_indices) have shape (B, 1, n/128, window_width(half, n)): each query
    block lists only the kv blocks its window can reach, partial ones first in kv_indices and
    wholly-allowed ones in full_kv_indices. Inference only: the transposed (q-block) lists the
    backward pass needs are not built.
    """
    from torch.nn.attention.flex_attention import BlockMask

    blocks = -(-n // BLOCK)
    reach = -(-half // BLOCK)  # kv blocks the window reaches on each side of its query block
    width = window_width(half, n)
    device = lengths.device
    query_block = torch.arange(blocks, device=device)[:, None]  # (nb, 1)
    first = (query_block - reach).clamp(min=0)  # (nb, 1)
    kv_block = first + torch.arange(width, device=device)  # (nb, width) candidate kv blocks
    length = lengths.clamp(min=1)[:, None, None]  # (B, 1, 1)
    listed = (kv_block <= query_block + reach) & (kv_block * BLOCK < length)  # (B, nb, width)
    # every (i, j) pair of the two blocks is within the window: |i - j| <= |t - s|·128 + 127
    near = (query_block - kv_block).abs() * BLOCK + BLOCK - 1 <= half  # (nb, width)
    full = listed & near & ((kv_block + 1) * BLOCK <= length)  # (B, nb, width)
    kv_block = kv_block.clamp(max=blocks - 1).expand(full.shape)  # unused slots stay in range
    num_partial, partial_indices = _compact(kv_block, listed & ~full)
    num_full, full_indices = _compact(kv_block, full)
    return BlockMask.from_kv_blocks(
        num_partial,
        partial_indices,
        num_full,
        full_indices,
        BLOCK_SIZE=BLOCK,
        mask_mod=_window_mask_mod(torch.full((), half, device=device), lengths),  # no H2D copy
        seq_lengths=(n, n),
        compute_q_blocks=False,  # inference only; the transpose assumes all n/128 columns
    )


def _compact(kv_block: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the kept kv blocks moved to the front in ascending order: the (B, 1, nb) counts
    and the (B, 1, nb, width) indices FlexAttention reads (entries past the count are ignored)."""
    order = torch.sort((~keep).to(torch.uint8), dim=-1, stable=True).indices  # kept ones first
    indices = kv_block.gather(-1, order)  # (B, nb, width)
    counts = keep.sum(dim=-1)  # (B, nb)
    return counts[:, None].to(torch.int32), indices[:, None].to(torch.int32).contiguous()


def _window_mask_mod(half: torch.Tensor, lengths: torch.Tensor) -> Callable:
    """Predicate (b, h, q_idx, kv_idx) -> bool; `half` is a 0-d tensor so that a compiled kernel
    reads it as a buffer instead of baking it into a guard (one graph for every window)."""

    def sliding_window(b, h, q_idx, kv_idx):
        return ((q_idx - kv_idx).abs() <= half) & (kv_idx < lengths[b])

    return sliding_window


@functools.cache
def compiled_flex_attention(backend: str | Callable = "inductor") -> Callable:
    """flex_attention compiled once per backend, with dynamic batch and sequence sizes."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, backend=backend, dynamic=True)


def flex_sliding_window(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    half: int,
    lengths: torch.Tensor | None = None,
    flex: Callable | None = None,
) -> torch.Tensor:
    """(B, H, n, D) banded attention by FlexAttention. Returns (B, H, n, D).

    flex: the flex_attention to call; None is `compiled_flex_attention()`. Tests pass the eager
    one (which materializes n² scores: small n only) or one compiled with another backend.
    """
    batch, _, n, _ = q.shape
    if lengths is None:
        lengths = torch.full((batch,), n, dtype=torch.int64, device=q.device)
    lengths = lengths.to(q.device, torch.int64).clamp(max=n)  # one dtype: one graph
    mask = window_block_mask(half, lengths, n)
    flex = compiled_flex_attention() if flex is None else flex
    return flex(q, k, v, block_mask=mask)
