"""The mode table: one entry per attention mode, keyed by the name used in requests."""

from __future__ import annotations

from sparse_core import (
    bigbird,
    block,
    dense,
    dilated,
    fixed,
    global_window,
    nystrom,
    performer,
    routing,
    sliding_window,
    strided,
    threshold,
    topk,
)
from sparse_core.mode import Mode

MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        dense.MODE,
        block.MODE,
        sliding_window.MODE,
        topk.MODE,
        global_window.MODE,
        dilated.MODE,
        strided.MODE,
        fixed.MODE,
        bigbird.MODE,
        routing.MODE,
        threshold.MODE,
        performer.MODE,
        nystrom.MODE,
    )
}
