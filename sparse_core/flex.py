"""Mask patterns on CUDA: FlexAttention with a BlockMask built from the pattern's block lists.

The lists at FlexAttention's 128-token blocks come from `Pattern.key_blocks` (O(listed blocks),
no n² predicate evaluation, no device-to-host sync); partial blocks go to kv_indices, where the
pattern's predicate (`mask_mod`, AND key < length) trims, full ones to full_kv_indices, where it
is skipped. The same code runs on CPU under eager flex_attention in the tests, so that the
BlockMask construction is checked before any GPU runs it.

Building a BlockMask takes a hundred small kernel launches (2 ms on an H200 at 16k tokens, more
than the kernel it feeds), while the layers of one forward pass run the same pattern over the same
rows: inside `reuse_block_masks()` a mask is built once per (spec, lengths tensor, shape) and
reused. Content-based patterns (routing) pass no key and are built every call.

Compiled once with dynamic shapes: batch, n and the pattern's parameters reach the kernel as
tensors or symbolic sizes, so mixed requests reuse a few graphs instead of recompiling per shape
(after torch's recompile limit, dynamo would fall back to the unfused n² implementation).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

import torch

from sparse_core.pattern import BlockLists, MaskMod, Pattern, restrict_to_lengths

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

BLOCK = 128  # FlexAttention's default sparse block size
# Graphs dynamo may keep for flex_attention: one per mask pattern, dtype and batch of 1 or more
# (dynamo specializes size 1). Torch's default limit of 8 is reached by the fourth pattern, after
# which every call runs uncompiled and materializes all n² scores.
GRAPH_LIMIT = 256
# inductor's flex kernel needs head_dim >= 16
MIN_HEAD_DIM = 16


def flex_applies(q: torch.Tensor) -> bool:
    """Whether FlexAttention should run for q (B, H, n, D): on CUDA, head_dim >= 16, and more
    than one 128-row block. A single block has nothing to skip, and keeping one-block shapes
    away spares dynamo the extra graphs it specializes for size-1 block dimensions."""
    return q.device.type == "cuda" and q.shape[-1] >= MIN_HEAD_DIM and q.shape[-2] > BLOCK


def pattern_block_mask(pattern: Pattern, lengths: torch.Tensor, n: int) -> BlockMask:
    """BlockMask of `pattern` with keys j < lengths[b]; lengths: (B,) int64 on the target device.

    kv_indices and full_kv_indices have shape (B, H', n/128, width), H' 1 or the heads: each
    query block lists only the kv blocks the pattern lists for it. Inference only: the
    transposed (q-block) lists the backward pass needs are not built.
    """
    from torch.nn.attention.flex_attention import BlockMask

    blocks = -(-n // BLOCK)
    lists = restrict_to_lengths(pattern.key_blocks(BLOCK, blocks), lengths)
    # a block the sequence ends in is partial whatever the pattern says: keys past it are masked
    ends_inside = (lists.indices + 1) * BLOCK > lengths[:, None, None, None]
    full = lists.full & ~ends_inside
    num_partial, partial_indices = _compact(lists, (lists.indices >= 0) & ~full)
    num_full, full_indices = _compact(lists, full)
    return BlockMask.from_kv_blocks(
        num_partial,
        partial_indices,
        num_full,
        full_indices,
        BLOCK_SIZE=BLOCK,
        mask_mod=_with_lengths(pattern.mask_mod(), lengths),
        seq_lengths=(n, n),
        compute_q_blocks=False,  # inference only; the transpose assumes all n/128 columns
    )


def _compact(lists: BlockLists, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the kept kv blocks moved to the front in ascending order: the (B, H', nq) counts
    and the (B, H', nq, width) indices FlexAttention reads (entries past the count ignored)."""
    order = torch.sort((~keep).to(torch.uint8), dim=-1, stable=True).indices  # kept ones first
    indices = lists.indices.clamp(min=0).gather(-1, order)  # unused slots stay in range
    counts = keep.sum(dim=-1)
    return counts.to(torch.int32), indices.to(torch.int32).contiguous()


def _with_lengths(mask_mod: MaskMod, lengths: torch.Tensor) -> MaskMod:
    def masked(b, h, q_idx, kv_idx):
        return mask_mod(b, h, q_idx, kv_idx) & (kv_idx < lengths[b])

    masked.__name__ = f"{mask_mod.__name__}_within_length"
    return masked


@functools.cache
def compiled_flex_attention(backend: str | Callable = "inductor") -> Callable:
    """flex_attention compiled once per backend, with dynamic batch and sequence sizes, allowed
    GRAPH_LIMIT graphs (torch's recompile limit is raised for these calls only)."""
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention, backend=backend, dynamic=True)

    @functools.wraps(flex_attention)
    def call(*args, **kwargs):
        with torch._dynamo.config.patch(recompile_limit=GRAPH_LIMIT):
            return compiled(*args, **kwargs)

    return call


# the masks kept inside reuse_block_masks(): key -> (the lengths tensor it was built for, mask)
_reused: ContextVar[dict | None] = ContextVar("reused_block_masks", default=None)


@contextlib.contextmanager
def reuse_block_masks() -> Iterator[None]:
    """Inside: flex_pattern calls with the same reuse_key, the same lengths tensor (the same
    object) and the same shape share one BlockMask. For the layers of one forward pass."""
    token = _reused.set({})
    try:
        yield
    finally:
        _reused.reset(token)


def flex_pattern(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Pattern | Callable[[torch.Tensor], Pattern],
    lengths: torch.Tensor | None = None,
    flex: Callable | None = None,
    reuse_key: Hashable | None = None,
) -> torch.Tensor:
    """(B, H, n, D) attention of `pattern` by FlexAttention. Returns (B, H, n, D).

    pattern: the Pattern, or a function of the (B,) int64 lengths on q's device that builds it
    (not called when a kept mask is reused). reuse_key: what determines the pattern besides
    lengths and shape (the spec), or None for a pattern that must be built every call.
    flex: the flex_attention to call; None is `compiled_flex_attention()`. Tests pass the eager
    one (which materializes n² scores: small n only) or one compiled with another backend.
    """
    batch, heads, n, _ = q.shape

    def build() -> BlockMask:
        full = valid_lengths(lengths, batch, n, q.device)
        built = pattern if not callable(pattern) else pattern(full)
        return pattern_block_mask(built, full, n)

    kept = _reused.get()
    if kept is None or reuse_key is None:
        mask = build()
    else:
        key = (reuse_key, id(lengths), batch, heads, n, q.device)
        entry = kept.get(key)
        if entry is None or entry[0] is not lengths:  # an id can be reused once freed
            entry = kept[key] = (lengths, build())
        mask = entry[1]
    flex = compiled_flex_attention() if flex is None else flex
    return flex(q, k, v, block_mask=mask)


def valid_lengths(
    lengths: torch.Tensor | None, batch: int, n: int, device: torch.device
) -> torch.Tensor:
    """(B,) int64 on `device` within [0, n]; None is n for every sequence."""
    if lengths is None:
        return torch.full((batch,), n, dtype=torch.int64, device=device)
    return lengths.to(device, torch.int64).clamp(0, n)  # one dtype: one graph
