"""`performer` (features=m, seed, default 0) — kernelized linear attention (FAVOR+, positive
orthogonal random features): φ(x) = exp(Wx' - |x'|²/2) / √m with x' = x / D^(1/4) and W the
m×D orthogonal random projection drawn from `seed`; out_i = Σ_j φ(q_i)·φ(k_j) v_j /
Σ_j φ(q_i)·φ(k_j) over valid keys, computed as φ(Q)(φ(K)ᵀV) in O(n·m·D). An unbiased
estimate of dense attention, not equal to it.
"""

from __future__ import annotations

import functools

import torch

from sparse_core.mode import MAX_FEATURES, MAX_SEED, Mode, Param
from sparse_core.spec import AttentionSpec

# Rows per chunk: the (H, rows, m) feature maps of a chunk stay a few MB.
CHUNK_ROWS = 512


@functools.lru_cache(maxsize=16)
def projection(seed: int, features: int, head_dim: int) -> torch.Tensor:
    """(m, D) float64 W on the CPU, a pure function of its arguments: blocks of D orthogonal
    rows (QR of a Gaussian matrix), each row rescaled to the norm of a Gaussian vector, so that
    every row is marginally N(0, I) as FAVOR+ needs, and rows within a block are orthogonal."""
    generator = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(-(-features // head_dim)):
        gaussian = torch.randn(head_dim, head_dim, generator=generator, dtype=torch.float64)
        orthogonal, _ = torch.linalg.qr(gaussian)
        blocks.append(orthogonal.T)  # rows orthonormal
    rows = torch.cat(blocks)[:features]  # (m, D)
    norms = torch.randn(features, head_dim, generator=generator, dtype=torch.float64).norm(dim=-1)
    return rows * norms[:, None]


def performer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, n, D) -> (B, H, n, D), one sequence at a time over its valid keys; padded rows
    zero. float32 arithmetic for half-precision inputs."""
    batch, _, n, head_dim = q.shape
    valid = [n] * batch if lengths is None else lengths.clamp(0, n).tolist()
    compute = torch.promote_types(q.dtype, torch.float32)
    weights = projection(spec.seed, spec.features, head_dim).to(q.device, compute)
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    for b, length in enumerate(valid):
        if length:
            rows = slice(0, length)
            out[b, :, rows] = sequence_performer(
                q[b, :, rows].to(compute),
                k[b, :, rows].to(compute),
                v[b, :, rows].to(compute),
                weights,
            ).to(q.dtype)
    return out


def sequence_performer(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """FAVOR+ on one sequence, (H, L, D) each, W: (m, D). Returns (H, L, D).

    In chunks of CHUNK_ROWS rows, so that the (H, rows, m) feature maps, m/D times larger than
    q, stay in cache instead of streaming through memory (the kernel is memory-bound otherwise).
    Stabilised: exp never sees a positive argument. For keys a constant, the running largest
    Wk' - |k'|²/2 (sums so far are rescaled when it grows), is subtracted: a common factor of
    numerator and denominator. For queries the term -|q'|²/2 and the row's largest Wq' are
    per-row factors, which cancel in the ratio, so they are subtracted too; so does 1/√m.
    """
    heads, length, head_dim = q.shape
    scale = head_dim**-0.25
    projection_t = weights.T.contiguous()  # (D, m)
    summary = q.new_zeros(heads, weights.shape[0], head_dim)  # φ(K)ᵀV: (H, m, D)
    normaliser = q.new_zeros(heads, weights.shape[0], 1)  # φ(K)ᵀ1: (H, m, 1)
    largest = torch.full((heads, 1, 1), float("-inf"), dtype=q.dtype, device=q.device)
    for start in range(0, length, CHUNK_ROWS):
        keys = k[:, start : start + CHUNK_ROWS] * scale  # (H, c, D)
        logits = keys @ projection_t - keys.square().sum(-1, keepdim=True) / 2  # (H, c, m)
        grown = torch.maximum(largest, logits.amax(dim=(-2, -1), keepdim=True))
        rescale = (largest - grown).exp()  # 0 on the first chunk (exp(-inf))
        largest = grown
        features = (logits - largest).exp_()
        summary = summary * rescale + features.transpose(-2, -1) @ v[:, start : start + CHUNK_ROWS]
        normaliser = normaliser * rescale + features.sum(dim=-2)[..., None]
    out = torch.empty_like(q)
    tiny = torch.finfo(q.dtype).tiny
    for start in range(0, length, CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        logits = (q[:, rows] * scale) @ projection_t  # (H, c, m)
        features = (logits - logits.amax(dim=-1, keepdim=True)).exp_()
        denominator = (features @ normaliser).clamp_(min=tiny)  # (H, c, 1)
        out[:, rows] = (features @ summary) / denominator
    return out


def performer_reference(
    spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """float64 formula on one sequence, (H, L, D): the n×n kernel matrix φ(Q)φ(K)ᵀ, unstabilised."""
    head_dim = q.shape[-1]
    weights = projection(spec.seed, spec.features, head_dim).to(q.device)
    features = spec.features

    def phi(x: torch.Tensor) -> torch.Tensor:
        x = x / head_dim**0.25
        return torch.exp(x @ weights.T - x.square().sum(-1, keepdim=True) / 2) / features**0.5

    kernel = phi(q) @ phi(k).transpose(-2, -1)  # (H, L, L)
    return (kernel @ v) / kernel.sum(dim=-1, keepdim=True)


def performer_cost(spec: AttentionSpec, length: int) -> int:
    return length * spec.features


MODE = Mode(
    name="performer",
    params=(
        Param("features", maximum=MAX_FEATURES, help="random features m (FAVOR+)"),
        Param("seed", minimum=0, maximum=MAX_SEED, default=0, help="seed of the random projection"),
    ),
    kernel=performer_attention,
    cost=performer_cost,
    reference=performer_reference,
    description="FAVOR+ linear attention with features positive orthogonal random features; O(n·m)",
)
