"""Settings come from LONGENC_* variables and are checked at startup."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.attention import AUTO
from app.settings import Settings
from sparse_core import AttentionSpec


def test_defaults_serve_auto_attention_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LONGENC_HOST", "LONGENC_PORT", "LONGENC_DEFAULT_ATTENTION", "LONGENC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.default_attention == AUTO
    assert settings.api_key is None


def test_values_are_read_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGENC_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("LONGENC_BATCH_WAIT_MS", "0.5")
    monkeypatch.setenv("LONGENC_API_KEY", "s3cret")
    monkeypatch.setenv("LONGENC_DEFAULT_ATTENTION", '{"mode": "sliding_window", "window": 128}')
    settings = Settings()
    assert settings.max_batch_size == 7
    assert settings.batch_wait_ms == 0.5
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.default_attention == AttentionSpec("sliding_window", window=128)


def test_a_bare_mode_name_is_a_default_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGENC_DEFAULT_ATTENTION", "dense")
    assert Settings().default_attention == AttentionSpec("dense")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("default_attention", '{"mode": "sliding_window", "window": 7}', "'window' must be"),
        ("default_attention", "blocky", "unknown attention mode 'blocky'"),
        ("default_attention", "block", "needs 'block_size'"),
        ("position_extension", "mirror", "allowed: copy, interpolate"),
        ("auto_window", "7", "multiple of 2"),
        ("max_batch_size", "0", "greater than or equal to 1"),
        ("loop", "tokio", "'auto', 'asyncio' or 'uvloop'"),
        ("http", "h2", "'auto', 'h11' or 'httptools'"),
    ],
)
def test_invalid_values_are_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"LONGENC_{field.upper()}", value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_a_request_may_not_hold_more_inputs_than_the_queue() -> None:
    with pytest.raises(ValidationError, match="could never be queued"):
        Settings(queue_size=4, max_inputs_per_request=5)


def test_an_empty_api_key_is_refused_at_startup() -> None:
    """LONGENC_API_KEY= (set, empty) would lock every client out, or let in any empty token."""
    with pytest.raises(ValidationError, match="api_key"):
        Settings(api_key="")
