"""`Global(block, count)`: the first `count` blocks of `block` tokens see and are seen by all.

block = 1 is Longformer's global tokens ([CLS] by default); BigBird's global blocks use b.
"""

from __future__ import annotations

import torch

from sparse_core.pattern import BlockLists, MaskMod, Pattern, normalized


class Global(Pattern):
    def __init__(self, block: int, count: int, device: torch.device) -> None:
        self.tokens = block * count  # positions [0, tokens) are global
        self._tokens = torch.full((), self.tokens, device=device)

    def mask_mod(self) -> MaskMod:
        tokens = self._tokens

        def global_(b, h, q_idx, kv_idx):
            return (q_idx < tokens) | (kv_idx < tokens)

        return global_

    def key_blocks(self, size: int, blocks: int) -> BlockLists:
        """Rows holding a global token list every block (an n/size-wide list: global rows are
        few, and a FlexAttention row list is that wide anyway); the others the global blocks."""
        device = self._tokens.device
        ids = torch.arange(blocks, device=device)
        start, end = ids * size, ids * size + size  # rows (or keys) of each block
        global_row = (start < self.tokens)[:, None]  # (nq, 1)
        key_global = (start < self.tokens)[None, :]  # (1, nk): holds a global key
        listed = global_row | key_global  # (nq, nk)
        full = ((end <= self.tokens)[:, None] & listed) | (end <= self.tokens)[None, :]
        indices = torch.where(listed, ids[None, :], -1)
        return normalized(size, indices[None, None], full[None, None])
