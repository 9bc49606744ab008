"""`Summary(block, count)`: every query sees the last `count` positions of every block of
`block` tokens (Sparse Transformer's fixed pattern summarises each block there)."""

from __future__ import annotations

import torch

from sparse_core.pattern import BlockLists, MaskMod, Pattern, normalized


class Summary(Pattern):
    def __init__(self, block: int, count: int, device: torch.device) -> None:
        self.block, self.count = block, count
        self._block = torch.full((), block, device=device)
        self._first = torch.full((), block - count, device=device)  # first summary offset

    def mask_mod(self) -> MaskMod:
        block, first = self._block, self._first

        def summary(b, h, q_idx, kv_idx):
            return kv_idx % block >= first

        return summary

    def _summaries_before(self, position: torch.Tensor) -> torch.Tensor:
        """Summary positions in [0, position)."""
        whole, rest = position // self.block, position % self.block
        return whole * self.count + (rest - (self.block - self.count)).clamp(min=0)

    def key_blocks(self, size: int, blocks: int) -> BlockLists:
        """The same list for every query block: the key blocks holding a summary position."""
        ids = torch.arange(blocks, device=self._block.device)
        held = self._summaries_before(ids * size + size) - self._summaries_before(ids * size)
        listed, full = held > 0, held == size
        indices = torch.where(listed, ids, -1).expand(blocks, blocks)  # (nq, nk)
        return normalized(size, indices[None, None], full.expand(blocks, blocks)[None, None])
