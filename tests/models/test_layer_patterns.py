"""Per-layer attention on a model with its own pattern (ModernBERT: global, local, local).

`dense` runs each layer as trained; a requested pattern replaces the global layers' attention;
local layers keep their window unless the request is narrower. Checked on the spec every
layer hands to sparse_core (the kernel that runs is the spec's mode's kernel), and on outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import models.attention
from models import Encoder, load_encoder
from models.patterns import layer_specs, narrower, native_patterns
from sparse_core import AttentionSpec
from tests.models.tiny_archs import WINDOW, save_tiny

LOCAL = AttentionSpec("sliding_window", window=WINDOW)
DENSE = AttentionSpec("dense")


@pytest.fixture(scope="module")
def modernbert(tmp_path_factory: pytest.TempPathFactory) -> Encoder:
    folder: Path = tmp_path_factory.mktemp("modernbert")
    save_tiny("modernbert", folder)
    return load_encoder(folder, device="cpu")


def specs_run(encoder: Encoder, monkeypatch: pytest.MonkeyPatch, spec: AttentionSpec) -> list:
    """The spec each attention call received during one forward pass of a 40-token input."""
    seen: list[AttentionSpec] = []
    attend = models.attention.attend

    def spy(q, k, v, layer_spec, lengths):
        seen.append(layer_spec)
        return attend(q, k, v, layer_spec, lengths)

    monkeypatch.setattr(models.attention, "attend", spy)
    encoder.encode_ids([[2, *range(10, 48), 3]], spec)
    monkeypatch.undo()
    return seen


def test_native_patterns_are_reported_per_layer(modernbert: Encoder) -> None:
    assert modernbert.native_layer_patterns == [
        {"mode": "dense"},
        {"mode": "sliding_window", "window": WINDOW},
        {"mode": "sliding_window", "window": WINDOW},
    ]
    assert modernbert.position_embedding == "rotary"
    assert modernbert.trained_length == modernbert.max_position_embeddings == 64


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        # dense: the model as trained; the local layers really get the window kernel
        (DENSE, [DENSE, LOCAL, LOCAL]),
        # wider than the window, or another mode: only the global layer changes
        (AttentionSpec("sliding_window", window=32), None),
        (AttentionSpec("block", block_size=16), None),
        (AttentionSpec("block", block_size=WINDOW), None),  # equal span is not narrower
        (AttentionSpec("topk", top_k=4), None),
        # narrower than the window: every layer runs it
        (AttentionSpec("sliding_window", window=4), "all"),
        (AttentionSpec("block", block_size=4), "all"),
    ],
    ids=str,
)
def test_each_layer_receives_its_spec(
    modernbert: Encoder, monkeypatch: pytest.MonkeyPatch, requested: AttentionSpec, expected
) -> None:
    if expected is None:
        expected = [requested, LOCAL, LOCAL]
    elif expected == "all":
        expected = [requested] * 3
    assert modernbert.layer_specs(requested) == expected
    assert specs_run(modernbert, monkeypatch, requested) == expected


def test_the_local_window_changes_the_output(modernbert: Encoder) -> None:
    """Native dense (windowed local layers) differs from every layer dense: the window is real,
    and inputs within one window are the same either way."""
    long, short = [2, *range(10, 60), 3], [2, 11, 12, 3]
    native = modernbert.encode_ids([long, short], DENSE)
    model = modernbert.model
    model.native, saved = native_patterns((False,) * 3, None), model.native
    try:
        all_dense = modernbert.encode_ids([long, short], DENSE)
    finally:
        model.native = saved
    assert (native[0] - all_dense[0]).abs().max() > 1e-3
    torch.testing.assert_close(native[1], all_dense[1], atol=1e-6, rtol=0)


def test_narrower_is_a_smaller_span_of_sliding_window_or_block() -> None:
    trained = AttentionSpec("sliding_window", window=128)
    assert narrower(AttentionSpec("sliding_window", window=126), trained)
    assert not narrower(AttentionSpec("sliding_window", window=128), trained)
    assert narrower(AttentionSpec("block", block_size=64), trained)
    assert not narrower(AttentionSpec("block", block_size=128), trained)
    assert not narrower(AttentionSpec("topk", top_k=1), trained)  # not a span: keeps the window
    assert not narrower(DENSE, trained)


def test_models_without_local_layers_run_the_request_everywhere() -> None:
    native = native_patterns((False, False), None)
    block = AttentionSpec("block", block_size=16)
    assert layer_specs(native, block) == [block, block]
    assert layer_specs(native, DENSE) == [DENSE, DENSE]


def test_every_layer_of_a_forward_pass_shares_one_block_mask_scope(encoder, monkeypatch):
    """Each layer's attention runs inside one reuse_block_masks() scope per forward pass (the
    same dict for all layers), so that on CUDA a spec's FlexAttention mask is built once."""
    import sparse_core.flex

    monkeypatch.setattr(encoder, "graphs", None)  # the eager pass, whose layers call attend
    scopes: list[int | None] = []
    attend = models.attention.attend

    def recording(q, k, v, spec, lengths):
        scope = sparse_core.flex._reused.get()
        scopes.append(None if scope is None else id(scope))
        return attend(q, k, v, spec, lengths)

    monkeypatch.setattr(models.attention, "attend", recording)
    encoder.encode(["one short text", "and another, a little longer"])
    layers = encoder.config.num_hidden_layers
    assert len(scopes) == layers and scopes[0] is not None and len(set(scopes)) == 1
    assert sparse_core.flex._reused.get() is None  # left when the pass ends
