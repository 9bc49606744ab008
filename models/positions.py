"""The learned absolute position table, read at positions beyond the ones it was trained on.

BERT-family encoders learn one row per position up to `max_positions` (512). To encode longer
inputs in one pass the table is extended; the strategy is chosen once, at load time:

- `copy` (Longformer): the learned rows repeat, position p reads row p mod max_positions, as if the
  table were tiled to any length. Every position keeps a trained row and local order is unchanged
  within each 512-token stretch.
- `interpolate`: an input of `length` > max_positions has its positions squeezed linearly onto the
  learned range, p -> p·(max_positions-1)/(length-1), reading a linear blend of the two nearest
  rows. The squeeze depends on the input's own length, never on padding, so batching is invariant.

Inputs within max_positions read exactly the learned rows under both strategies.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import EncoderConfig


class PositionTable(nn.Module):
    """The checkpoint's table, (max_position_embeddings, hidden); subclasses say how to read it."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.max_position_embeddings, config.hidden_size))
        self.offset = config.position_offset
        self.max_positions = config.max_positions

    def learned(self) -> torch.Tensor:
        """The rows of real positions 0..max_positions-1 (RoBERTa's padding rows skipped)."""
        return self.weight[self.offset : self.offset + self.max_positions]  # (P, hidden)

    def forward(self, n: int, lengths: torch.Tensor | None) -> torch.Tensor:
        """Embeddings of positions 0..n-1: (1 or B, n, hidden). lengths: (B,) or None."""
        raise NotImplementedError


class CopiedPositions(PositionTable):
    def forward(self, n: int, lengths: torch.Tensor | None) -> torch.Tensor:
        positions = torch.arange(n, device=self.weight.device) % self.max_positions  # (n,)
        return self.learned()[positions][None]  # (1, n, hidden)


class InterpolatedPositions(PositionTable):
    def forward(self, n: int, lengths: torch.Tensor | None) -> torch.Tensor:
        device = self.weight.device
        if lengths is None:
            lengths = torch.full((1,), n, device=device)
        last = self.max_positions - 1
        # Inputs that fit keep scale 1, so they read exactly the learned rows.
        scale = (last / (lengths - 1).clamp(min=1)).clamp(max=1.0)  # (B,)
        where = torch.arange(n, device=device)[None, :] * scale[:, None]  # (B, n) fractional rows
        low = where.floor().long().clamp(max=last)  # (B, n); padded positions clamp to the end
        high = (low + 1).clamp(max=last)
        frac = (where - low).clamp(max=1.0)[..., None].float()  # (B, n, 1)
        table = self.learned().float()  # blend in float32: a bfloat16 frac is off by up to 2^-9
        return torch.lerp(table[low], table[high], frac).to(self.weight.dtype)  # (B, n, hidden)


POSITION_EXTENSIONS: dict[str, type[PositionTable]] = {
    "copy": CopiedPositions,
    "interpolate": InterpolatedPositions,
}
