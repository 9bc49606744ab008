"""Strided views of one sequence's (H, n, D) rows: residue classes and block heads, no copy."""

from __future__ import annotations

import torch


def class_view(x: torch.Tensor, first: int, count: int, size: int, stride: int) -> torch.Tensor:
    """Classes first, ..., first + count - 1 mod `stride`, `size` positions each: position
    r + a·stride as [:, r - first, a]. x: (H, n, ...) -> (H, count, size, ...), a view; the
    caller keeps r + (size - 1)·stride inside x."""
    rows = x.stride(1)
    return x.as_strided(
        (x.shape[0], count, size, *x.shape[2:]),
        (x.stride(0), rows, stride * rows, *x.stride()[2:]),
        x.storage_offset() + first * rows,
    )


def block_view(x: torch.Tensor, first: int, count: int, block: int, offset: int, size: int):
    """Rows [offset, offset + size) of blocks first, ..., first + count - 1 of `block` rows:
    x (H, n, ...) -> (H, count, size, ...), a view; the caller keeps them inside x."""
    rows = x.stride(1)
    return x.as_strided(
        (x.shape[0], count, size, *x.shape[2:]),
        (x.stride(0), block * rows, rows, *x.stride()[2:]),
        x.storage_offset() + (first * block + offset) * rows,
    )
