"""`block` (block_size=b): query i attends to key j iff i // b == j // b."""

from __future__ import annotations

import torch

from sparse_core.mode import Mode, Param
from sparse_core.spec import AttentionSpec


def block_attention(q, k, v, spec: AttentionSpec, lengths: torch.Tensor | None = None):
    raise NotImplementedError  # kernel: see issue "sparse_core"


def block_reference_mask(
    spec: AttentionSpec, scores: torch.Tensor, key_valid: torch.Tensor
) -> torch.Tensor:
    positions = torch.arange(scores.shape[-1], device=scores.device)
    block_id = positions // spec.block_size
    return block_id[:, None] == block_id[None, :]  # (n, n)


MODE = Mode(
    name="block",
    params=(Param("block_size", minimum=1, help="tokens per block; blocks start at position 0"),),
    kernel=block_attention,
    reference_mask=block_reference_mask,
    description="non-overlapping blocks of block_size tokens; O(n·block_size)",
)
