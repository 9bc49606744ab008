"""Tokenization with the `tokenizers` library, from a folder's tokenizer.json, never cut at 512."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tokenizers import Encoding, Tokenizer

Direction = Literal["right", "left"]


class TextTokenizer:
    """Texts -> token ids with the model's special tokens ([CLS] ... [SEP], <s> ... </s>)."""

    def __init__(self, file: Path) -> None:
        if not Path(file).is_file():
            raise FileNotFoundError(f"no tokenizer at {file}")
        self.tokenizer = Tokenizer.from_file(str(file))
        # tokenizer.json often carries the training-time cut (128 or 512) and fixed padding.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def __call__(
        self, texts: list[str], max_tokens: int | None = None, direction: Direction = "right"
    ) -> list[list[int]]:
        """One id list per text, special tokens included.

        With max_tokens, longer inputs are cut to max_tokens ids keeping their special tokens
        ([CLS] ... [SEP]): "right" drops the text's end, "left" its beginning. Without it,
        nothing is cut.
        """
        if max_tokens is not None and max_tokens < 2:
            raise ValueError(f"max_tokens must be an integer >= 2, got {max_tokens}")
        if direction not in ("right", "left"):
            raise ValueError(f"direction must be 'right' or 'left', got {direction!r}")
        encodings = self.tokenizer.encode_batch(list(texts))
        return [truncate(encoding, max_tokens, direction) for encoding in encodings]

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[Tokenized]:
        """Each text's ids with their character ranges, nothing cut."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [tokenized(encoding) for encoding in encodings]

    def tokens(self, texts: list[str], add_special_tokens: bool = True) -> list[list[Token]]:
        """Each text's tokens: id, text, special or not, character range."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [
            [
                Token(id, token, bool(special), *((None, None) if special else offsets))
                for id, token, special, offsets in zip(
                    encoding.ids,
                    encoding.tokens,
                    encoding.special_tokens_mask,
                    encoding.offsets,
                    strict=True,
                )
            ]
            for encoding in encodings
        ]

    def decode(self, ids: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.decode_batch(ids, skip_special_tokens=skip_special_tokens)


def truncate(
    encoding: Encoding, max_tokens: int | None, direction: Direction = "right"
) -> list[int]:
    """The encoding's ids cut to max_tokens, its opening and closing special tokens kept."""
    ids = encoding.ids
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    mask = encoding.special_tokens_mask
    opening = next((index for index, special in enumerate(mask) if not special), len(ids))
    closing = next((index for index, special in enumerate(reversed(mask)) if not special), 0)
    opening = min(opening, max_tokens - 1)
    closing = min(closing, max_tokens - 1 - opening)
    kept = max_tokens - opening - closing  # text tokens that stay
    text = ids[opening : len(ids) - closing]
    text = text[:kept] if direction == "right" else text[len(text) - kept :]
    return ids[:opening] + text + ids[len(ids) - closing :]


@dataclass(frozen=True)
class Token:
    """One token of a text: its id, its text, whether it is a special token, and the
    [start, stop) character range it covers in the text (None for special tokens)."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


@dataclass(frozen=True)
class Tokenized:
    """A text's token ids (special tokens included) with each token's character range, and
    where its text tokens lie: ids[opening : len(ids) - closing]."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    opening: int  # special tokens before the text's tokens ([CLS])
    closing: int  # special tokens after them ([SEP])

    @property
    def text_stop(self) -> int:
        return len(self.ids) - self.closing


def tokenized(encoding: Encoding) -> Tokenized:
    mask = encoding.special_tokens_mask
    opening = next((index for index, special in enumerate(mask) if not special), len(mask))
    closing = next((index for index, special in enumerate(reversed(mask)) if not special), 0)
    return Tokenized(list(encoding.ids), list(encoding.offsets), opening, closing)


def join(parts: list[Tokenized]) -> tuple[list[int], list[tuple[int, int]]]:
    """Consecutive parts of one document as one id list: the first part's opening special
    tokens, every part's text tokens, the last part's closing ones. Returns the ids and each
    part's [start, stop) token range in them."""
    ids = list(parts[0].ids[: parts[0].opening])
    spans = []
    for part in parts:
        start = len(ids)
        ids += part.ids[part.opening : part.text_stop]
        spans.append((start, len(ids)))
    ids += parts[-1].ids[parts[-1].text_stop :]
    return ids, spans
