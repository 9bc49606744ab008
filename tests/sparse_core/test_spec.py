"""AttentionSpec validation: each bad spec raises ValueError naming the field and the rule."""

from __future__ import annotations

import pytest

from sparse_core import AttentionSpec


@pytest.mark.parametrize(
    ("mode", "params", "names"),
    [
        ("flash", {}, ["unknown attention mode", "'flash'", "sliding_window"]),
        ("block", {}, ["'block_size'"]),
        ("block", {"block_size": 0}, ["'block_size'", ">= 1"]),
        ("block", {"block_size": 2.5}, ["'block_size'", "integer"]),
        ("block", {"block_size": True}, ["'block_size'", "integer"]),
        ("sliding_window", {}, ["'window'"]),
        ("sliding_window", {"window": 3}, ["'window'", "even"]),
        ("sliding_window", {"window": 0}, ["'window'", ">= 2"]),
        ("sliding_window", {"window": -4}, ["'window'", ">= 2"]),
        ("topk", {"top_k": 0}, ["'top_k'", ">= 1"]),
        ("topk", {}, ["'top_k'"]),
        ("dense", {"window": 4}, ["does not take window", "no parameters"]),
        ("block", {"block_size": 4, "top_k": 2}, ["does not take top_k", "block_size"]),
    ],
)
def test_invalid_spec_raises_value_error_naming_the_field(mode, params, names):
    with pytest.raises(ValueError) as raised:
        AttentionSpec(mode, **params)
    for name in names:
        assert name in str(raised.value)


@pytest.mark.parametrize(
    ("mode", "params"),
    [
        ("dense", {}),
        ("block", {"block_size": 1}),
        ("sliding_window", {"window": 2}),
        ("topk", {"top_k": 1}),
    ],
)
def test_valid_spec_round_trips(mode, params):
    spec = AttentionSpec(mode, **params)
    assert AttentionSpec.from_dict(spec.to_dict()) == spec
