"""`Band(block, reach)`: query i sees key j iff |i // block - j // block| <= reach.

block = 1 is the sliding window of half-width `reach`; reach = 0 is non-overlapping blocks;
BigBird's window is block = b, reach = (w - 1) / 2.
"""

from __future__ import annotations

import torch

from sparse_core.pattern import BlockLists, MaskMod, Pattern, block_ranges, normalized


class Band(Pattern):
    def __init__(self, block: int, reach: int, device: torch.device) -> None:
        self.block, self.reach = block, reach
        # 0-d tensors: a compiled FlexAttention reads them as buffers, so that another window
        # reuses the graph instead of recompiling on a changed constant.
        self._block = torch.full((), block, device=device)
        self._reach = torch.full((), reach, device=device)

    def mask_mod(self) -> MaskMod:
        block, reach = self._block, self._reach

        def band(b, h, q_idx, kv_idx):
            return (q_idx // block - kv_idx // block).abs() <= reach

        return band

    def key_blocks(self, size: int, blocks: int) -> BlockLists:
        device = self._block.device
        query_block = torch.arange(blocks, device=device)
        # the query block's rows lie in band blocks [low, high]; its keys in [low - r, high + r]
        low, high = (
            (query_block * size) // self.block,
            (query_block * size + size - 1) // self.block,
        )
        first = ((low - self.reach).clamp(min=0) * self.block) // size
        last = (((high + self.reach + 1) * self.block - 1) // size).clamp(max=blocks - 1)
        span = (-(-size // self.block) + 1 + 2 * self.reach) * self.block  # keys reachable
        width = min(blocks, span // size + 2)
        ids, listed = block_ranges(first, last, width)  # (nq, width)
        # every pair allowed: the farthest band blocks of the two are within reach
        key_low, key_high = (ids * size) // self.block, (ids * size + size - 1) // self.block
        farthest = torch.maximum(high[:, None] - key_low, key_high - low[:, None])
        full = listed & (farthest <= self.reach)
        return normalized(size, torch.where(listed, ids, -1)[None, None], full[None, None])
