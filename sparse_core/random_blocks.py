"""BigBird's random blocks: R(t), a pure function of (seed, t, nb), the same on every device and
in every batch.

For query block t of nb blocks, the candidates are the blocks t may not already see, in
increasing order: [g, t - a) and [max(g, t + a + 1), nb) for window reach a = (w - 1) / 2 and g
global blocks (none when t itself is global). With c candidates and r' = min(r, c), the ranks
0..c-1 are cut into r' strata [⌊i·c/r'⌋, ⌊(i+1)·c/r'⌋), each at least one rank wide, and
stratum i gives the rank ⌊i·c/r'⌋ + hash(seed, t, nb, i) mod (its width). So the r' blocks are
distinct, drawn without rejection in O(r) per block, and spread over the candidates (one from
each of r' equal portions: a stratified form of BigBird's uniform draw).

hash is a few rounds of a 31-bit multiplicative mixer on int64 tensors; every product stays below
2^62, so no step overflows and the result is exact on any device.
"""

from __future__ import annotations

import torch

MODULUS = (1 << 31) - 1  # a Mersenne prime
MULTIPLIERS = (1103515245 % MODULUS, 48271, 69621, 16807)


def mix(*values: torch.Tensor) -> torch.Tensor:
    """A deterministic hash of broadcastable int64 tensors with entries in [0, 2^31), into
    [0, 2^31 - 1)."""
    state = torch.zeros((), dtype=torch.int64)
    for value in values:
        state = (state + value) % MODULUS
        for multiplier in MULTIPLIERS:
            state = (state * multiplier + 12345) % MODULUS
            state = state ^ (state >> 13)
    return state


def random_blocks(
    seed: int, blocks: int, reach: int, global_blocks: int, count: int, device: torch.device
) -> torch.Tensor:
    """(nb, count) int64: R(t) for every query block t of a sequence of nb = `blocks` blocks,
    -1 in slots beyond the candidates there are."""
    t = torch.arange(blocks, device=device)[:, None]  # (nb, 1)
    left_end = (t - reach).clamp(min=global_blocks)  # candidates [g, t - a)
    left = (left_end - global_blocks).clamp(min=0)
    right_start = (t + reach + 1).clamp(min=global_blocks)  # and [max(g, t + a + 1), nb)
    right = (blocks - right_start).clamp(min=0)
    candidates = torch.where(t < global_blocks, 0, left + right)  # (nb, 1)
    drawn = candidates.clamp(max=count)  # r'
    stratum = torch.arange(count, device=device)[None, :]  # (1, r)
    low = stratum * candidates // drawn.clamp(min=1)
    high = (stratum + 1) * candidates // drawn.clamp(min=1)
    seeds = torch.full((), seed, dtype=torch.int64, device=device)
    pick = mix(seeds, t, torch.full((), blocks, device=device), stratum)
    rank = low + pick % (high - low).clamp(min=1)  # (nb, r)
    chosen = torch.where(rank < left, global_blocks + rank, right_start + (rank - left))
    return torch.where(stratum < drawn, chosen, -1)
