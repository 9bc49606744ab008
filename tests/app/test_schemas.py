"""Request bodies: the attention field is validated by sparse_core's mode table."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.attention import AUTO, attention_json_schema, parse_attention, resolve_attention
from app.schemas import EmbeddingsRequest, EncodeRequest
from sparse_core import MODES, AttentionSpec


@pytest.mark.parametrize(
    ("fields", "spec"),
    [
        ({"mode": "dense"}, AttentionSpec("dense")),
        ({"mode": "block", "block_size": 64}, AttentionSpec("block", block_size=64)),
        ({"mode": "sliding_window", "window": 2}, AttentionSpec("sliding_window", window=2)),
        ({"mode": "topk", "top_k": 1}, AttentionSpec("topk", top_k=1)),
    ],
)
def test_every_mode_parses_to_its_spec(fields: dict, spec: AttentionSpec) -> None:
    request = EncodeRequest(inputs="text", attention=fields)
    assert request.attention == spec
    assert request.model_dump()["attention"] == fields


@pytest.mark.parametrize(
    ("attention", "message"),
    [
        ({"mode": "sparse"}, "unknown attention mode 'sparse'; allowed: dense, block"),
        ({"mode": "block"}, "mode 'block' needs 'block_size'"),
        (
            {"mode": "sliding_window", "window": 3},
            "'window' must be an integer, 2 <= value <= 1048576, even",
        ),
        ({"mode": "topk", "top_k": 0}, "'top_k' must be an integer, 1 <= value <= 1048576"),
        ({"mode": "topk", "top_k": "8"}, "'top_k' must be an integer, 1 <= value <= 1048576"),
        ({"mode": "topk", "top_k": True}, "'top_k' must be an integer, 1 <= value <= 1048576"),
        ({"mode": "dense", "window": 8}, "mode 'dense' does not take window"),
        ({"window": 8}, "attention needs 'mode'"),
        ({"mode": "auto", "window": 8}, "mode 'auto' takes no parameters"),
        ([1, 2], "attention must be an object"),
        # unhashable or absurd values: a 422 naming the field, never a TypeError (a 500)
        ({"mode": []}, "unknown attention mode"),
        ({"mode": {}}, "unknown attention mode"),
        ({"mode": "sliding_window", "window": 2**63}, "value <= 1048576"),
        ({"mode": "block", "block_size": 10**30}, "value <= 1048576"),
        ({"mode": "topk", "top_k": [8]}, "'top_k' must be an integer"),
    ],
)
def test_invalid_attention_names_the_problem(attention: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EncodeRequest(inputs="text", attention=attention)


def test_auto_is_dense_up_to_the_native_length_and_a_window_beyond() -> None:
    assert parse_attention({"mode": "auto"}) == AUTO
    assert resolve_attention(AUTO, 512, 512, 256) == AttentionSpec("dense")
    assert resolve_attention(AUTO, 513, 512, 256) == AttentionSpec("sliding_window", window=256)
    block = AttentionSpec("block", block_size=8)
    assert resolve_attention(block, 5000, 512, 256) == block


def test_the_json_schema_lists_every_mode_of_the_table_with_its_parameters() -> None:
    alternatives = {alt["title"]: alt for alt in attention_json_schema()["oneOf"]}
    assert set(alternatives) == {"auto", *MODES}
    for name, mode in MODES.items():
        properties = alternatives[name]["properties"]
        assert set(properties) == {"mode", *(param.name for param in mode.params)}


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "needs at least one input text"),
        ("", "input 0 is an empty string"),
        (["fine", ""], "input 1 is an empty string"),
        (5, "valid string"),
        ([1, 2], "valid string"),
        ("\ud800", "input 0 holds a lone surrogate"),
        (["fine", "a\udc80b"], "input 1 holds a lone surrogate"),
    ],
)
def test_inputs_must_be_non_empty_texts(inputs: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EncodeRequest(inputs=inputs)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="attentoin"):
        EncodeRequest(inputs="text", attentoin={"mode": "dense"})


def test_openai_request_accepts_the_client_fields_and_checks_the_rest() -> None:
    request = EmbeddingsRequest(
        input="text", model="any", encoding_format="base64", dimensions=8, user="u"
    )
    assert request.encoding_format == "base64"
    with pytest.raises(ValidationError, match="encoding_format"):
        EmbeddingsRequest(input="text", encoding_format="int8")
    with pytest.raises(ValidationError, match="dimensions"):
        EmbeddingsRequest(input="text", dimensions=0)
