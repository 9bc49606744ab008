"""Attention over disjoint key sets, merged by their log-sum-exp.

softmax over a key set A ∪ B (A, B disjoint) is the two partial softmaxes reweighted: with
ℓ_A = log Σ_{j∈A} exp(s_j) and o_A the attention over A alone,
o = (exp(ℓ_A)·o_A + exp(ℓ_B)·o_B) / (exp(ℓ_A) + exp(ℓ_B)). So a pattern's keys can be split into
parts that each run as a plain SDPA call (a contiguous run of keys, unmasked) and the parts merged
afterwards, instead of one call over a gathered copy of all keys under one mask.

torch's CPU flash kernel returns ℓ beside the output (`_scaled_dot_product_flash_attention_for_cpu`,
the op `F.scaled_dot_product_attention` runs on CPU); a row whose keys are all masked comes out
of it as zeros with ℓ = 0, so callers that mask say which rows have no key. That op exists on CPU
only: elsewhere (CUDA, where these paths run only for inputs FlexAttention does not take: one
128-token block, or heads narrower than 16) the scores are formed in float32 and reduced.
"""

from __future__ import annotations

import torch

_flash_cpu = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def sdpa_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDPA on CPU with the log-sum-exp of each row's scaled scores.

    q: (B, H, T, D); k, v: (B, H, S, D); mask: None or a bool mask broadcastable to
    (B, H, T, S), True where allowed; or bias: an additive float mask, for callers whose every
    row keeps a key. Returns out (B, H, T, D) in q's dtype and lse (B, H, T) float32, -inf for
    rows with no allowed key under `mask` (their out is 0).
    """
    if mask is not None:
        bias = torch.zeros(mask.shape, dtype=torch.float32, device=q.device)
        bias.masked_fill_(~mask, float("-inf"))
    if q.device.type == "cpu":
        out, lse = _flash_cpu(q, k, v, attn_mask=bias)
    else:
        out, lse = _scores_lse(q, k, v, bias)
    if mask is not None:
        empty = ~mask.any(dim=-1)  # (B or 1, H or 1, T)
        if bool(empty.any()):
            lse = lse.masked_fill(empty, float("-inf"))
    return out, lse


def _scores_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """sdpa_lse by its formula, T × S scores in float32; a row with no allowed key gives 0."""
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    if bias is not None:
        scores = scores + bias
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, T)
    finite = lse.masked_fill(lse == float("-inf"), 0.0)  # empty rows: exp(-inf - 0) = 0
    weights = (scores - finite.unsqueeze(-1)).exp_()
    return torch.matmul(weights, v.float()).to(q.dtype), lse


def merge_(
    out: torch.Tensor, lse: torch.Tensor, part: torch.Tensor, part_lse: torch.Tensor
) -> None:
    """Attention over two disjoint key sets from each one's (out (..., T, D), lse (..., T)),
    written in place into `out` and `lse` (views are fine); rows empty in both stay 0, -inf."""
    top = torch.maximum(lse, part_lse)
    top.masked_fill_(top == float("-inf"), 0.0)  # both empty: weights exp(-inf) = 0
    weight, part_weight = (lse - top).exp_(), (part_lse - top).exp_()  # (..., T)
    total = weight + part_weight
    lse.copy_(total.log().add_(top))
    total.clamp_(min=torch.finfo(torch.float32).tiny)
    out.mul_(weight.div_(total).unsqueeze(-1).to(out.dtype))
    out.addcmul_(part, part_weight.div_(total).unsqueeze(-1).to(out.dtype))
