"""Attention kernels: pure tensor functions, one module per mode, plus the O(n²) oracle.

from sparse_core import AttentionSpec, attend
out = attend(q, k, v, AttentionSpec("sliding_window", window=512), lengths=None)
"""

from sparse_core.attend import attend
from sparse_core.mode import Mode, Param
from sparse_core.reference import reference_attend
from sparse_core.registry import MODES
from sparse_core.spec import AttentionSpec

__all__ = ["MODES", "AttentionSpec", "Mode", "Param", "attend", "reference_attend"]
