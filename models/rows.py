"""`TokenRows`: where each real token's row sits in the padded (B, n) grid."""

from __future__ import annotations

import torch


class TokenRows:
    """Where each real token's row sits in the padded (B, n) grid the attention kernels take.

    Projections, the FFN and LayerNorms act on each token alone, so the layers keep hidden states
    as packed rows, (T, hidden) for the T real tokens, and never spend work on padding (a quarter
    of the rows in a typical batch of short texts). Only attention sees the padded grid.
    """

    def __init__(self, batch: int, n: int, lengths: torch.Tensor | None) -> None:
        self.batch, self.n = batch, n
        self.lengths = lengths  # (B,) real tokens per row; None when no row is padded
        self.index: torch.Tensor | None = None  # (T,) flat grid positions of real tokens
        if lengths is not None:
            positions = torch.arange(n, device=lengths.device)
            real = positions[None, :] < lengths[:, None]  # (B, n)
            self.index = real.flatten().nonzero().squeeze(1)

    def pack(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, n, ...) -> (T, ...): the real tokens' rows, input by input."""
        flat = grid.reshape(self.batch * self.n, *grid.shape[2:])  # (B·n, ...)
        return flat if self.index is None else flat.index_select(0, self.index)

    def unpack(self, rows: torch.Tensor) -> torch.Tensor:
        """(T, ...) -> (B, n, ...), with zeros at padded positions."""
        if self.index is not None:
            grid = rows.new_zeros(self.batch * self.n, *rows.shape[1:])  # (B·n, ...)
            rows = grid.index_copy_(0, self.index, rows)
        return rows.view(self.batch, self.n, *rows.shape[1:])

    def positions(self, device: torch.device) -> torch.Tensor:
        """(T,) each real token's position in its own input (0 for its first token)."""
        if self.index is None:
            return torch.arange(self.batch * self.n, device=device) % self.n
        return self.index % self.n
