"""A mask pattern is data: a predicate over (query, key) positions and, per query block, the key
blocks it can reach. The oracle's mask, the CPU block-sparse executor and the CUDA FlexAttention
BlockMask are all derived from one `Pattern`; patterns compose by union (`a | b`).

The predicate follows FlexAttention's `mask_mod` convention, `(b, h, q_idx, kv_idx) -> bool`,
written with broadcasting tensor ops so that it works both on whole index grids (the oracle) and
under FlexAttention's vmap. It describes valid tokens only: keys at or past a sequence's length
are masked by the engine, not by patterns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# (b, h, q_idx, kv_idx) -> bool, all arguments broadcastable int tensors
MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

EMPTY = -1  # an unused slot of a key-block list


@dataclass(frozen=True)
class BlockLists:
    """For each query block of `size` rows, the key blocks of `size` keys it can reach.

    indices: (B', H', nq, width) int64 key-block ids, listed ones first in ascending order, EMPTY
    after them; B' is 1 (the same for every sequence) or the batch, H' is 1 or the heads.
    full: (B', H', nq, width) bool, True where the predicate allows every pair of the two blocks
    (positions past a sequence's end are the engine's business, not the pattern's).
    """

    size: int
    indices: torch.Tensor
    full: torch.Tensor

    def union(self, other: BlockLists) -> BlockLists:
        """Blocks listed by either; full where either says full."""
        if other.size != self.size:
            raise ValueError(f"block sizes differ: {self.size} and {other.size}")
        batch = max(self.indices.shape[0], other.indices.shape[0])
        heads = max(self.indices.shape[1], other.indices.shape[1])
        parts = [
            (
                t.indices.expand(batch, heads, *t.indices.shape[2:]),
                t.full.expand(batch, heads, *t.full.shape[2:]),
            )
            for t in (self, other)
        ]
        indices = torch.cat([p[0] for p in parts], dim=-1)  # (B', H', nq, w1 + w2)
        full = torch.cat([p[1] for p in parts], dim=-1)
        return normalized(self.size, indices, full)

    def counts(self) -> torch.Tensor:
        """(B', H', nq) number of key blocks listed per query block."""
        return (self.indices >= 0).sum(dim=-1)


def normalized(size: int, indices: torch.Tensor, full: torch.Tensor) -> BlockLists:
    """Lists with duplicates merged (full wins), listed blocks first in ascending order.

    indices may hold EMPTY anywhere and the same block more than once. On CPU the width is cut
    to the longest row; on other devices it is kept, so that no device-to-host sync happens.
    """
    # sort key: 2·block + (0 if full else 1), EMPTY last: duplicates become neighbours, full first
    spare = torch.iinfo(torch.int64).max
    key = torch.where(indices >= 0, indices * 2 + (~full).long(), spare)
    key = key.sort(dim=-1).values
    repeat = torch.zeros_like(key, dtype=torch.bool)
    repeat[..., 1:] = (key[..., 1:] // 2 == key[..., :-1] // 2) & (key[..., 1:] != spare)
    key = key.masked_fill(repeat, spare).sort(dim=-1).values
    if key.device.type == "cpu" and key.numel():
        width = int((key != spare).sum(dim=-1).max())
        key = key[..., :width]
    listed = key != spare
    return BlockLists(
        size,
        torch.where(listed, key // 2, EMPTY),
        listed & (key % 2 == 0),
    )


def block_ranges(
    first: torch.Tensor, last: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(nq,) first and last key block per query block -> (nq, width) ids and a listed flag."""
    ids = first[:, None] + torch.arange(width, device=first.device)  # (nq, width)
    return ids, ids <= last[:, None]


class Pattern:
    """A mask pattern over one batch. Subclasses give `mask_mod` and `key_blocks`.

    block_size: the block size the pattern is defined on (bigbird, routing), which the CPU
    executor then uses as its block size; None when any block size fits as well.
    """

    block_size: int | None = None

    def mask_mod(self) -> MaskMod:
        """The predicate (b, h, q_idx, kv_idx) -> bool over valid tokens."""
        raise NotImplementedError

    def key_blocks(self, size: int, blocks: int) -> BlockLists:
        """Per query block of `size` rows (blocks of them), the key blocks of `size` it reaches:
        every block holding an allowed pair is listed, `full` only where every pair is allowed."""
        raise NotImplementedError

    def __or__(self, other: Pattern) -> Pattern:
        return Union((self, other))


class Union(Pattern):
    """Allowed where any part allows: the predicates OR-ed, the block lists merged."""

    def __init__(self, parts: Sequence[Pattern]) -> None:
        flat: list[Pattern] = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, Union) else [part])
        self.parts = tuple(flat)
        sizes = {p.block_size for p in self.parts if p.block_size is not None}
        if len(sizes) > 1:
            raise ValueError(f"patterns defined on different block sizes: {sorted(sizes)}")
        self.block_size = sizes.pop() if sizes else None

    def mask_mod(self) -> MaskMod:
        mods = [part.mask_mod() for part in self.parts]

        def union(b, h, q_idx, kv_idx):
            return functools.reduce(torch.logical_or, (mod(b, h, q_idx, kv_idx) for mod in mods))

        union.__name__ = "_or_".join(mod.__name__ for mod in mods)
        return union

    def key_blocks(self, size: int, blocks: int) -> BlockLists:
        lists = [part.key_blocks(size, blocks) for part in self.parts]
        return functools.reduce(BlockLists.union, lists)


def restrict_to_lengths(lists: BlockLists, lengths: torch.Tensor) -> BlockLists:
    """(B, H', nq, width) lists without key blocks that start at or past each sequence's length,
    and with nothing listed for query blocks wholly past it. lengths: (B,) int64."""
    size = lists.size
    length = lengths[:, None, None, None]  # (B, 1, 1, 1)
    query_start = torch.arange(lists.indices.shape[-2], device=lengths.device)[:, None] * size
    keep = (lists.indices >= 0) & (lists.indices * size < length) & (query_start < length)
    batch = lengths.shape[0]
    heads = lists.indices.shape[1]
    indices = torch.where(keep, lists.indices, EMPTY).expand(batch, heads, *lists.indices.shape[2:])
    full = (lists.full & keep).expand(batch, heads, *lists.full.shape[2:])
    # dropped blocks sit after the kept ones' positions only if they were last: re-compact
    return normalized(size, indices, full)
