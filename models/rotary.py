"""Rotary position embeddings (RoPE), applied to packed query and key rows.

The first `rotary_dim` dimensions of each head are rotated in pairs (i, i + rotary_dim/2), the
"rotate half" layout of GPT-NeoX, which every supported rotary model uses; the rest pass through
(partial rotary). Angles are computed in float32 from each token's position in its own input,
so an input's rotation never depends on the batch it came in.
"""

from __future__ import annotations

import torch
from torch import nn


def inverse_frequencies(theta: float, rotary_dim: int, ntk_factor: float | None) -> torch.Tensor:
    """(rotary_dim / 2,) float32 angular speeds theta^(-2i/rotary_dim).

    ntk_factor f (GTE's fixed NTK scaling): base theta·f, every speed then divided by f^(2/d).
    """
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim  # (d/2,)
    base = theta * (ntk_factor or 1.0)
    speeds = 1.0 / base**exponents
    if ntk_factor:
        speeds = speeds / ntk_factor ** (2 / rotary_dim)
    return speeds


class Rotary(nn.Module):
    """cos/sin tables for one rotary base: positions (T,) -> two (T, rotary_dim) float32 tensors."""

    def __init__(self, theta: float, rotary_dim: int, ntk_factor: float | None = None) -> None:
        super().__init__()
        self.theta = theta
        # A buffer, not a parameter: computed here, never in a checkpoint; the meta-device build
        # has no values, so load_encoder calls reset() once the model is materialized.
        self.register_buffer("speeds", torch.empty(rotary_dim // 2), persistent=False)
        self.rotary_dim, self.ntk_factor = rotary_dim, ntk_factor

    def reset(self) -> None:
        device = None if self.speeds.is_meta else self.speeds.device
        self.speeds = inverse_frequencies(self.theta, self.rotary_dim, self.ntk_factor).to(device)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.float()[:, None] * self.speeds[None, :]  # (T, d/2)
        angles = torch.cat((angles, angles), dim=-1)  # (T, d): pair i with i + d/2
        return angles.cos(), angles.sin()


def rotate(heads: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """heads: (T, H, D); cos, sin: (T, d) float32 with d <= D. Returns (T, H, D) in heads' dtype."""
    d = cos.shape[-1]
    rotated, kept = heads[..., :d].float(), heads[..., d:]
    first, second = rotated.chunk(2, dim=-1)  # (T, H, d/2) each
    half_turn = torch.cat((-second, first), dim=-1)  # (T, H, d)
    out = rotated * cos[:, None, :] + half_turn * sin[:, None, :]  # (T, H, d)
    return torch.cat((out.to(heads.dtype), kept), dim=-1)
