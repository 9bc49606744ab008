"""`sliding_window` (window=w, even): query i attends to key j iff |i - j| <= w / 2."""

from __future__ import annotations

import torch

from sparse_core.mode import Mode, Param
from sparse_core.spec import AttentionSpec


def sliding_window_attention(q, k, v, spec: AttentionSpec, lengths: torch.Tensor | None = None):
    raise NotImplementedError  # kernel: see issue "sparse_core"


def sliding_window_reference_mask(
    spec: AttentionSpec, scores: torch.Tensor, key_valid: torch.Tensor
) -> torch.Tensor:
    positions = torch.arange(scores.shape[-1], device=scores.device)
    distance = (positions[:, None] - positions[None, :]).abs()
    return distance <= spec.window // 2  # (n, n)


MODE = Mode(
    name="sliding_window",
    params=(
        Param("window", minimum=2, even=True, help="full span: w/2 keys each side of the query"),
    ),
    kernel=sliding_window_attention,
    reference_mask=sliding_window_reference_mask,
    description="each query sees the window/2 keys on each side; O(n·window)",
)
