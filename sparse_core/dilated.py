"""`dilated` (window=w even, dilation=d) — dilated sliding window: |i - j| <= (w / 2)·d and
(i - j) mod d == 0. d = 1 is `sliding_window`.

On CPU the keys a query may see are exactly its own residue class mod d, so the pattern is d
sliding windows of span w, one over each class (every d-th token from r): the tiled
sliding-window kernel runs on strided views of each class, no pair is wasted. On CUDA,
FlexAttention runs the pattern's block lists.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_core.engine import attend_pattern
from sparse_core.executor import DEFAULT_BLOCK
from sparse_core.flex import flex_applies
from sparse_core.mode import MAX_DILATION, Mode, Param
from sparse_core.pattern import Pattern
from sparse_core.patterns import Dilated
from sparse_core.sliding_window import tiled_sliding_window
from sparse_core.spec import AttentionSpec


def dilated_pattern(
    spec: AttentionSpec, lengths: torch.Tensor, q: torch.Tensor, k: torch.Tensor
) -> Pattern:
    return Dilated(spec.window // 2, spec.dilation, q.device)


def dilated_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D) in O(n·w); padded rows zero. On CPU, one sequence at a
    time: its residue classes become extra heads of a tiled sliding window (see
    `residue_classes`)."""
    if flex_applies(q):
        return attend_pattern(q, k, v, spec, lengths, dilated_pattern)
    batch, _, n, _ = q.shape
    valid = [n] * batch if lengths is None else lengths.clamp(0, n).tolist()
    out = torch.zeros_like(q, memory_format=torch.contiguous_format)
    for b, length in enumerate(valid):
        if length:
            rows = slice(0, length)
            out[b, :, rows] = sequence_dilated(
                q[b, :, rows], k[b, :, rows], v[b, :, rows], spec.window, spec.dilation
            )
    return out


def sequence_dilated(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, dilation: int
) -> torch.Tensor:
    """One unpadded sequence, (H, L, D) each -> (H, L, D).

    Class r holds positions r, r + d, ...: with A = ⌈L / d⌉, the first L - (A - 1)·d classes
    hold A positions and the rest A - 1. Each group of equal-length classes is one batch-of-one
    sliding window whose heads are (head, class) pairs, so the work is two kernel calls whatever
    d is, not one per class.
    """
    heads, length, head_dim = q.shape
    span = -(-length // dilation)  # A
    longer = length - (span - 1) * dilation  # classes holding A positions

    def classes(t: torch.Tensor) -> torch.Tensor:  # (H, L, D) -> (H, d, A, D)
        padded = F.pad(t, (0, 0, 0, span * dilation - length))  # (H, A·d, D)
        return padded.view(heads, span, dilation, head_dim).transpose(1, 2)

    q_c, k_c, v_c = classes(q), classes(k), classes(v)
    out = torch.zeros_like(q_c)  # (H, d, A, D)
    for group, size in ((slice(0, longer), span), (slice(longer, dilation), span - 1)):
        count = len(range(dilation)[group])
        if count == 0 or size == 0:
            continue
        picked = [
            t[:, group, :size].reshape(1, heads * count, size, head_dim) for t in (q_c, k_c, v_c)
        ]
        result = tiled_sliding_window(*picked, window)  # (1, H·count, size, D)
        out[:, group, :size] = result.view(heads, count, size, head_dim)
    return out.transpose(1, 2).reshape(heads, span * dilation, head_dim)[:, :length]


def dilated_cost(spec: AttentionSpec, length: int) -> int:
    """The listed blocks' pairs (FlexAttention's on CUDA; the CPU path scores about 1/d of
    them): keys within (w / 2)·d of the query block."""
    span = spec.window * spec.dilation + 2 * DEFAULT_BLOCK
    return min(length * length, length * span)


MODE = Mode(
    name="dilated",
    params=(
        Param("window", minimum=2, even=True, help="full span in attended keys: w/2 each side"),
        Param("dilation", maximum=MAX_DILATION, example=2, help="distance between attended keys"),
    ),
    kernel=dilated_attention,
    cost=dilated_cost,
    pattern=dilated_pattern,
    description="dilated sliding window: every dilation-th key within (window/2)·dilation",
)
