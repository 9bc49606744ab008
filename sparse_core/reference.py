"""The O(n²) oracle: materializes each mode's n×n mask in float64. For tests only."""

from __future__ import annotations

import math

import torch

from sparse_core.registry import MODES
from sparse_core.spec import AttentionSpec


def reference_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain softmax(q·kᵀ/√d + mask)·v in float64 with the mode's mask; same dtype out as in.

    Rows of padded queries are returned as zeros.
    """
    batch, _, n, head_dim = q.shape
    q64, k64, v64 = (t.to(torch.float64) for t in (q, k, v))
    scores = q64 @ k64.transpose(-2, -1) / math.sqrt(head_dim)  # (B, H, n, n)
    if lengths is None:
        lengths = torch.full((batch,), n, dtype=torch.long, device=q.device)
    positions = torch.arange(n, device=q.device)
    key_valid = (positions < lengths[:, None])[:, None, None, :]  # (B, 1, 1, n)
    query_valid = (positions < lengths[:, None])[:, None, :, None]  # (B, 1, n, 1)
    scores = scores.masked_fill(~key_valid, float("-inf"))
    allowed = MODES[spec.mode].reference_mask(spec, scores, key_valid) & key_valid
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # all-masked (padded) rows -> 0
    out = (weights @ v64).masked_fill(~query_valid, 0.0)
    return out.to(q.dtype)
