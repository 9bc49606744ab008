"""`attend`: check shapes once, then dispatch through the mode table."""

from __future__ import annotations

import torch

from sparse_core.registry import MODES
from sparse_core.spec import AttentionSpec


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of `spec`'s pattern.

    q, k, v: (B, H, n, D), same dtype and device. lengths: optional (B,) int tensor; keys at
    positions >= lengths[b] are padding and never attended to. Returns (B, H, n, D) in q's dtype;
    rows of padded queries hold unspecified (finite or not) values that callers must ignore.
    """
    if q.dim() != 4 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(
            f"q, k, v must share one (batch, heads, seq, head_dim) shape; got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not q.dtype == k.dtype == v.dtype or not q.device == k.device == v.device:
        raise ValueError(
            f"q, k, v must share one dtype and device; got {q.dtype}/{q.device}, "
            f"{k.dtype}/{k.device}, {v.dtype}/{v.device}"
        )
    if lengths is not None and lengths.shape != (q.shape[0],):
        raise ValueError(f"lengths must have shape ({q.shape[0]},), got {tuple(lengths.shape)}")
    return MODES[spec.mode].kernel(q, k, v, spec, lengths)
