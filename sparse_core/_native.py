"""The optional C++ kernel (`_topk_rows.cpp`), compiled on first use and cached by torch.

`torch.utils.cpp_extension.load` builds it with the machine's C++ compiler and ninja into torch's
extension cache (TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions): about 30 s the first
time, well under a second in later processes. Where it cannot be built (no compiler, no OpenMP),
`topk_rows()` returns None once, with a warning, and callers use their pure-torch path, which gives
the same results more slowly. SPARSE_CORE_NATIVE=0 turns the kernel off.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_topk_rows.cpp")
ENV_SWITCH = "SPARSE_CORE_NATIVE"

_lock = threading.Lock()
_NOT_BUILT = object()
_topk_rows: Callable | None | object = _NOT_BUILT


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def topk_rows() -> Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None:
    """torch.ops.longenc.topk_rows (float32 CPU (rows, n), k) -> (values, indices), or None."""
    global _topk_rows
    if not enabled():
        return None
    with _lock:  # one build per process; torch's file lock covers concurrent processes
        if _topk_rows is _NOT_BUILT:
            _topk_rows = _build()
        return _topk_rows


def _build() -> Callable | None:
    try:
        from torch.utils import cpp_extension

        _put_ninja_on_path()
        cpp_extension.load(
            name="longenc_topk_rows",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-fopenmp"],  # at::parallel_for is OpenMP inside torch
            extra_ldflags=["-fopenmp"],
            is_python_module=False,  # the library registers torch.ops.longenc.*
        )
        return torch.ops.longenc.topk_rows
    except Exception as error:  # no compiler, no ninja, a failed build: fall back, loudly
        logger.warning("C++ top-k selection unavailable, using the torch path: %s", error)
        return None


def _put_ninja_on_path() -> None:
    """The `ninja` wheel's binary sits next to the interpreter, which may not be on PATH."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
