"""`topk` (top_k=k): each query attends to its k highest-scoring valid keys (exact)."""

from __future__ import annotations

import math

import torch

from sparse_core._exact_topk import exact_topk
from sparse_core.dense import dense_attention
from sparse_core.mode import Mode, Param
from sparse_core.spec import AttentionSpec

# Scores held at once, in elements (128 MiB in float32): a chunk of query rows × all n keys × all
# heads and batch rows. Bounds the extra memory at O(chunk·n); big enough that each chunk's dozens
# of tensor ops are large and their fixed per-op cost is amortised.
SCORE_BUDGET = 1 << 25
# Gathered value rows held at once, in elements (16 MiB in float32). Temporaries this small are
# recycled by the C allocator; much larger ones are fresh mappings that page-fault in every chunk.
PICK_BUDGET = 1 << 22


def topk_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax over each query's `spec.top_k` best-scoring valid keys. Returns (B, H, n, D).

    Loops over chunks of query rows so that at most ~SCORE_BUDGET scores exist at once (O(chunk·n)
    memory, never n²). The softmax reuses the selected scores; values are gathered by index.
    Scores and softmax run in float32 for half-precision inputs. top_k >= n is plain attention;
    top_k >= a row's valid keys selects padded keys too, but at -inf, so they get zero weight.
    """
    batch, heads, n, head_dim = q.shape
    top_k = spec.top_k
    if top_k >= n:
        return dense_attention(q, k, v, spec, lengths)
    compute = torch.promote_types(q.dtype, torch.float32)
    keys_t = k.to(compute).transpose(-2, -1).contiguous()  # (B, H, D, n): GEMM-friendly layout
    values = v.to(compute).reshape(batch * heads * n, head_dim)  # (B·H·n, D), row = (b·H + h)·n + j
    key_bias = None
    if lengths is not None and bool((lengths < n).any()):
        padded = torch.arange(n, device=q.device) >= lengths.to(q.device)[:, None]  # (B, n)
        key_bias = torch.zeros(padded.shape, dtype=compute, device=q.device)
        key_bias = key_bias.masked_fill_(padded, float("-inf"))[:, None, None, :]  # (B, 1, 1, n)
    first_row = (torch.arange(batch * heads, device=q.device) * n).view(batch, heads, 1, 1)
    scale = 1.0 / math.sqrt(head_dim)
    # Rows per chunk: scores within SCORE_BUDGET, gathered values (c·k·D a head) in PICK_BUDGET.
    chunk = min(
        n, SCORE_BUDGET // (batch * heads * n), PICK_BUDGET // (batch * heads * top_k * head_dim)
    )
    chunk = max(1, chunk)
    # One buffer for every chunk's scores: fresh multi-MB allocations would each page-fault in.
    buffer = torch.empty(batch * heads * chunk * n, dtype=compute, device=q.device)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        scores = buffer[: batch * heads * (rows.stop - start) * n].view(batch, heads, -1, n)
        torch.matmul(q[:, :, rows].to(compute) * scale, keys_t, out=scores)  # (B, H, c, n)
        if key_bias is not None:
            scores += key_bias
        top_scores, top_keys = exact_topk(scores, top_k)  # (B, H, c, k) each
        weights = torch.softmax(top_scores, dim=-1)  # (B, H, c, k)
        picked = values.index_select(0, (top_keys + first_row).flatten())
        picked = picked.view(*top_keys.shape, head_dim)  # (B, H, c, k, D)
        out[:, :, rows] = (weights.unsqueeze(-2) @ picked).squeeze(-2)  # (B, H, c, D)
    return out


def topk_reference_mask(
    spec: AttentionSpec, scores: torch.Tensor, key_valid: torch.Tensor
) -> torch.Tensor:
    # `scores` already holds -inf at padded keys, so they rank last; k >= valid keys means dense.
    n = scores.shape[-1]
    if spec.top_k >= n:
        return torch.ones((), dtype=torch.bool, device=scores.device)
    chosen = scores.topk(spec.top_k, dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, chosen, True)


MODE = Mode(
    name="topk",
    params=(Param("top_k", minimum=1, help="keys kept per query, by score"),),
    kernel=topk_attention,
    reference_mask=topk_reference_mask,
    description="each query keeps its top_k keys by score; O(n²) scores, O(chunk·n) memory",
)
