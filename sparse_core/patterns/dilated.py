"""`Dilated(half, dilation)`: |i - j| <= half·dilation and (i - j) mod dilation == 0."""

from __future__ import annotations

import torch

from sparse_core.pattern import BlockLists, MaskMod, Pattern
from sparse_core.patterns.band import Band


class Dilated(Pattern):
    def __init__(self, half: int, dilation: int, device: torch.device) -> None:
        self.half, self.dilation = half, dilation
        self._span = Band(1, half * dilation, device)  # the keys' reach, every d-th one allowed
        self._dilation = torch.full((), dilation, device=device)

    def mask_mod(self) -> MaskMod:
        span, dilation = self._span.mask_mod(), self._dilation

        def dilated(b, h, q_idx, kv_idx):
            return span(b, h, q_idx, kv_idx) & ((q_idx - kv_idx) % dilation == 0)

        return dilated

    def key_blocks(self, size: int, blocks: int) -> BlockLists:
        lists = self._span.key_blocks(size, blocks)
        if self.dilation == 1:
            return lists
        return BlockLists(size, lists.indices, torch.zeros_like(lists.full))  # every d-th pair
