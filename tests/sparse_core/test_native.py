"""Loading the C++ kernels (a build lock left by a killed process must not hang every later load),
and which tensors they are offered."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import torch

from sparse_core import _native
from tests.sparse_core.test_tiling import require_native


def never_sleep(seconds: float) -> None:
    raise AssertionError(f"waited {seconds} s")


def test_a_stale_build_lock_is_removed_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(_native.time, "sleep", never_sleep)
    lock = tmp_path / "lock"
    lock.touch()
    old = time.time() - _native.STALE_LOCK_S - 1
    os.utime(lock, (old, old))
    _native._clear_stale_lock(tmp_path)
    assert not lock.exists()


def test_a_live_build_lock_is_waited_for_and_left_to_its_owner(tmp_path):
    """Another process building: its lock goes away when it is done, and nobody else's."""
    lock = tmp_path / "lock"
    lock.touch()
    released = threading.Timer(0.3, lock.unlink)
    released.start()
    started = time.monotonic()
    _native._clear_stale_lock(tmp_path, stale_after=60)
    assert time.monotonic() - started >= 0.25
    released.join()


def test_a_lock_that_never_goes_away_is_removed_once_stale(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    started = time.monotonic()
    _native._clear_stale_lock(tmp_path, stale_after=0.5)
    assert not lock.exists()
    assert 0.4 <= time.monotonic() - started < 30


def checkout(root, sources):
    """A copy of `sources` under `root`, as another checkout of the project holds them."""
    root.mkdir()
    for path in sources:
        shutil.copy(path, root / path.name)
    return [root / path.name for path in sources]


def test_every_checkout_of_the_same_sources_compiles_one_staged_copy(tmp_path, monkeypatch):
    # torch's ninja file names the sources' paths: compiled from each checkout's own tree, the
    # library was rebuilt whenever another checkout had built it last.
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    loads = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: loads.append(kwargs))
    originals = {path.name: path.read_bytes() for path in _native.SOURCES + _native.HEADERS}
    stamps = []
    for tree in ("one", "two"):
        monkeypatch.setattr(_native, "SOURCES", checkout(tmp_path / tree, _native.SOURCES))
        monkeypatch.setattr(_native, "HEADERS", checkout(tmp_path / f"{tree}.h", _native.HEADERS))
        assert _native._build()
        staged = Path(loads[-1]["sources"][0]).parent
        stamps.append({path.name: path.stat().st_mtime_ns for path in staged.iterdir()})
    first, second = (load["sources"] for load in loads)
    assert first == second
    assert all(source.startswith(str(tmp_path / "extensions")) for source in first)
    # every source and header beside each other, as the sources include them, unchanged
    assert {path.name: path.read_bytes() for path in staged.iterdir()} == originals
    assert stamps[0] == stamps[1]  # the second checkout rewrote nothing: ninja keeps its build


def test_loading_the_kernels_survives_a_lock_left_by_a_killed_build():
    """torch waits on its build lock with no time limit: without the check, this load would
    never return (it runs in a thread, so that a regression fails here instead of hanging)."""
    require_native()  # built once already, so the load below only checks and loads
    from torch.utils import cpp_extension

    directory = cpp_extension._get_build_directory(_native.library_name(), False)
    lock = os.path.join(directory, "lock")
    with open(lock, "w"):
        pass
    old = time.time() - _native.STALE_LOCK_S - 1
    os.utime(lock, (old, old))
    try:
        loaded: list[bool] = []
        loader = threading.Thread(target=lambda: loaded.append(_native._build()), daemon=True)
        loader.start()
        loader.join(timeout=300)
        assert loaded == [True], "the load waited on the stale lock"
        assert not os.path.exists(lock)
    finally:
        if os.path.exists(lock) and not loaded:
            os.unlink(lock)  # leave no lock behind for the rest of the run


def test_no_lock_returns_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(_native.time, "sleep", never_sleep)
    _native._clear_stale_lock(tmp_path)
    assert not (tmp_path / "lock").exists()


def test_block_attention_is_offered_only_when_every_tensor_is_float32_on_cpu():
    """The kernel reads every tensor as float32: one bfloat16 k or v among float32 q and out
    means the torch path (the check used to look at the first tensor only)."""
    require_native()
    q, k, v, out = (torch.zeros(2, 16, 8) for _ in range(4))
    assert _native.block_attention_for(q, k, v, out) is not None
    assert _native.block_attention_for(q, k.bfloat16(), v, out) is None
    assert _native.block_attention_for(q, k, v, out.bfloat16()) is None
