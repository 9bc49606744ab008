"""Attention kernels: pure tensor functions, one module per mode, plus the float64 oracle.

from sparse_core import AttentionSpec, attend
out = attend(q, k, v, AttentionSpec("sliding_window", window=512), lengths=None)

Layout: `mode.py` (what a mode and a parameter are), `registry.py` (the mode table), one module
per mode (`dense.py` … `nystrom.py`), the pattern engine (`pattern.py`: predicates and key-block
lists, `patterns/`: the primitives modes are unions of, `executor.py`: the CPU block-sparse
executor, `flex.py`: FlexAttention BlockMasks on CUDA, `engine.py`: which of the two runs) and
`reference.py` (the oracle, for tests). On CPU, global_window, strided, fixed and dilated run
their own paths on strided views (`_views.py`), merging disjoint key sets by their log-sum-exp
(`_lse.py`); bigbird and routing run the executor.
"""

from sparse_core.attend import attend
from sparse_core.flex import reuse_block_masks
from sparse_core.mode import Mode, Param
from sparse_core.pattern import BlockLists, Pattern
from sparse_core.reference import reference_attend
from sparse_core.registry import MODES
from sparse_core.spec import AttentionSpec

__all__ = [
    "MODES",
    "AttentionSpec",
    "BlockLists",
    "Mode",
    "Param",
    "Pattern",
    "attend",
    "reference_attend",
    "reuse_block_masks",
]
