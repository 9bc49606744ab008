"""Tokenization with the `tokenizers` library, from a folder's tokenizer.json, never cut at 512."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Encoding, Tokenizer


class TextTokenizer:
    """Texts -> token ids with the model's special tokens ([CLS] ... [SEP], <s> ... </s>)."""

    def __init__(self, file: Path) -> None:
        if not Path(file).is_file():
            raise FileNotFoundError(f"no tokenizer at {file}")
        self.tokenizer = Tokenizer.from_file(str(file))
        # tokenizer.json often carries the training-time cut (128 or 512) and fixed padding.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def __call__(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """One id list per text, special tokens included.

        With max_tokens, longer inputs are cut to max_tokens ids keeping their closing special
        token(s) ([SEP]); without it, nothing is cut.
        """
        if max_tokens is not None and max_tokens < 2:
            raise ValueError(f"max_tokens must be an integer >= 2, got {max_tokens}")
        encodings = self.tokenizer.encode_batch(list(texts))
        return [truncate(encoding, max_tokens) for encoding in encodings]


def truncate(encoding: Encoding, max_tokens: int | None) -> list[int]:
    ids = encoding.ids
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    closing = 0  # special tokens at the end, kept after the cut
    for is_special in reversed(encoding.special_tokens_mask):
        if not is_special:
            break
        closing += 1
    closing = min(closing, max_tokens - 1)
    return ids[: max_tokens - closing] + ids[len(ids) - closing :]
