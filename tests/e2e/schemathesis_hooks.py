"""schemathesis hooks for the fuzz test (loaded through SCHEMATHESIS_HOOKS).

`valid_data_accepted_unless_unschematized` stands in for schemathesis's positive_data_acceptance:
a request valid per the schema must get a 2xx, except for a 422 that names one of the rules
JSON Schema cannot state (app.schemas.UNSCHEMATIZED_RULES: rules between two fields, or counted
in tokens), which the published schema's description lists.
"""

from __future__ import annotations

import json

import schemathesis

from app.schemas import UNSCHEMATIZED_RULES


@schemathesis.check
def valid_data_accepted_unless_unschematized(ctx, response, case) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return
    if response.status_code == 422:
        error = json.loads(response.content)["error"]
        message = error["message"] if isinstance(error, dict) else error
        if any(rule in message for rule in UNSCHEMATIZED_RULES):
            return
    raise AssertionError(
        f"Valid data should have been accepted: {response.status_code} {response.content[:500]!r}"
    )
