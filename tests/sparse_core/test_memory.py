"""The sparse kernels' memory grows with n·w, n·m or chunk·n, never with n². No timing here."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest
import torch

from sparse_core import AttentionSpec, _window_tiles, attend, executor, topk


class PeakResidentMemory:
    """Process peak RSS growth over a block (Linux: resets VmHWM through /proc/self/clear_refs)."""

    def __enter__(self) -> PeakResidentMemory:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc_trim(0)  # return freed heap pages, so reused ones cannot hide growth
        Path("/proc/self/clear_refs").write_text("5")
        self.baseline = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.extra_bytes = (_status_kib("VmHWM") - self.baseline) * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc"
)


@needs_proc
@pytest.mark.parametrize("window", [4, 512])
def test_sliding_window_extra_memory_is_the_output_not_n_squared(window):
    """n = 2^18: an n×n bool mask alone would be 64 GiB, one CHUNK_ROWS×n float mask 4 GiB. The
    tiled kernel adds its output, one edge piece's mask (≤ MASK_BUDGET) and one run's SDPA."""
    n = 1 << 18
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 8, generator=generator) for _ in range(3))
    with PeakResidentMemory() as peak:
        out = attend(q, k, v, AttentionSpec("sliding_window", window=window))
    run_scores = _window_tiles.CHUNK_ROWS * (64 + window) * 4  # (rows, tile + 2h) float32
    limit = 2 * q.nbytes + 4 * _window_tiles.MASK_BUDGET + 2 * run_scores + (16 << 20)
    assert limit < _window_tiles.CHUNK_ROWS * n
    assert peak.extra_bytes < limit
    for row in (0, 1, 12345, n - 2, n - 1):  # and the values follow the definition
        keys = slice(max(0, row - window // 2), min(n, row + window // 2 + 1))
        weights = torch.softmax(q[0, 0, row] @ k[0, 0, keys].T / 8**0.5, dim=-1)
        torch.testing.assert_close(out[0, 0, row], weights @ v[0, 0, keys], atol=1e-5, rtol=0)


@needs_proc
@pytest.mark.parametrize("scatter_ratio", [0, 1 << 40], ids=["gather", "scatter"])
def test_topk_extra_memory_is_chunk_times_n_not_n_squared(monkeypatch, scatter_ratio):
    """n = 16384, one head: n² float32 scores would be 1 GiB; the chunked kernel stays far below,
    whether it gathers the picked values or scatters the weights into the score chunk.

    The score budget is lowered to 16 MiB so that the bound is tight at a quick size.
    """
    budget = 1 << 22
    monkeypatch.setattr(topk, "SCORE_BUDGET", budget)
    monkeypatch.setattr(topk, "SCATTER_RATIO", scatter_ratio)
    n = 1 << 14
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 8, generator=generator) for _ in range(3))
    with PeakResidentMemory() as peak:
        out = attend(q, k, v, AttentionSpec("topk", top_k=8))
    limit = 3 * budget * 4 + 16 * q.nbytes  # the score chunk, its by-products, the O(n) rest
    assert limit < n * n * 4 / 4
    assert peak.extra_bytes < limit
    assert not out.isnan().any()


@needs_proc
@pytest.mark.parametrize(
    ("spec", "global_rows"),
    [
        (AttentionSpec("bigbird", block_size=64), True),
        (AttentionSpec("routing", block_size=64, blocks=4), False),
        (AttentionSpec("dilated", window=64, dilation=3), False),
        (AttentionSpec("performer", features=64), False),
        (AttentionSpec("nystrom", landmarks=64), False),
    ],
    ids=repr,
)
def test_sub_quadratic_modes_extra_memory_is_a_few_times_q_not_n_squared(spec, global_rows):
    """n = 2^16, one head: an n×n bool mask would be 4 GiB. The block-sparse executor adds its
    output, one group's gathered keys (≤ GATHER_BUDGET elements) and its block lists; performer
    and nystrom their output and one chunk's feature maps.

    A pattern with global rows lists every key block for them, and the padded list format makes
    every row that wide: (n/T)² entries, ~50 bytes each with the sorting that merges them, so
    that term is allowed for (about 50 MiB here; 3 MiB at 32,768 tokens)."""
    n = 1 << 16
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 8, generator=generator) for _ in range(3))
    with PeakResidentMemory() as peak:
        out = attend(q, k, v, spec)
    limit = 3 * q.nbytes + 3 * 4 * executor.GATHER_BUDGET + (32 << 20)
    if global_rows:
        limit += 50 * (n // 64) ** 2
    assert limit < n * n // 16
    assert peak.extra_bytes < limit
    assert not out.isnan().any()
