"""README.md documents every setting the server reads, and no setting it does not."""

from __future__ import annotations

import re

from tests.deploy.files import README


def test_environment_table_lists_every_setting() -> None:
    from app.settings import Settings

    settings = {f"LONGENC_{name.upper()}" for name in Settings.model_fields}
    table_rows = re.findall(r"^\| `(LONGENC_\w+)` \|", README.read_text(), re.MULTILINE)
    assert len(table_rows) == len(set(table_rows)), "a variable listed twice"
    assert set(table_rows) == settings
