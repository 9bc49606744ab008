"""The O(n²) oracle in float64. For tests only.

Mask modes: the n×n mask comes from the mode's pattern predicate (the same declaration the
kernels' block lists come from; no second copy of the rule). Other modes: their own float64
formula, one unpadded sequence at a time.
"""

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
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q·kᵀ/√d + mask)·v in float64 with the mode's mask, or the mode's own formula;
    q, k, v: (B, H, n, D). Returns (B, H, n, D) in q's dtype; rows of padded queries are zeros.

    rows: optional (R,) query positions; then only those rows are computed (mask modes score
    R×n pairs instead of n²) and (B, H, R, D) is returned. Long tests check a sample this way.
    """
    batch, heads, n, head_dim = q.shape
    q64, k64, v64 = (t.to(torch.float64) for t in (q, k, v))
    if lengths is None:
        lengths = torch.full((batch,), n, dtype=torch.long, device=q.device)
    lengths = lengths.to(q.device, torch.long).clamp(0, n)
    mode = MODES[spec.mode]
    if mode.reference is not None:
        out = torch.zeros_like(q64)
        for b, length in enumerate(lengths.tolist()):
            if length:
                valid = slice(0, length)
                out[b, :, valid] = mode.reference(
                    spec, q64[b, :, valid], k64[b, :, valid], v64[b, :, valid]
                )
        return (out if rows is None else out[:, :, rows]).to(q.dtype)
    pattern = mode.pattern(spec, lengths, q64, k64)
    positions = torch.arange(n, device=q.device)
    queries = positions if rows is None else rows.to(q.device)  # (R,)
    allowed = pattern.mask_mod()(
        torch.arange(batch, device=q.device)[:, None, None, None],
        torch.arange(heads, device=q.device)[None, :, None, None],
        queries[None, None, :, None],
        positions[None, None, None, :],
    )  # (B, H or 1, R, n)
    key_valid = (positions < lengths[:, None])[:, None, None, :]  # (B, 1, 1, n)
    query_valid = (queries < lengths[:, None])[:, None, :, None]  # (B, 1, R, 1)
    scores = q64[:, :, queries] @ k64.transpose(-2, -1) / math.sqrt(head_dim)  # (B, H, R, n)
    scores = scores.masked_fill(~(allowed & key_valid), float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # all-masked (padded) rows -> 0
    out = (weights @ v64).masked_fill(~query_valid, 0.0)
    return out.to(q.dtype)
