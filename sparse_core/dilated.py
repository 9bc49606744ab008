"""`dilated` (window=w even, dilation=d) — dilated sliding window: |i - j| <= (w / 2)·d and
(i - j) mod d == 0. d = 1 is `sliding_window`.

On CPU the keys a query may see are exactly its own residue class mod d, so the pattern is d
sliding windows of span w, one over each class (every d-th token from r): the tiled
sliding-window kernel runs on strided views of each class, reading q, k, v and writing the
output in place (no copy of the sequence), and no pair is wasted. On CUDA, FlexAttention runs
the pattern's block lists.
"""

from __future__ import annotations

import torch

from sparse_core._views import class_view
from sparse_core.engine import attend_pattern
from sparse_core.executor import DEFAULT_BLOCK
from sparse_core.mode import MAX_DILATION, Mode, Param
from sparse_core.pattern import Pattern
from sparse_core.patterns import Dilated
from sparse_core.sliding_window import band_sequence
from sparse_core.spec import AttentionSpec

# Elements of each of q, k, v copied per call into (head, class)-major order (4 MiB in float32).
COPY_BUDGET = 1 << 20


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
    `sequence_dilated`)."""
    return attend_pattern(
        q, k, v, spec, lengths, dilated_pattern,
        sequence=lambda qb, kb, vb, length, out: sequence_dilated(
            qb, kb, vb, length, spec.window, spec.dilation, out
        ),
    )  # fmt: skip


def sequence_dilated(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    length: int,
    window: int,
    dilation: int,
    out: torch.Tensor,
) -> None:
    """Writes rows [0, length) of `out` (H, n, D) for one sequence's (H, n, D) q, k, v.

    Class r holds positions r, r + d, ...: with A = ⌈L / d⌉, the first L - (A - 1)·d classes
    hold A positions and the rest A - 1. Each group of equal-length classes is one tiled
    sliding window whose heads are (head, class) pairs, taken from strided views
    (`class_view`) a few heads at a time: copies of at most COPY_BUDGET elements, so that the
    work is a few kernel calls whatever d is, not one per class, and the extra memory does not
    grow with the sequence.
    """
    heads, _, head_dim = q.shape
    span = -(-length // dilation)  # A
    longer = length - (span - 1) * dilation  # classes holding A positions
    for first, count, size in ((0, longer, span), (longer, dilation - longer, span - 1)):
        if count == 0 or size == 0:
            continue
        step = max(1, COPY_BUDGET // (count * size * head_dim))  # heads per call
        for head in range(0, heads, step):
            picked = slice(head, min(heads, head + step))
            views = [class_view(t[picked], first, count, size, dilation) for t in (q, k, v, out)]
            rows = views[0].shape[0] * count  # (heads, class) pairs
            result = torch.empty((rows, size, head_dim), dtype=q.dtype, device=q.device)
            band_sequence(
                *(view.reshape(rows, size, head_dim) for view in views[:3]),
                size,
                window // 2,
                result,
            )
            views[3].copy_(result.view(views[3].shape))


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
