"""How the CPU sliding-window kernel splits a sequence into SDPA calls, and what that costs.

Interior: a query tile of T rows starting at row t·T needs keys [t·T - h, t·T + T + h) for
half-width h. When that range lies inside the valid sequence, every tile shares one (T, T + 2h)
band mask, so a run of such tiles is one SDPA call on overlapping as_strided views: no copy, and
only (T - 1) / (T + 2h) of the computed scores are masked out.
Edges: the rows near position 0 and near the valid length go in "pieces" of consecutive rows
against their clipped key range, each with its own small band mask.
Both the SDPA path and the benchmark's tile-waste figure use `plan`, so the figure is what runs;
with the C++ kernel, query blocks list whole key blocks instead (`band_block_pairs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Query rows per interior SDPA call: enough work per call that the call's fixed cost (and, on a
# busy machine, its thread wake-ups) does not matter; the call's output stays a few MB.
CHUNK_ROWS = 4096
# Elements of one edge piece's mask, rows × keys (16 MiB in float32).
MASK_BUDGET = 1 << 22


def tile_size(window: int) -> int:
    """Query rows per tile for a full window span `window`: a power of two in [16, 64], ≥ w/16.

    Smaller tiles waste fewer masked keys (about (T - 1) / (T + w) of the keys computed); larger
    tiles make bigger matrix products. T ≈ w/16 keeps the waste near 6% for w >= 256.
    """
    size = 16
    while size < 64 and size * 16 < window:
        size *= 2
    return size


@dataclass(frozen=True)
class TilePlan:
    """The SDPA calls for one sequence of `length` valid tokens, half-width `half`, tile `tile`.

    interior: (first_tile, stop_tile) runs of interior tiles, each run one strided SDPA call.
    pieces: (first_row, stop_row) edge row ranges, each one SDPA call against its key range.
    """

    length: int
    half: int
    tile: int
    interior: tuple[tuple[int, int], ...]
    pieces: tuple[tuple[int, int], ...]

    def key_range(self, first_row: int, stop_row: int) -> tuple[int, int]:
        """[start, stop) of the keys rows [first_row, stop_row) need, clipped to the sequence."""
        return max(0, first_row - self.half), min(self.length, stop_row + self.half)

    def computed_pairs(self) -> int:
        """(query, key) scores the kernel computes for this sequence, masked ones included."""
        span = self.tile + 2 * self.half
        pairs = sum((stop - first) * self.tile * span for first, stop in self.interior)
        for first, stop in self.pieces:
            start, end = self.key_range(first, stop)
            pairs += (stop - first) * (end - start)
        return pairs


def plan(length: int, half: int, tile: int) -> TilePlan:
    """Interior runs of ≤ CHUNK_ROWS rows, and edge pieces whose masks fit MASK_BUDGET."""
    first_interior = -(-half // tile)  # t·T - h >= 0
    stop_interior = (length - tile - half) // tile + 1  # t·T + T + h <= length
    per_run = max(1, CHUNK_ROWS // tile)
    interior = tuple(
        (first, min(first + per_run, stop_interior))
        for first in range(first_interior, stop_interior, per_run)
    )
    if interior:
        edges = [(0, first_interior * tile), (stop_interior * tile, length)]
    else:
        edges = [(0, length)]
    rows = piece_rows(half)
    pieces = tuple(
        (first, min(first + rows, stop))
        for start, stop in edges
        for first in range(start, stop, rows)
    )
    return TilePlan(length, half, tile, interior, pieces)


def band_block_pairs(length: int, half: int, block: int) -> int:
    """(query, key) scores the C++ kernel's band path computes (`sliding_window.band_sequence`):
    each query block of `block` rows against every row of the key blocks its rows reach, masked
    ones included."""
    total = 0
    for start in range(0, length, block):
        rows = min(block, length - start)
        first = max(0, start - half) // block * block
        stop = min((min(start + block - 1 + half, length - 1) // block + 1) * block, length)
        total += rows * (stop - first)
    return total


def piece_rows(half: int) -> int:
    """Most rows r of an edge piece with r·(r + 2h) mask elements within MASK_BUDGET."""
    rows = math.isqrt(half * half + MASK_BUDGET) - half
    return max(1, min(CHUNK_ROWS, rows))


def allowed_pairs(length: int, half: int) -> int:
    """(query, key) pairs with |i - j| <= half among `length` valid tokens (the useful work)."""
    half = min(half, max(length - 1, 0))
    # every row sees 2·half + 1 keys, minus those cut off at both ends
    return length * (2 * half + 1) - half * (half + 1)
