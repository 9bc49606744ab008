"""Exact top-k along the last dimension, much cheaper than `torch.topk` over long rows.

Split a row of n scores into m = n // g strided groups of g (group c holds columns c, c + m, …)
plus a tail of n mod g columns. Every one of the row's k largest scores lies in one of the k
groups with the largest maxima, or in the tail: a score outside those groups is beaten by the k
group maxima. So the k best groups are found among the m maxima (by the same method, recursively),
and top-k then runs over their k·g members and the tail instead of over n scores. Strided groups
make the maxima a vectorised reduction over a non-innermost dimension.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sparse_core import _native

# (scores (..., n), k) -> the k largest values of each row and their columns, unsorted.
Selection = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]

# Below this many scores per wanted key, a plain torch.topk is cheaper than grouping.
PLAIN_RATIO = 16


def group_size(n: int, k: int) -> int:
    """Group size for a row of n: a power of two near (n / k)^(1/3), at least 4; 1: plain topk.

    With recursion the cost per level is about k·g, plus the recursion on n / g maxima.
    """
    if k * PLAIN_RATIO > n:
        return 1
    size = 4
    while (size * 2) ** 3 * k <= n:
        size *= 2
    return size


def topk_selection(device: torch.device, dtype: torch.dtype) -> Selection:
    """The exact row top-k for scores on `device` in `dtype`: the C++ kernel (`_topk_rows.cpp`)
    for float32 CPU scores when it is built, `exact_topk` otherwise.

    With the kernel, top-k attention at n=16,384 took 1.28× to 1.53× dense SDPA's time in three
    full runs of benchmarks/attention.py, against 2.08× without it (see the README's kernel table).
    """
    native = _native.topk_rows() if device.type == "cpu" and dtype == torch.float32 else None
    if native is None:
        return exact_topk

    def select(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        values, columns = native(scores.reshape(-1, scores.shape[-1]), k)
        return values.view(*scores.shape[:-1], k), columns.view(*scores.shape[:-1], k)

    return select


def exact_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values of each row of `scores` (..., n) and their column indices, unsorted.

    Ties at the k-th value are broken arbitrarily, as by `torch.topk`.
    """
    n = scores.shape[-1]
    size = group_size(n, k)
    if size == 1:
        return scores.topk(k, dim=-1, sorted=False)
    groups = n // size
    grouped = scores[..., : groups * size].unflatten(-1, (size, groups))  # (..., g, m)
    _, best = exact_topk(grouped.amax(dim=-2), k)  # (..., k) group ids
    members = grouped.gather(-1, best.unsqueeze(-2).expand(*best.shape[:-1], size, k))
    candidates = members.flatten(-2)  # (..., g·k): member t of group best[i] at t·k + i
    if groups * size < n:  # the tail columns are always candidates
        candidates = torch.cat((candidates, scores[..., groups * size :]), dim=-1)
    values, picked = candidates.topk(k, dim=-1, sorted=False)  # (..., k) each
    in_groups = picked < size * k
    member, slot = picked // k, picked % k
    columns = best.gather(-1, slot.clamp(max=k - 1)) + member * groups
    tail_columns = picked - size * k + groups * size
    return values, torch.where(in_groups, columns, tail_columns)
