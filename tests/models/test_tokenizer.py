"""Tokenization: special tokens included, no cut at 512 unless max_tokens asks for one."""

from __future__ import annotations

import pytest

from models import Encoder
from tests.models.conftest import long_text

CLS, SEP = 101, 102


def test_long_text_is_not_cut_at_512(encoder: Encoder) -> None:
    (ids,) = encoder.tokenize([long_text()])
    assert len(ids) > 2000
    assert ids[0] == CLS and ids[-1] == SEP and SEP not in ids[1:-1]


def test_max_tokens_cuts_and_keeps_the_closing_sep(encoder: Encoder) -> None:
    text = long_text()
    (full,) = encoder.tokenize([text])
    (cut,) = encoder.tokenize([text], max_tokens=100)
    assert cut == full[:99] + [SEP]
    short = encoder.tokenize(["a short text"], max_tokens=100)
    assert short == encoder.tokenize(["a short text"])


def test_max_tokens_below_two_is_refused(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        encoder.tokenize(["text"], max_tokens=1)
