"""Float64 formulas shared by the references of data-dependent modes (topk, threshold)."""

from __future__ import annotations

import math

import torch


def masked_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None
) -> torch.Tensor:
    """softmax over allowed keys of q·kᵀ/√d, times v; (H, L, D) float64 -> (H, L, D). The
    float64 formula data-dependent modes (topk, threshold) state their selection through."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (H, L, L)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
