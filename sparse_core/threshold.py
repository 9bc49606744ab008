"""`threshold` (threshold=τ, float, 0 < τ <= 1) — threshold sparsification: query i attends key j
iff s_ij >= max_j' s_ij' + ln τ (its weight is at least τ times the row's largest), softmax over
those. τ = 1 keeps the maximum and its ties."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sparse_core.float64 import masked_softmax_attention
from sparse_core.mode import Mode, Param, quadratic_cost
from sparse_core.spec import AttentionSpec

# Scores held at once, in elements: chunks of query rows × all n keys, of one head or several.
# CPU: 4 MiB in float32, so that a chunk's passes stay in cache. Elsewhere (CUDA): 256 MiB, so
# that a 16k-token sequence takes 48 chunks instead of 3,072 (each chunk is six kernel launches,
# and a GPU waits on launches long before it runs out of memory bandwidth).
SCORE_BUDGET = 1 << 20
DEVICE_SCORE_BUDGET = 1 << 26


def threshold_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D), one sequence at a time over its valid tokens (batch
    invariant); rows of padded queries are zeros. O(n²) time, O(chunk·n) memory."""
    batch, _, n, _ = q.shape
    valid = [n] * batch if lengths is None else lengths.clamp(0, n).tolist()
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    for b, length in enumerate(valid):
        if length:
            rows = slice(0, length)
            out[b, :, rows] = sequence_threshold(
                q[b, :, rows], k[b, :, rows], v[b, :, rows], spec.threshold
            )
    return out


def sequence_threshold(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Threshold attention of one unpadded sequence; q, k, v: (H, L, D) -> (H, L, D).

    Per chunk of query rows (of one head, or of several heads where the budget holds them):
    scores, the row max, weights exp(s - max) in place, then the weights below τ zeroed (weight
    >= τ is s >= max + ln τ; the row max's weight 1 always survives), and one GEMM with the
    values and a column of ones, which gives each row's weighted sum and its normaliser
    together. On CPU chunks of about SCORE_BUDGET scores stay in cache; each pass over them is
    memory-bound. float32 arithmetic for half-precision inputs.
    """
    heads, length, head_dim = q.shape
    compute = torch.promote_types(q.dtype, torch.float32)
    keys_t = k.to(compute).transpose(-2, -1).contiguous()  # (H, D, L)
    ones = torch.ones((heads, length, 1), dtype=compute, device=q.device)
    values = torch.cat((v.to(compute), ones), dim=-1)  # (H, L, D + 1)
    queries = q.to(compute) * (1.0 / math.sqrt(head_dim))
    # weight >= τ for float weights: greater than the float just below τ (threshold_ keeps >)
    cut = torch.tensor(threshold, dtype=compute)
    below_cut = float(torch.nextafter(cut, torch.zeros((), dtype=compute)))
    budget = SCORE_BUDGET if q.device.type == "cpu" else DEVICE_SCORE_BUDGET
    chunk = max(16, min(length, budget // length))
    together = max(1, min(heads, budget // (chunk * length)))  # heads per chunk
    buffer = torch.empty(together * chunk * length, dtype=compute, device=q.device)
    out = torch.empty((heads, length, head_dim), dtype=compute, device=q.device)
    for first in range(0, heads, together):
        group = slice(first, min(heads, first + together))
        for start in range(0, length, chunk):
            rows = slice(start, min(length, start + chunk))
            shape = (group.stop - group.start, rows.stop - start, length)
            scores = buffer[: shape[0] * shape[1] * length].view(shape)
            torch.matmul(queries[group, rows], keys_t[group], out=scores)  # (h, c, L)
            scores -= scores.amax(dim=-1, keepdim=True)  # the row max becomes 0
            weights = F.threshold_(scores.exp_(), below_cut, 0.0)
            summed = weights @ values[group]  # (h, c, D + 1): Σ w·v and Σ w
            out[group, rows] = summed[..., :head_dim] / summed[..., head_dim:]
    return out.to(q.dtype)


def threshold_reference(
    spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """float64 formula on one sequence, (H, L, D)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (H, L, L)
    allowed = scores >= scores.amax(dim=-1, keepdim=True) + math.log(spec.threshold)
    return masked_softmax_attention(q, k, v, allowed)


MODE = Mode(
    name="threshold",
    params=(
        Param(
            "threshold",
            kind=float,
            minimum=0.0,
            maximum=1.0,
            exclusive_minimum=True,
            example=0.01,
            help="keep keys whose weight is at least this fraction of the row's largest",
        ),
    ),
    kernel=threshold_attention,
    cost=quadratic_cost,
    reference=threshold_reference,
    description="keys whose softmax weight is >= threshold × the row's largest; O(n²)",
    pairwise=True,
)
