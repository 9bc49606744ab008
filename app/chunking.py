"""Late pooling: chunk embeddings that carry their document, from one forward pass.

Late chunking (Günther et al. 2024) runs a whole document through the encoder once and averages
each chunk's own token vectors, so every chunk's embedding has seen the text around it.
Two ways in: the request's inputs are the consecutive chunks of one document
(`"late_chunking": true`), or each input is split into windows of a fixed token count
(`"chunking": {"tokens": N, "overlap": M}`). Either way the forward pass returns token vectors
(pooling "none") and `pool_spans` averages them over each chunk's token range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.tokenizer import Tokenized, join

Span = tuple[int, int]  # [start, stop)


@dataclass(frozen=True)
class ChunkPlan:
    """Per forward input, the token ranges whose vectors are averaged into one embedding each,
    and (for chunking) each range's character range in the input's text."""

    tokens: list[list[Span]]
    chars: list[list[Span]] | None  # None for late chunking: the inputs are the chunks
    normalize: bool

    @property
    def count(self) -> int:
        return sum(len(spans) for spans in self.tokens)


@dataclass(frozen=True)
class Chunk:
    embedding: torch.Tensor  # (dim,)
    tokens: Span  # in the input's token ids, special tokens included
    chars: Span  # in the input's text


def late_chunks(parts: list[Tokenized], normalize: bool) -> tuple[list[int], ChunkPlan]:
    """The inputs as consecutive chunks of one document: the joined ids, and a plan that pools
    each input's own tokens."""
    ids, spans = join(parts)
    return ids, ChunkPlan([spans], None, normalize)


def windows(
    part: Tokenized, size: int, overlap: int, text_start: int
) -> tuple[list[Span], list[Span]]:
    """An input's text tokens in windows of `size` tokens, consecutive windows sharing `overlap`
    (the last may be shorter): their token ranges and character ranges. `text_start`: characters
    before the input's own text (a prompt), subtracted from the offsets."""
    first, stop = part.opening, part.text_stop
    if stop == first:  # no text tokens: the special tokens make one chunk
        return [(0, len(part.ids))], [(0, 0)]
    token_spans: list[Span] = []
    char_spans: list[Span] = []
    step = size - overlap
    for start in range(first, stop, step):
        end = min(start + size, stop)
        token_spans.append((start, end))
        chars = (part.offsets[start][0] - text_start, part.offsets[end - 1][1] - text_start)
        char_spans.append((max(0, chars[0]), max(0, chars[1])))
        if end == stop:
            break
    return token_spans, char_spans


def pool_spans(vectors: torch.Tensor, spans: list[Span], normalize: bool) -> list[torch.Tensor]:
    """vectors: (tokens, dim), one input's final token vectors. One (dim,) mean per span."""
    pooled = torch.stack([vectors[start:stop].mean(dim=0) for start, stop in spans])  # (k, dim)
    if normalize:
        pooled = F.normalize(pooled, dim=-1)
    return list(pooled.unbind(0))
