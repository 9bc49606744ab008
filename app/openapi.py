"""The OpenAPI schema, completed with what only the loaded model knows, so that it tells the
truth about what is accepted: the prompt names, the vocabulary's last token id, the dimension.

Fields carry an `x-longenc` marker (app.schemas) saying which fact they need.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.schemas import UNSCHEMATIZED_RULES

DESCRIPTION = "Rules the schema cannot state (each refused with a 422 naming it):\n" + "".join(
    f"- {rule}\n" for rule in UNSCHEMATIZED_RULES.values()
)


def install_openapi(app: FastAPI) -> None:
    """`app.openapi()` returns the completed schema once the model is loaded (cached then)."""
    generic: dict[str, Any] | None = None
    completed: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal generic, completed
        if generic is None:
            generic = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=DESCRIPTION,
                routes=app.routes,
            )
        encoder = getattr(app.state, "encoder", None)
        if encoder is None:
            return generic
        if completed is None:
            completed = copy.deepcopy(generic)
            facts = {
                "prompt-name": sorted(encoder.prompts),
                "token-id": encoder.config.vocab_size - 1,
                "dimensions": encoder.dim,
                "inputs": app.state.settings.max_inputs_per_request,
            }
            _complete(completed, facts)
        return completed

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(node: Any, facts: dict[str, Any]) -> None:
    """Walk the schema and fill every marked field with its fact, in place."""
    if isinstance(node, list):
        for item in node:
            _complete(item, facts)
        return
    if not isinstance(node, dict):
        return
    marker = node.get("x-longenc")
    if marker == "prompt-name":
        node.pop("anyOf", None)
        node.pop("type", None)
        node["anyOf"] = [{"type": "string", "enum": facts["prompt-name"]}, {"type": "null"}]
    elif marker == "token-id":
        node["maximum"] = facts["token-id"]
    elif marker == "inputs":
        node["maxItems"] = facts["inputs"]
    elif marker == "dimensions":
        for branch in node.get("anyOf", [node]):
            if branch.get("type") == "integer":
                branch["maximum"] = facts["dimensions"]
    for value in node.values():
        _complete(value, facts)
