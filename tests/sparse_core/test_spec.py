"""AttentionSpec and the mode table: each bad spec raises ValueError naming the field and the
rule (never TypeError, which the service would answer with a 500); defaults resolve; costs."""

from __future__ import annotations

import math

import pytest

from sparse_core import MODES, AttentionSpec, Param


@pytest.mark.parametrize(
    ("mode", "params", "names"),
    [
        ("flash", {}, ["unknown attention mode", "'flash'", "sliding_window"]),
        ("block", {}, ["'block_size'"]),
        ("block", {"block_size": 0}, ["'block_size'", "1 <= value"]),
        ("block", {"block_size": 2.5}, ["'block_size'", "integer"]),
        ("block", {"block_size": 2.0}, ["'block_size'", "integer"]),
        ("block", {"block_size": True}, ["'block_size'", "integer"]),
        ("block", {"block_size": "8"}, ["'block_size'", "integer"]),
        ("block", {"block_size": [8]}, ["'block_size'", "integer"]),
        ("block", {"block_size": {"a": 1}}, ["'block_size'", "integer"]),
        ("block", {"block_size": 2**20 + 1}, ["'block_size'", "value <= 1048576"]),
        ("block", {"block_size": 10**30}, ["'block_size'", "value <= 1048576"]),
        ("sliding_window", {}, ["'window'"]),
        ("sliding_window", {"window": 3}, ["'window'", "even"]),
        ("sliding_window", {"window": 0}, ["'window'", "2 <= value"]),
        ("sliding_window", {"window": -4}, ["'window'", "2 <= value"]),
        ("topk", {"top_k": 0}, ["'top_k'", "1 <= value"]),
        ("topk", {}, ["'top_k'"]),
        ("dense", {"window": 4}, ["does not take window", "no parameters"]),
        ("block", {"block_size": 4, "top_k": 2}, ["does not take top_k", "block_size"]),
        ("global_window", {"window": 8, "global_tokens": -1}, ["'global_tokens'", "0 <= value"]),
        ("dilated", {"window": 8}, ["needs 'dilation'"]),
        ("dilated", {"window": 8, "dilation": 1025}, ["'dilation'", "value <= 1024"]),
        ("strided", {"stride": 0}, ["'stride'", "1 <= value"]),
        ("fixed", {"block_size": 4, "summary": 5}, ["'summary'", "at most 'block_size' (4)"]),
        ("fixed", {"block_size": 4, "summary": 0}, ["'summary'", "1 <= value"]),
        ("bigbird", {"block_size": 4, "window_blocks": 2}, ["'window_blocks'", "odd"]),
        ("bigbird", {"block_size": 4, "random_blocks": 65}, ["'random_blocks'", "value <= 64"]),
        ("bigbird", {"block_size": 4, "seed": -1}, ["'seed'", "0 <= value"]),
        ("bigbird", {"block_size": 4, "seed": 2**31}, ["'seed'", "value <= 2147483647"]),
        ("routing", {"block_size": 4, "blocks": -1}, ["'blocks'", "0 <= value"]),
        ("threshold", {}, ["needs 'threshold'"]),
        ("threshold", {"threshold": 0}, ["'threshold'", "0.0 < value <= 1.0"]),
        ("threshold", {"threshold": 0.0}, ["'threshold'", "0.0 < value"]),
        ("threshold", {"threshold": 1.5}, ["'threshold'", "value <= 1.0"]),
        ("threshold", {"threshold": math.nan}, ["'threshold'", "number"]),
        ("threshold", {"threshold": math.inf}, ["'threshold'", "number"]),
        ("threshold", {"threshold": True}, ["'threshold'", "number"]),
        ("threshold", {"threshold": "0.5"}, ["'threshold'", "number"]),
        ("threshold", {"threshold": 10**400}, ["'threshold'", "value <= 1.0"]),
        ("threshold", {"threshold": -(10**400)}, ["'threshold'", "0.0 < value"]),
        ("performer", {"features": 4097}, ["'features'", "value <= 4096"]),
        ("performer", {"features": 0}, ["'features'", "1 <= value"]),
        ("nystrom", {"landmarks": 4097}, ["'landmarks'", "value <= 4096"]),
    ],
)
def test_invalid_spec_raises_value_error_naming_the_field(mode, params, names):
    with pytest.raises(ValueError) as raised:
        AttentionSpec(mode, **params)
    for name in names:
        assert name in str(raised.value)


@pytest.mark.parametrize("mode", [[], {}, 3, None, ("block",), 2.5])
def test_a_mode_that_is_not_a_string_is_a_value_error(mode):
    with pytest.raises(ValueError, match="unknown attention mode"):
        AttentionSpec(mode)
    with pytest.raises(ValueError, match="unknown attention mode"):
        AttentionSpec.from_dict({"mode": mode})


@pytest.mark.parametrize("fields", [[("mode", "dense")], "dense", None, {"mode": "block", 3: 4}])
def test_from_dict_refuses_what_is_not_an_object_of_named_fields(fields):
    with pytest.raises(ValueError):
        AttentionSpec.from_dict(fields)


def test_optional_parameters_resolve_to_their_defaults():
    spec = AttentionSpec("bigbird", block_size=64)
    assert spec.to_dict() == {
        "mode": "bigbird",
        "block_size": 64,
        "window_blocks": 3,
        "global_blocks": 2,
        "random_blocks": 3,
        "seed": 0,
    }
    assert spec == AttentionSpec("bigbird", block_size=64, seed=0)
    assert AttentionSpec("global_window", window=8).global_tokens == 1
    assert AttentionSpec("threshold", threshold=1).threshold == 1.0  # an int is fine for a float
    assert isinstance(AttentionSpec("threshold", threshold=1).threshold, float)


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_mode_builds_from_its_examples_and_round_trips(name):
    mode = MODES[name]
    spec = AttentionSpec(name, **{param.name: param.example for param in mode.params})
    assert AttentionSpec.from_dict(spec.to_dict()) == spec
    assert hash(spec) == hash(AttentionSpec.from_dict(spec.to_dict()))
    assert mode.name == name and mode.description
    for param in mode.params:
        assert param.help and param.check(name, param.example) == param.example


@pytest.mark.parametrize("name", sorted(MODES))
def test_json_schema_states_type_bounds_parity_and_defaults(name):
    for param in MODES[name].params:
        schema = param.json_schema()
        assert schema["type"] == ("integer" if param.kind is int else "number")
        assert schema["maximum"] == param.maximum
        low = "exclusiveMinimum" if param.exclusive_minimum else "minimum"
        assert schema[low] == param.minimum
        assert ("multipleOf" in schema) == param.even
        assert ("default" in schema) == (param.default is not None)
        assert schema["description"] == param.help


def test_a_float_parameter_schema_has_an_exclusive_minimum():
    (threshold,) = MODES["threshold"].params
    assert threshold.json_schema()["exclusiveMinimum"] == 0
    assert "minimum" not in threshold.json_schema()


def test_param_example_defaults_to_64_within_bounds_and_parity():
    assert Param("window", minimum=2, even=True).example == 64
    assert Param("blocks", minimum=1, maximum=9, odd=True).example == 9
    assert Param("count", minimum=0, default=3).example == 3
    with pytest.raises(ValueError):
        Param("broken", minimum=1, maximum=4, example=5)


@pytest.mark.parametrize(
    ("spec", "length", "cost"),
    [
        (AttentionSpec("dense"), 1000, 1000 * 1000),
        (AttentionSpec("topk", top_k=8), 1000, 1000 * 1000),
        (AttentionSpec("threshold", threshold=0.5), 1000, 1000 * 1000),
        (AttentionSpec("performer", features=256), 1000, 1000 * 256),
        (AttentionSpec("nystrom", landmarks=64), 1000, 1000 * 64),
        (AttentionSpec("nystrom", landmarks=4096), 1000, 1000 * 1000),
        (AttentionSpec("block", block_size=64), 1024, 1024 * 64),
        (AttentionSpec("block", block_size=4096), 1000, 1000 * 1000),
        (AttentionSpec("routing", block_size=64, blocks=4), 16384, 16384 * 5 * 64),
        (AttentionSpec("dense"), 0, 0),
    ],
)
def test_cost_by_cost_class(spec, length, cost):
    assert spec.cost(length) == cost


@pytest.mark.parametrize("name", sorted(MODES))
def test_cost_grows_with_length_and_never_exceeds_every_pair(name):
    mode = MODES[name]
    spec = AttentionSpec(name, **{param.name: param.example for param in mode.params})
    costs = [spec.cost(length) for length in (1, 100, 1000, 16384, 65536)]
    assert costs == sorted(costs) and costs[0] >= 1
    for length, cost in zip((1, 100, 1000, 16384, 65536), costs, strict=True):
        if name == "performer":  # φ(Q)(φ(K)ᵀV) costs L·m even where m > L
            assert cost == length * spec.features
        else:
            assert cost <= length * length
    # strided and fixed at 64: their columns fall in every 64-key block the executor lists
    if not mode.pairwise and name not in ("dense", "strided", "fixed"):
        assert spec.cost(65536) < 65536 * 65536 // 8, "a sparse mode at its example costs ~n²"
