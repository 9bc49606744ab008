"""The mode table: one entry per attention mode, keyed by the name used in requests."""

from __future__ import annotations

from sparse_core import block, dense, sliding_window, topk
from sparse_core.mode import Mode

MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        dense.MODE,
        block.MODE,
        sliding_window.MODE,
        topk.MODE,
    )
}
