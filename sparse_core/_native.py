"""The optional C++ kernels (`_topk_rows.cpp`, `_threshold_columns.cpp`, `_block_attention.cpp`),
compiled on first use into one library and cached by torch.

`torch.utils.cpp_extension.load` builds it with the machine's C++ compiler and ninja into torch's
extension cache (TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions): about 30 s the first
time, well under a second in later processes. The sources are compiled from a copy in the
library's build directory, so that every checkout of the same sources (a clone, a worktree, a
benchmark's export of another revision) shares one build: torch's ninja file names the sources'
paths, and compiling each checkout from its own tree rebuilt the library whenever another
checkout had built it last. Where it cannot be built (no compiler, no OpenMP),
`topk_rows()`, `threshold_columns()` and `block_attention()` return None, with one warning, and
callers use their pure-torch paths, which give the same results more slowly.
SPARSE_CORE_NATIVE=0 turns the kernels off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCES = [
    Path(__file__).with_name(name)
    for name in ("_topk_rows.cpp", "_threshold_columns.cpp", "_block_attention.cpp")
]
# Included by a source; torch rebuilds when a listed source changes, so the library's name carries
# a digest of every file instead.
HEADERS = [
    Path(__file__).with_name(name)
    for name in ("_vector_exp.h", "_threshold_passes.h", "_block_attention_tile.h")
]
ENV_SWITCH = "SPARSE_CORE_NATIVE"
# torch's build lock (a `lock` file in the build directory) is held while a process checks or
# builds the library, and every other process waits while it exists, with no time limit. A
# process killed meanwhile (SIGKILL, a timeout, the OOM killer) leaves it behind, and every later
# load would wait forever. A build takes a minute at most here; a lock older than this is stale.
STALE_LOCK_S = 300.0

_lock = threading.Lock()
_NOT_BUILT = object()
_library: bool | object = _NOT_BUILT  # whether torch.ops.longenc holds the kernels


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def topk_rows() -> Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None:
    """torch.ops.longenc.topk_rows (float32 CPU (rows, n), k) -> (values, indices), or None."""
    return torch.ops.longenc.topk_rows if _built() else None


def threshold_columns() -> Callable[[torch.Tensor, float], torch.Tensor] | None:
    """torch.ops.longenc.threshold_columns_ (contiguous float32 CPU (groups, n, c), log_cut <= 0)
    -> each column's weight sum (groups, c), the columns overwritten by their weights; or None."""
    return torch.ops.longenc.threshold_columns_ if _built() else None


def block_attention() -> Callable[..., None] | None:
    """torch.ops.longenc.block_attention_ (q, k, v, out: float32 CPU (H, n, D) rows of one
    sequence; heads (G,) or empty; query_blocks (G,); key_blocks (G, c); block_size; length;
    scale; portable=False; half_window=-1; lse=None) -> None, the rows of each item's query
    block in `out` written with attention over its key blocks' rows (every pair, or with
    half_window >= 0 those with |i - j| <= half_window), and their log-sum-exp in `lse` (H, n)
    float32 if given; no row at or past `length` read or written; or None."""
    return torch.ops.longenc.block_attention_ if _built() else None


def block_attention_for(*tensors: torch.Tensor) -> Callable[..., None] | None:
    """block_attention() when it can take these tensors (float32 on CPU, each row contiguous,
    any other strides), else None."""
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
        return None
    if any(t.stride(-1) != 1 for t in tensors):
        return None
    return block_attention()


def _built() -> bool:
    global _library
    if not enabled():
        return False
    with _lock:  # one build per process; torch's file lock covers concurrent processes
        if _library is _NOT_BUILT:
            _library = _build()
        return bool(_library)


def _build() -> bool:
    try:
        from torch.utils import cpp_extension

        _put_ninja_on_path()
        directory = Path(cpp_extension._get_build_directory(library_name(), False))
        _clear_stale_lock(directory)
        cpp_extension.load(
            name=library_name(),
            sources=_staged_sources(directory),
            # at::parallel_for is OpenMP inside torch; a * b + c as one FMA where the target has it
            extra_cflags=["-O3", "-fopenmp", "-ffp-contract=fast"],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,  # the library registers torch.ops.longenc.*
        )
        return True
    except Exception as error:  # no compiler, no ninja, a failed build: fall back, loudly
        logger.warning("C++ kernels unavailable, using the torch paths: %s", error)
        return False


def _clear_stale_lock(directory: Path, stale_after: float = STALE_LOCK_S) -> None:
    """Waits while `directory`'s build lock is younger than `stale_after` seconds (another
    process is building), then removes it if it is still there (its owner died)."""
    lock = directory / "lock"
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age >= stale_after:
            logger.warning("removing a stale build lock, %.0f s old: %s", age, lock)
            lock.unlink(missing_ok=True)
            return
        time.sleep(min(1.0, stale_after - age))


def _staged_sources(directory: Path) -> list[str]:
    """SOURCES and HEADERS copied into `directory`/src (written only where missing or different,
    atomically, so that concurrent processes and unchanged mtimes keep ninja's build): the
    sources' paths there."""
    staged = directory / "src"
    staged.mkdir(parents=True, exist_ok=True)
    for path in SOURCES + HEADERS:
        target, content = staged / path.name, path.read_bytes()
        if not target.exists() or target.read_bytes() != content:
            partial = staged / f".{path.name}.{os.getpid()}.{threading.get_ident()}"
            partial.write_bytes(content)
            os.replace(partial, target)
    return [str(staged / path.name) for path in SOURCES]


def library_name() -> str:
    """The extension's name (and its .so's stem): longenc_native_ + a digest of every source."""
    hashed = hashlib.sha256()
    for path in SOURCES + HEADERS:
        hashed.update(path.read_bytes())
    return f"longenc_native_{hashed.hexdigest()[:12]}"


def _put_ninja_on_path() -> None:
    """The `ninja` wheel's binary sits next to the interpreter, which may not be on PATH."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
