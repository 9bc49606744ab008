"""Chunk retrieval: late chunking vs chunks embedded alone vs one vector per document.

    python -m benchmarks.chunk_retrieval           # full run (CPU, float32; ~10 min on 2 cores)
    python -m benchmarks.chunk_retrieval --quick   # smoke run: 2,048 tokens, 3 documents

Writes chunk_retrieval.json and chunk_retrieval.md (the table) to benchmarks/results/, or for
--quick to a folder under the system's temporary directory (--out overrides either).

Method
- Corpus: the real English texts of benchmarks.fidelity (licenses, the Python language reference
  as pydoc ships it, stdlib docstrings), tokenized once with offsets. At 2,048 and 8,192 tokens a
  document is one text cut to its first n tokens ([CLS] ... [SEP] included). No text reaches
  32,768 tokens, so there a document is consecutive texts of one source (in fidelity's order)
  joined as the service joins late-chunking inputs (`models.tokenizer.join`) and cut to n.
  Up to DOCUMENTS[n] documents per length, taken from the sources in turn.
- Chunks: each document's text tokens in consecutive CHUNK-token windows, no overlap, planned by
  the service's own `app.chunking.windows`.
- Methods, all with the bundled all-MiniLM-L6-v2 in float32:
  "late chunks": one forward pass over the whole document (sliding_window, window 512), each
  chunk the mean of its own tokens' final vectors (`app.chunking.pool_spans`, normalized), as the
  server's `"chunking"` option computes it. "independent chunks": each chunk's ids wrapped in
  their own [CLS] ... [SEP] and embedded alone (dense, mean pooling). "document vector": the mean
  of all token vectors of the same whole-document pass (the model's mean pooling). At 2,048 tokens
  late chunks and the document vector are also run with dense attention, as a reference.
  Beyond 512 tokens the model reads its learned position table through the default "copy"
  extension: the whole-document methods run past what the model was trained on, chunks do not.
  Window 512 means |i - j| <= 256 per layer: six layers reach about 1,536 tokens each way.
- Passages: n / CHUNK per document, each PASSAGE_WORDS whitespace-separated words starting at the
  first word at or after evenly spaced token positions; a passage whose words occur anywhere else
  in that length's documents (license boilerplate, repeated docstrings) is dropped, so every
  answer sits in exactly one place.
- Queries: from each passage, KEPT_WORDS of its words chosen at random (random.Random(SEED), in
  order), so a query shares words with its passage without being a copy of it. Two kinds:
  "words", those words alone; "subject: words", the same prefixed by the subject of the text the
  passage comes from ("GPL-3 license", the pydoc topic's heading such as "Special method names",
  "Python asyncio module"). The subject names the text as a whole, and most chunks do not state
  it: matching it needs the document's context, which is what late chunking claims to keep.
  Queries are embedded alone, dense, mean pooling, normalized.
- Metrics, per length, over the index of all chunks of all its documents (cosine): chunk-level
  recall@1 and MRR, the relevant chunk being the one holding the passage's middle character's
  token; document-level recall@1 and MRR, a document scoring its best chunk. The document vector
  has only the document level. Ranks count strictly better candidates.
- Time: wall seconds per document for each method on this CPU, and their ratio to late chunks.
  Late chunks and the document vector share one forward pass; only their pooling differs.
"""

from __future__ import annotations

import argparse
import bisect
import json
import platform
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from app.chunking import Span, pool_spans, windows
from benchmarks.fidelity import license_texts, stdlib_texts, topic_texts
from models import Encoder, load_encoder
from models.tokenizer import Tokenized, join
from sparse_core import AttentionSpec

RESULTS = Path(__file__).parent / "results"
LENGTHS = (2048, 8192, 32768)
DOCUMENTS = {2048: 12, 8192: 6, 32768: 3}  # cap per length: the CPU time grows with n
QUICK_DOCUMENTS = 3
CHUNK = 256
SLIDING = AttentionSpec("sliding_window", window=512)
DENSE = AttentionSpec("dense")
DENSE_UP_TO = 2048  # the dense reference runs at lengths up to this
PASSAGE_WORDS = 24
KEPT_WORDS = 12
SEED = 0
QUERY_KINDS = ("words", "subject: words")


@dataclass(frozen=True)
class Text:
    name: str  # "source:key", as in benchmarks.fidelity
    subject: str  # what a reader would call it
    text: str
    tokenized: Tokenized


@dataclass(frozen=True)
class Section:
    """One text's share of a document: its kept words and where its tokens lie."""

    text: Text
    tokens: Span  # [start, stop) in the document's ids
    chars: int  # characters of the text that the kept tokens cover


@dataclass(frozen=True)
class Document:
    name: str
    tokenized: Tokenized  # the document's n ids (special tokens included) and offsets
    sections: list[Section]


@dataclass(frozen=True)
class Passage:
    document: int
    chunk: int  # index of the relevant chunk in the document's chunks
    subject: str
    words: list[str]


# ---- corpus ----------------------------------------------------------------------------------


def subject(name: str, text: str) -> str:
    source, key = name.split(":", 1)
    if source == "license":
        return f"{key} license"
    if source == "stdlib":
        return f"Python {key} module"
    return next(line.strip() for line in text.splitlines() if line.strip())  # the topic heading


def load_texts(encoder: Encoder) -> dict[str, list[Text]]:
    """Texts per source, in fidelity's order, tokenized with offsets."""
    corpus = {}
    for source, named in (
        ("license", license_texts()),
        ("pydoc", topic_texts()),
        ("stdlib", stdlib_texts()),
    ):
        parts = encoder.tokenizer.encode([text for _, text in named])
        corpus[source] = [
            Text(name, subject(name, text), text, part)
            for (name, text), part in zip(named, parts, strict=True)
        ]
    return corpus


def text_tokens(text: Text) -> int:
    return text.tokenized.text_stop - text.tokenized.opening


def document(texts: list[Text], n: int) -> Document:
    """Consecutive texts joined into one id list and cut to n ids, the closing [SEP] kept."""
    parts = [text.tokenized for text in texts]
    ids, spans = join(parts)
    opening, closing = parts[0].opening, parts[-1].closing
    stop = n - closing  # text tokens end here
    offsets = [(0, 0)] * opening
    sections = []
    for text, (start, end) in zip(texts, spans, strict=True):
        end = min(end, stop)
        if start >= end:
            break
        first = text.tokenized.opening
        own = text.tokenized.offsets[first : first + end - start]
        offsets += own
        sections.append(Section(text, (start, end), own[-1][1]))
    ids = ids[:stop] + ids[len(ids) - closing :]
    offsets += [(0, 0)] * closing
    name = "+".join(text.name for text in texts)
    return Document(name, Tokenized(ids, offsets, opening, closing), sections)


def documents_of_length(corpus: dict[str, list[Text]], n: int, limit: int) -> list[Document]:
    """Up to `limit` documents of n ids, from the sources in turn: single texts of at least n
    tokens where any exist, else consecutive texts of one source joined until they reach n."""
    room = n - 2  # text tokens beside [CLS] and [SEP]
    single = any(text_tokens(text) >= room for texts in corpus.values() for text in texts)
    per_source = []
    for texts in corpus.values():
        if single:
            groups = [[text] for text in texts if text_tokens(text) >= room]
        else:
            groups, group = [], []
            for text in texts:
                group.append(text)
                if sum(map(text_tokens, group)) >= room:
                    groups.append(group)
                    group = []
        per_source.append([document(group, n) for group in groups])
    picked: list[Document] = []
    while len(picked) < limit and any(per_source):
        for documents in per_source:
            if documents and len(picked) < limit:
                picked.append(documents.pop(0))
    return picked


# ---- passages and queries ----------------------------------------------------------------------


def kept_words(section: Section) -> list[re.Match[str]]:
    return list(re.finditer(r"\S+", section.text.text[: section.chars]))


def passages(documents: list[Document], chunk_spans: list[list[Span]], n: int) -> list[Passage]:
    """n / CHUNK passages per document at evenly spaced token positions, each found nowhere else
    in `documents`; the relevant chunk holds the passage's middle character."""
    everything = " " + " ".join(
        match.group() for doc in documents for s in doc.sections for match in kept_words(s)
    )
    everything += " "
    count = n // CHUNK
    found = []
    for index, doc in enumerate(documents):
        first, stop = doc.tokenized.opening, doc.tokenized.text_stop
        for place in range(count):
            token = first + int((place + 0.5) / count * (stop - first))
            section = next(s for s in doc.sections if s.tokens[0] <= token < s.tokens[1])
            words = kept_words(section)
            char = doc.tokenized.offsets[token][0]
            start = next((i for i, m in enumerate(words) if m.start() >= char), len(words))
            start = min(start, len(words) - PASSAGE_WORDS)
            if start < 0:
                continue
            chosen = words[start : start + PASSAGE_WORDS]
            text = " ".join(match.group() for match in chosen)
            if everything.count(f" {text} ") != 1:
                continue
            middle = (chosen[0].start() + chosen[-1].end()) // 2
            token_starts = [
                offset[0] for offset in doc.tokenized.offsets[section.tokens[0] : section.tokens[1]]
            ]
            middle_token = section.tokens[0] + bisect.bisect_right(token_starts, middle) - 1
            chunk = next(i for i, (a, b) in enumerate(chunk_spans[index]) if a <= middle_token < b)
            words_text = [match.group() for match in chosen]
            found.append(Passage(index, chunk, section.text.subject, words_text))
    return found


def queries(found: list[Passage], rng: random.Random) -> dict[str, list[str]]:
    """Per query kind, one query per passage: KEPT_WORDS of its words, in order."""
    kept = [
        " ".join(p.words[i] for i in sorted(rng.sample(range(len(p.words)), KEPT_WORDS)))
        for p in found
    ]
    return {
        "words": kept,
        "subject: words": [f"{p.subject}: {words}" for p, words in zip(found, kept, strict=True)],
    }


# ---- methods ---------------------------------------------------------------------------------


@dataclass
class Embedded:
    vectors: torch.Tensor  # (items, dim), unit rows
    owners: torch.Tensor  # (items,) the document of each row
    seconds: float  # wall time over all documents


def whole_documents(
    encoder: Encoder, documents: list[Document], spans: list[list[Span]], attention: AttentionSpec
) -> tuple[Embedded, Embedded]:
    """Late chunks and document vectors from one forward pass per document."""
    chunks, means, owners = [], [], []
    forward_s = late_s = mean_s = 0.0
    for index, (doc, chunk_spans) in enumerate(zip(documents, spans, strict=True)):
        started = time.perf_counter()
        tokens = encoder.encode_batch(
            [doc.tokenized.ids], attention, pooling="none", normalize=False
        )[0]  # (n, dim)
        pooled = time.perf_counter()
        chunks += pool_spans(tokens, chunk_spans, normalize=True)
        late = time.perf_counter()
        means.append(F.normalize(tokens.mean(dim=0), dim=-1))
        mean_s += time.perf_counter() - late
        forward_s += pooled - started
        late_s += late - pooled
        owners += [index] * len(chunk_spans)
    late_chunks = Embedded(torch.stack(chunks), torch.tensor(owners), forward_s + late_s)
    vectors = Embedded(torch.stack(means), torch.arange(len(documents)), forward_s + mean_s)
    return late_chunks, vectors


def independent_chunks(
    encoder: Encoder, documents: list[Document], spans: list[list[Span]]
) -> Embedded:
    """Every chunk's ids in their own [CLS] ... [SEP], embedded alone (dense, mean pooling)."""
    vectors, owners = [], []
    started = time.perf_counter()
    for index, (doc, chunk_spans) in enumerate(zip(documents, spans, strict=True)):
        ids, opening, closing = doc.tokenized.ids, doc.tokenized.opening, doc.tokenized.closing
        wrapped = [ids[:opening] + ids[a:b] + ids[len(ids) - closing :] for a, b in chunk_spans]
        vectors += encoder.encode_ids(wrapped, DENSE, pooling="mean", normalize=True)
        owners += [index] * len(chunk_spans)
    return Embedded(torch.stack(vectors), torch.tensor(owners), time.perf_counter() - started)


# ---- measurements ----------------------------------------------------------------------------


def ranks(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """scores: (queries, candidates); relevant: (queries,) -> (queries,) 1-based ranks."""
    own = scores.gather(1, relevant[:, None])  # (queries, 1)
    return 1 + (scores > own).sum(dim=1)


def metrics(rank: torch.Tensor) -> tuple[float, float]:
    """recall@1 and MRR."""
    return (rank == 1).float().mean().item(), (1.0 / rank.float()).mean().item()


def score(
    embedded: Embedded, query_vectors: torch.Tensor, found: list[Passage], chunked: bool
) -> dict[str, float | None]:
    scores = query_vectors @ embedded.vectors.T  # (queries, items)
    owners = torch.tensor([p.document for p in found])
    result: dict[str, float | None] = {"chunk_recall_at_1": None, "chunk_mrr": None}
    if chunked:
        first = torch.tensor([(embedded.owners < p.document).sum().item() + p.chunk for p in found])
        result["chunk_recall_at_1"], result["chunk_mrr"] = metrics(ranks(scores, first))
        count = int(embedded.owners.max()) + 1
        best = torch.full((len(found), count), float("-inf"))
        best = best.scatter_reduce(
            1, embedded.owners.expand(len(found), -1), scores, reduce="amax"
        )  # (queries, documents): each document's best chunk
        scores = best
    result["document_recall_at_1"], result["document_mrr"] = metrics(ranks(scores, owners))
    return result


def measure_length(
    encoder: Encoder, documents: list[Document], n: int, dense: bool, rng: random.Random
) -> tuple[list[dict[str, object]], int]:
    spans = [windows(doc.tokenized, CHUNK, 0, 0)[0] for doc in documents]
    found = passages(documents, spans, n)
    texts = queries(found, rng)
    query_vectors = {
        kind: encoder.encode(texts[kind], DENSE, pooling="mean", normalize=True)
        for kind in QUERY_KINDS
    }
    runs: list[tuple[str, str, Embedded, bool]] = []
    for attention in (SLIDING, DENSE) if dense else (SLIDING,):
        late, vector = whole_documents(encoder, documents, spans, attention)
        label = method_name(attention)
        print(f"    whole documents, {label}: {late.seconds:7.1f} s", flush=True)
        runs += [("late chunks", label, late, True), ("document vector", label, vector, False)]
    alone = independent_chunks(encoder, documents, spans)
    print(f"    independent chunks:  {alone.seconds:7.1f} s", flush=True)
    runs.insert(1, ("independent chunks", method_name(DENSE), alone, True))
    reference = runs[0][2].seconds  # late chunks, sliding window
    rows = []
    for kind in QUERY_KINDS:
        for method, label, embedded, chunked in runs:
            rows.append(
                {
                    "n": n,
                    "documents": len(documents),
                    "chunks": sum(map(len, spans)),
                    "queries": len(found),
                    "query": kind,
                    "method": method,
                    "attention": label,
                    **score(embedded, query_vectors[kind], found, chunked),
                    "seconds_per_document": embedded.seconds / len(documents),
                    "time_vs_late_chunks": embedded.seconds / reference,
                }
            )
    return rows, len(found)


def method_name(spec: AttentionSpec) -> str:
    params = ",".join(f"{key}={value}" for key, value in spec.params.items())
    return f"{spec.mode}({params})" if params else spec.mode


# ---- output ----------------------------------------------------------------------------------


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| n | docs | chunks | queries | query | method | attention "
        "| chunk R@1 | chunk MRR | doc R@1 | doc MRR | s/doc | time vs late |",
        "|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def number(value: object) -> str:
        return "—" if value is None else f"{value:.2f}"

    for row in rows:
        lines.append(
            f"| {row['n']} | {row['documents']} | {row['chunks']} | {row['queries']} "
            f"| {row['query']} | {row['method']} | {row['attention']} "
            f"| {number(row['chunk_recall_at_1'])} | {number(row['chunk_mrr'])} "
            f"| {number(row['document_recall_at_1'])} | {number(row['document_mrr'])} "
            f"| {row['seconds_per_document']:.2f} | {row['time_vs_late_chunks']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,048 tokens, 3 documents")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results")
    args = parser.parse_args(argv)
    lengths = (2048,) if args.quick else LENGTHS
    quick_out = Path(tempfile.gettempdir()) / "longenc-chunk-retrieval"
    out = args.out or (quick_out if args.quick else RESULTS)

    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    started = time.perf_counter()
    encoder = load_encoder(device="cpu", dtype="float32")
    corpus = load_texts(encoder)
    rows, used = [], {}
    for n in lengths:
        limit = QUICK_DOCUMENTS if args.quick else DOCUMENTS[n]
        documents = documents_of_length(corpus, n, limit)
        print(f"n={n}: {len(documents)} documents", flush=True)
        if len(documents) < 2:
            print("  too few documents this long; skipped")
            continue
        dense = n <= DENSE_UP_TO and not args.quick
        length_rows, passage_count = measure_length(encoder, documents, n, dense, rng)
        rows += length_rows
        used[n] = {"documents": [doc.name for doc in documents], "passages": passage_count}
    elapsed = time.perf_counter() - started

    report = {
        "model": encoder.name,
        "device": "cpu",
        "dtype": "float32",
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "seconds": round(elapsed, 1),
        "settings": {
            "chunk_tokens": CHUNK,
            "chunk_overlap": 0,
            "whole_document_attention": SLIDING.to_dict(),
            "dense_reference_up_to": DENSE_UP_TO,
            "independent_chunk_attention": DENSE.to_dict(),
            "position_extension": "copy",
            "passage_words": PASSAGE_WORDS,
            "query_words": KEPT_WORDS,
            "seed": SEED,
        },
        "lengths": {str(n): facts for n, facts in used.items()},
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "chunk_retrieval.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "chunk_retrieval.md").write_text(table(rows) + "\n")
    print(table(rows))
    print(f"{elapsed:.0f} s; written to {out}")


if __name__ == "__main__":
    main()
