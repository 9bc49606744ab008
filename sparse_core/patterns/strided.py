"""`Strided(stride)`: Sparse Transformer's strided pattern in both directions,
|i - j| < stride, or (i - j) mod stride == 0."""

from __future__ import annotations

import torch

from sparse_core.pattern import BlockLists, MaskMod, Pattern, normalized
from sparse_core.patterns.band import Band


class Strided(Pattern):
    def __init__(self, stride: int, device: torch.device) -> None:
        self.stride = stride
        self._local = Band(1, stride - 1, device)
        self._stride = torch.full((), stride, device=device)

    def mask_mod(self) -> MaskMod:
        local, stride = self._local.mask_mod(), self._stride

        def strided(b, h, q_idx, kv_idx):
            return local(b, h, q_idx, kv_idx) | ((q_idx - kv_idx) % stride == 0)

        return strided

    def key_blocks(self, size: int, blocks: int) -> BlockLists:
        local = self._local.key_blocks(size, blocks)
        device = self._stride.device
        if size >= self.stride:  # every key block holds every residue: all blocks, partial
            ids = torch.arange(blocks, device=device).expand(blocks, blocks)
            every = torch.full(ids.shape, self.stride == 1, device=device)  # stride 1: all pairs
            return local.union(BlockLists(size, ids[None, None], every[None, None]))
        # Key block s = t - δ holds some j ≡ i (mod stride) for i in block t iff a multiple m of
        # the stride has |δ·size - m| < size: δ in (m/size - 1, m/size + 1), two values at most.
        multiples = (
            torch.arange(
                -(blocks * size // self.stride) - 1, blocks * size // self.stride + 2, device=device
            )
            * self.stride
        )
        low = torch.div(multiples - size, size, rounding_mode="floor") + 1  # smallest δ
        deltas = torch.stack((low, low + 1), dim=-1).flatten()  # may exceed the open range
        deltas = deltas[((deltas * size - multiples.repeat_interleave(2)).abs() < size)]
        query_block = torch.arange(blocks, device=device)[:, None]
        ids = query_block - deltas[None, :]  # (nq, candidates)
        ids = torch.where((ids >= 0) & (ids < blocks), ids, -1)
        columns = normalized(
            size, ids[None, None], torch.zeros_like(ids, dtype=torch.bool)[None, None]
        )
        return local.union(columns)
