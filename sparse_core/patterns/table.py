"""`BlockTable(block, table)`: query block t sees the key blocks listed in table[b, h, t] (blocks
of `block` tokens): BigBird's random blocks, routing's chosen blocks."""

from __future__ import annotations

import torch

from sparse_core.pattern import BlockLists, MaskMod, Pattern, normalized

# Block pairs up to which the predicate looks membership up in a (B, H, nb, nb) bool table
# (one lookup per pair) instead of comparing with each of the r slots of the query block's row.
MEMBERSHIP_BUDGET = 1 << 24


class BlockTable(Pattern):
    """table: (B, H', nb, r) int64 key-block ids per query block, -1 for an unused slot; H' is 1
    (the same for every head) or the heads; B and H' may be expanded (stride-0) views.
    block: the pattern's block size, which the CPU executor uses, so that its lists are the
    table itself."""

    def __init__(self, block: int, table: torch.Tensor) -> None:
        self.block_size = block
        self.table = table
        self._block = torch.full((), block, device=table.device)

    def membership(self) -> torch.Tensor | None:
        """(B, H, nb, nb + 1) bool, [b, h, t, s] = s listed for t (the last column absorbs the
        unused slots), or None when that is over MEMBERSHIP_BUDGET."""
        batch, heads, blocks, _ = self.table.shape
        if batch * heads * blocks * (blocks + 1) > MEMBERSHIP_BUDGET:
            return None
        member = torch.zeros(
            batch, heads, blocks, blocks + 1, dtype=torch.bool, device=self.table.device
        )
        slots = torch.where(self.table >= 0, self.table, blocks)
        member.scatter_(-1, slots, True)
        member[..., blocks] = False  # and keys past the table's blocks (see mask_mod) are out
        return member

    def mask_mod(self) -> MaskMod:
        table, block = self.table, self._block
        last = table.shape[2] - 1
        shared = table.shape[1] == 1  # one table for every head (BigBird): read row h = 0
        member = self.membership()
        if member is not None:

            def block_table(b, h, q_idx, kv_idx):
                # indices past n (a padded last block) are clamped to stay inside the table
                query_block = (q_idx // block).clamp(max=last)
                head = h * 0 if shared else h
                return member[b, head, query_block, (kv_idx // block).clamp(max=last + 1)]

            return block_table

        def block_table(b, h, q_idx, kv_idx):
            head = h * 0 if shared else h
            row = table[b, head, (q_idx // block).clamp(max=last)]  # (..., r): the key blocks
            key_block = kv_idx // block
            hit = row[..., 0] == key_block
            for slot in range(1, table.shape[-1]):  # r is small; no reduction under vmap
                hit = hit | (row[..., slot] == key_block)
            return hit

        return block_table

    def key_blocks(self, size: int, blocks: int) -> BlockLists:
        table = self.table
        if size == self.block_size:
            table = table[:, :, :blocks]
            return normalized(size, table, table >= 0)
        # Another block size: each query block of `size` rows gathers the lists of the pattern's
        # blocks it overlaps and lists every `size`-block those keys fall in, as partial.
        device, block = table.device, self.block_size
        query_block = torch.arange(blocks, device=device)
        inner = -(-size // block) + 1  # pattern blocks one query block can overlap
        rows = (query_block * size // block)[:, None] + torch.arange(inner, device=device)
        rows_valid = rows * block < (query_block[:, None] + 1) * size
        rows = rows.clamp(max=table.shape[2] - 1)
        picked = table[:, :, rows]  # (B, H, nq, inner, r)
        picked = torch.where(rows_valid[..., None] & (picked >= 0), picked, -1)
        spread = min(blocks, -(-block // size) + 1)  # size-blocks a pattern block can overlap
        first = picked * block // size  # (B, H, nq, inner, r)
        ids = first[..., None] + torch.arange(spread, device=device)
        inside = (ids * size < (picked[..., None] + 1) * block) & (picked[..., None] >= 0)
        ids = torch.where(inside & (ids < blocks), ids, -1).flatten(
            -3
        )  # (B, H, nq, inner·r·spread)
        return normalized(size, ids, torch.zeros_like(ids, dtype=torch.bool))
