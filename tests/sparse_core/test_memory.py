"""The sparse kernels' memory grows with n·w or chunk·n, never with n². No timing here."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest
import torch

from sparse_core import AttentionSpec, attend, topk


def test_sliding_window_at_a_length_where_n_squared_cannot_exist():
    """n = 2^18: an n×n bool mask alone would be 64 GiB, far beyond this machine's memory."""
    n, window = 1 << 18, 4
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 8, generator=generator) for _ in range(3))
    out = attend(q, k, v, AttentionSpec("sliding_window", window=window))
    for row in (0, 1, 12345, n - 2, n - 1):  # spot-check rows against the definition
        keys = slice(max(0, row - window // 2), min(n, row + window // 2 + 1))
        weights = torch.softmax(q[0, 0, row] @ k[0, 0, keys].T / 8**0.5, dim=-1)
        torch.testing.assert_close(out[0, 0, row], weights @ v[0, 0, keys], atol=1e-5, rtol=0)


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


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_topk_extra_memory_is_chunk_times_n_not_n_squared(monkeypatch):
    """n = 16384, one head: n² float32 scores would be 1 GiB; the chunked kernel stays far below.

    The score budget is lowered to 16 MiB so that the bound is tight at a quick size.
    """
    budget = 1 << 22
    monkeypatch.setattr(topk, "SCORE_BUDGET", budget)
    n = 1 << 14
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 8, generator=generator) for _ in range(3))
    with PeakResidentMemory() as peak:
        out = attend(q, k, v, AttentionSpec("topk", top_k=8))
    limit = 3 * budget * 4 + 16 * q.nbytes  # the score chunk, its by-products, the O(n) rest
    assert limit < n * n * 4 / 4
    assert peak.extra_bytes < limit
    assert not out.isnan().any()
