"""Per-layer attention: each layer's native pattern, and what a request's pattern makes of it.

Rule (DESIGN §3). A global layer (every layer of BERT, NomicBert, GTE, jina) runs the requested
pattern. A local layer (ModernBERT's sliding-window layers) keeps its trained window unless the
requested pattern is narrower, where "narrower" means a `sliding_window` with a smaller window
or a `block` with a smaller block_size than the local window w: both then reach fewer than the
w + 1 keys the trained window reaches. `dense`, and every other mode, leave local layers as
trained, so `dense` reproduces the model exactly as it was trained.
"""

from __future__ import annotations

from sparse_core import AttentionSpec

DENSE = AttentionSpec("dense")
# mode -> the parameter that bounds how far a query reaches (its span).
SPANS = {"sliding_window": "window", "block": "block_size"}


def native_patterns(local_layers: tuple[bool, ...], window: int | None) -> list[AttentionSpec]:
    """Each layer's trained pattern: sliding_window(window) where local, dense where global."""
    local = AttentionSpec("sliding_window", window=window) if any(local_layers) else None
    return [local if is_local else DENSE for is_local in local_layers]


def narrower(requested: AttentionSpec, native: AttentionSpec) -> bool:
    """Whether requested reaches fewer keys than native, a local layer's sliding window."""
    if requested.mode not in SPANS:
        return False
    return getattr(requested, SPANS[requested.mode]) < native.window


def layer_specs(native: list[AttentionSpec], requested: AttentionSpec) -> list[AttentionSpec]:
    """The spec each layer runs for a request (see the module docstring for the rule)."""
    return [
        requested if layer == DENSE or narrower(requested, layer) else layer for layer in native
    ]
