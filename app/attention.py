"""The `attention` field of requests and settings, built generically from `sparse_core.MODES`.

A choice is either an `AttentionSpec` or `"auto"`: dense while the request's longest input fits
the model's native position table, a sliding window beyond it. Adding a mode to the table needs
no change here: parsing goes through `AttentionSpec.from_dict`, the JSON schema is read from the
table.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

from sparse_core import MODES, AttentionSpec

AUTO: Literal["auto"] = "auto"
AttentionChoice = AttentionSpec | Literal["auto"]


def parse_attention(value: Any) -> AttentionChoice:
    """`{"mode": ..., **params}`, an AttentionSpec, a bare mode name or "auto" -> a choice.

    A string holding a JSON object is parsed first (the settings form). Raises ValueError with
    sparse_core's message for an unknown mode or a missing, invalid or extra parameter.
    """
    if isinstance(value, AttentionSpec):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"attention is not valid JSON: {error.msg}") from None
        else:
            value = {"mode": text}
    if not isinstance(value, dict):
        raise ValueError(
            'attention must be an object like {"mode": "sliding_window", "window": 512}'
        )
    if value.get("mode") == AUTO:
        if len(value) > 1:
            extra = ", ".join(sorted(set(value) - {"mode"}))
            raise ValueError(f"mode 'auto' takes no parameters, got {extra}")
        return AUTO
    return AttentionSpec.from_dict(_json_integers(value))


def _json_integers(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON has one number type: 512.0 is the integer 512 to a JSON schema, so it is to an
    integer parameter here too (sparse_core itself takes Python ints only)."""
    mode = MODES.get(fields.get("mode")) if isinstance(fields.get("mode"), str) else None
    if mode is None:
        return fields
    integers = {param.name for param in mode.params if param.kind is int}
    return {
        name: json_integer(value) if name in integers else value for name, value in fields.items()
    }


def json_integer(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer: 3.0 becomes 3, anything else stays as it is (for
    the field's own check to accept or refuse)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def attention_to_dict(choice: AttentionChoice) -> dict[str, Any]:
    return {"mode": AUTO} if choice == AUTO else choice.to_dict()


def resolve_attention(
    choice: AttentionChoice, longest: int, native_length: int, auto_window: int
) -> AttentionSpec:
    """The spec a request runs with: `auto` -> dense up to native_length tokens, else a window."""
    if choice != AUTO:
        return choice
    if longest <= native_length:
        return AttentionSpec("dense")
    return AttentionSpec("sliding_window", window=auto_window)


def attention_json_schema() -> dict[str, Any]:
    """One JSON-schema alternative per mode of the table, plus `auto`."""
    alternatives: list[dict[str, Any]] = [
        {
            "title": "auto",
            "type": "object",
            "properties": {"mode": {"const": AUTO}},
            "required": ["mode"],
            "additionalProperties": False,
            "description": "dense up to the model's native length, sliding_window beyond",
        }
    ]
    for mode in MODES.values():
        properties: dict[str, Any] = {"mode": {"const": mode.name}}
        for param in mode.params:
            schema = param.json_schema()
            if not param.required:  # null, like leaving it out, takes the default
                schema = {
                    "anyOf": [schema, {"type": "null"}],
                    "default": schema.pop("default"),
                    "description": schema.pop("description"),
                }
            properties[param.name] = schema
        alternatives.append(
            {
                "title": mode.name,
                "type": "object",
                "properties": properties,
                "required": ["mode", *(param.name for param in mode.params if param.required)],
                "additionalProperties": False,
                "description": mode.description,
            }
        )
    return {"oneOf": alternatives, "examples": [{"mode": "sliding_window", "window": 512}]}


# The pydantic field type: validated by sparse_core, serialized back to its dict form.
Attention = Annotated[
    AttentionChoice,
    PlainValidator(parse_attention),
    PlainSerializer(attention_to_dict, return_type=dict),
    WithJsonSchema(attention_json_schema()),
]
