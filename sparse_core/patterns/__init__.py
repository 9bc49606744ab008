"""The pattern primitives the mask modes are unions of, one module each.

`Band` (sliding windows, blocks, BigBird's window), `Global` (Longformer's and BigBird's global
tokens or blocks), `Dilated`, `Strided` (Sparse Transformer's strided), `Summary` (Sparse
Transformer's fixed summary columns) and `BlockTable` (per-block key-block sets: BigBird's random
blocks, routing's chosen blocks).
"""

from sparse_core.patterns.band import Band
from sparse_core.patterns.dilated import Dilated
from sparse_core.patterns.global_blocks import Global
from sparse_core.patterns.strided import Strided
from sparse_core.patterns.summary import Summary
from sparse_core.patterns.table import BlockTable

__all__ = ["Band", "BlockTable", "Dilated", "Global", "Strided", "Summary"]
