"""Shared inputs and comparisons for the sparse_core kernel tests."""

from __future__ import annotations

import math

import torch

HEADS = 2
HEAD_DIM = 16
SIZES = (1, 7, 97, 256, 1000)
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def make_qkv(
    n: int,
    dtype: torch.dtype,
    device: str = "cpu",
    batch: int = 2,
    seed: int = 0,
    heads: int = HEADS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three (batch, heads, n, HEAD_DIM) standard-normal tensors, reproducible per seed."""
    generator = torch.Generator().manual_seed(seed * 7919 + n)
    q, k, v = (torch.randn(batch, heads, n, HEAD_DIM, generator=generator) for _ in range(3))
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def make_lengths(n: int, kind: str, device: str = "cpu") -> torch.Tensor | None:
    """None (no padding) or batch-2 lengths that differ: the full n and about a third of it."""
    if kind == "none":
        return None
    return torch.tensor([n, max(1, n // 3)], device=device)


def assert_close_on_valid_rows(
    out: torch.Tensor,
    expected: torch.Tensor,
    lengths: torch.Tensor | None,
    atol: float,
    rows: torch.Tensor | None = None,
) -> None:
    """Compare query rows below each sequence's length (padded rows are unspecified).

    rows: optional (B, H, n) bool of rows to compare; the others are skipped.
    """
    assert out.shape == expected.shape and out.dtype == expected.dtype
    n = out.shape[-2]
    valid = [n] * out.shape[0] if lengths is None else lengths.tolist()
    for b, length in enumerate(valid):
        got, want = out[b, :, :length].float().cpu(), expected[b, :, :length].float().cpu()
        assert not got.isnan().any(), f"NaN in a valid row of batch row {b}"
        if rows is not None:
            keep = rows[b, :, :length].cpu()
            got, want = got[keep], want[keep]
        torch.testing.assert_close(got, want, atol=atol, rtol=0, msg=lambda m, b=b: f"row {b}: {m}")


def clear_choice_rows(
    q: torch.Tensor, k: torch.Tensor, top_k: int, lengths: torch.Tensor | None
) -> torch.Tensor:
    """(B, H, n) bool: rows whose k-th and (k+1)-th best valid scores differ by > 1e-4.

    Where they nearly tie, float32 and float64 rounding may rightly pick different keys.
    """
    scores = q.double() @ k.double().transpose(-2, -1)  # (B, H, n, n)
    n = scores.shape[-1]
    if lengths is not None:
        padded = torch.arange(n) >= lengths[:, None]  # (B, n)
        scores = scores.masked_fill(padded[:, None, None, :], float("-inf"))
    if top_k >= n:
        return torch.ones(scores.shape[:-1], dtype=torch.bool)
    best = scores.topk(top_k + 1, dim=-1).values  # (B, H, n, k + 1), descending
    gap = best[..., top_k - 1] - best[..., top_k]
    return gap.isnan() | (gap > 1e-4)  # -inf - -inf (k beyond the valid keys) is NaN: no choice


def clear_threshold_rows(
    q: torch.Tensor, k: torch.Tensor, threshold: float, lengths: torch.Tensor | None
) -> torch.Tensor:
    """(B, H, n) bool: rows where no valid score lies within 2e-5 of the cut max + ln τ.

    Near the cut (the row's maximum aside), float32 and float64 rounding may rightly keep
    different keys.
    """
    scores = q.double() @ k.double().transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, H, n, n)
    n = scores.shape[-1]
    if lengths is not None:
        padded = torch.arange(n) >= lengths[:, None]  # (B, n)
        scores = scores.masked_fill(padded[:, None, None, :], float("-inf"))
    top = scores.amax(dim=-1, keepdim=True)
    cut = top + math.log(threshold)
    # the row's maximum is kept by both, even when τ = 1 puts it on the cut
    near = ((scores - cut).abs() < 2e-5) & (scores > float("-inf")) & (scores != top)
    return ~near.any(dim=-1) | (cut.squeeze(-1) == float("inf"))
