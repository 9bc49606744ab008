"""The CPU kernels' loop over a padded batch: one sequence at a time, over its valid tokens."""

from __future__ import annotations

from collections.abc import Callable

import torch


def each_sequence(
    q: torch.Tensor,
    lengths: torch.Tensor | None,
    write: Callable[[int, int, torch.Tensor], None],
) -> torch.Tensor:
    """A (B, H, n, D) output like q: `write(b, length, out[b])` fills sequence b's first `length`
    rows in place, for every sequence with valid tokens; padded query rows are zero."""
    batch, _, n, _ = q.shape
    valid = [n] * batch if lengths is None else lengths.clamp(0, n).tolist()
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    for b, length in enumerate(valid):
        out[b, :, length:] = 0  # padded query rows
        if length:
            write(b, length, out[b])
    return out
