"""Truncation keeps the special tokens and cuts the end the request names."""

from __future__ import annotations

from models import load_encoder


def test_right_keeps_the_beginning_and_left_the_end_with_special_tokens_kept() -> None:
    encoder = load_encoder(device="cpu")
    text = "one two three four five six seven"
    whole = encoder.tokenize([text])[0]  # [CLS] 7 words [SEP]
    right = encoder.tokenize([text], 5, direction="right")[0]
    left = encoder.tokenize([text], 5, direction="left")[0]
    assert right == whole[:4] + whole[-1:]
    assert left == whole[:1] + whole[-4:]
    assert encoder.tokenize([text], 100, direction="left")[0] == whole
