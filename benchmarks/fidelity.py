"""Fidelity: how close sparse attention and the production baselines come to dense attention.

    python -m benchmarks.fidelity                                     # the full run (CPU, float32)
    python -m benchmarks.fidelity --lengths 512 2048 --documents 4    # a smoke run

Writes benchmarks/results/fidelity.json, fidelity.md (the table) and fidelity.png.

Method
- Corpus, built at run time from real English on any Debian + CPython machine: the license texts
  in /usr/share/common-licenses (one per family: GPL-3 and GPL-2, not also GPL and GPL-1), the
  Python language reference as pydoc ships it (pydoc_data.topics), and stdlib reference documents
  (a package's and its public submodules' docstrings, joined). Nothing is invented or repeated.
- For each n, the documents with at least n tokens are cut to their first n (with [CLS] ... [SEP]);
  up to --documents of them are taken, alternating between the three sources.
- Each method embeds each document whole (mean pooling, normalized, float32). The reference is
  dense attention with the default "copy" position extension. Reported per method: the cosine to
  the reference (mean and worst over documents), and recall@1 of a retrieval check.
- Baselines as production servers run them: "truncate-512" embeds the first 512 tokens only;
  "chunk-average-512" embeds consecutive 512-token chunks and averages them (weighted by tokens).
- Position extension: dense and sliding_window(512) are also run with "interpolate"; their cosine
  to the copy reference, their cosine to chunk-average-512 (which only uses learned positions)
  and their recall say what the strategy changes. Within 512 tokens the two are identical.
- Retrieval: from every document, PASSAGES passages of PASSAGE_TOKENS tokens at evenly spaced
  offsets are embedded alone (dense); a passage is a hit when its own document is the nearest of
  the n-token corpus by cosine (recall@1). The margin is the passage's cosine to its own document
  minus its best cosine to another one, averaged: how safely it is found. Passages beyond token
  512 are what truncation cannot see.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from models import Encoder, load_encoder
from sparse_core import AttentionSpec

RESULTS = Path(__file__).parent / "results"
LENGTHS = (512, 2048, 8192)
DOCUMENTS = {512: 16, 2048: 12, 8192: 6}  # cap per length: the CPU time grows with n
SPARSE = (
    AttentionSpec("block", block_size=128),
    AttentionSpec("block", block_size=512),
    AttentionSpec("sliding_window", window=128),
    AttentionSpec("sliding_window", window=512),
    AttentionSpec("topk", top_k=32),
    AttentionSpec("topk", top_k=128),
)
DENSE = AttentionSpec("dense")
EXTENDED = (DENSE, AttentionSpec("sliding_window", window=512))  # also run with "interpolate"
CHUNK = 512
PASSAGES = 4
PASSAGE_TOKENS = 48

LICENSES = Path("/usr/share/common-licenses")
LICENSE_FILES = (
    "Apache-2.0",
    "Artistic",
    "CC0-1.0",
    "GFDL-1.3",
    "GPL-2",
    "GPL-3",
    "LGPL-2.1",
    "LGPL-3",
    "MPL-1.1",
    "MPL-2.0",
)
STDLIB_DOCUMENTS = (
    "asyncio",
    "email",
    "logging",
    "unittest",
    "http",
    "builtins",
    "urllib",
    "json",
    "importlib",
    "collections",
    "typing",
    "inspect",
    "difflib",
    "doctest",
    "statistics",
    "decimal",
    "multiprocessing",
    "xmlrpc",
    "wsgiref",
)


@dataclass
class Document:
    name: str
    source: str
    body: list[int]  # token ids without the special tokens


# ---- corpus ----------------------------------------------------------------------------------


def license_texts() -> list[tuple[str, str]]:
    files = [LICENSES / name for name in LICENSE_FILES]
    return [(f"license:{file.name}", file.read_text()) for file in files if file.is_file()]


def topic_texts() -> list[tuple[str, str]]:
    """The language reference sections that pydoc shows for `help("topic")`."""
    from pydoc_data.topics import topics

    return [(f"pydoc:{name}", text) for name, text in sorted(topics.items())]


def own_doc(obj: object) -> str:
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else ""


def module_docstrings(module: object) -> str:
    """A module's docstring, then each public class and function's, then each method's."""
    parts = [own_doc(module)]
    for name, obj in sorted(vars(module).items()):
        defined_here = getattr(obj, "__module__", None) == module.__name__
        if name.startswith("_") or not defined_here:
            continue
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        parts.append(f"{name}\n{own_doc(obj)}")
        if inspect.isclass(obj):
            for method_name, method in sorted(vars(obj).items()):
                if not method_name.startswith("_") and inspect.isroutine(method):
                    parts.append(f"{name}.{method_name}\n{own_doc(method)}")
    return "\n\n".join(part for part in parts if part.strip())


def stdlib_texts() -> list[tuple[str, str]]:
    """One document per package (its public submodules' docstrings joined) or module."""
    texts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated modules and aliases
        for name in STDLIB_DOCUMENTS:
            modules = import_public(name)
            if modules:
                text = "\n\n".join(module_docstrings(module) for module in modules)
                texts.append((f"stdlib:{name}", text))
    return texts


def import_public(name: str) -> list[object]:
    """The module `name` and, for a package, its public non-test submodules; [] if unavailable."""
    try:
        package = importlib.import_module(name)
    except ImportError:
        return []
    modules = [package]
    for info in pkgutil.iter_modules(getattr(package, "__path__", []), f"{name}."):
        if any(part.startswith(("_", "test")) for part in info.name.split(".")[1:]):
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError:
            continue
    return modules


def build_corpus(encoder: Encoder) -> dict[str, list[Document]]:
    """Documents per source, tokenized once (uncut)."""
    corpus = {}
    for source, texts in (
        ("license", license_texts()),
        ("pydoc", topic_texts()),
        ("stdlib", stdlib_texts()),
    ):
        ids = encoder.tokenize([text for _, text in texts])
        corpus[source] = [
            Document(name, source, token_ids[1:-1])
            for (name, _), token_ids in zip(texts, ids, strict=True)
        ]
    return corpus


def pick(corpus: dict[str, list[Document]], n: int, limit: int) -> list[Document]:
    """Up to `limit` documents of at least n tokens, taken from the sources in turn."""
    eligible = [[d for d in documents if len(d.body) + 2 >= n] for documents in corpus.values()]
    picked: list[Document] = []
    while len(picked) < limit and any(eligible):
        for documents in eligible:
            if documents and len(picked) < limit:
                picked.append(documents.pop(0))
    return picked


# ---- methods ---------------------------------------------------------------------------------


def wrap(body: list[int], cls: int, sep: int) -> list[int]:
    return [cls, *body, sep]


def embed(encoder: Encoder, batch: list[list[int]], spec: AttentionSpec) -> torch.Tensor:
    return torch.stack(encoder.encode_ids(batch, spec, pooling="mean", normalize=True))


def chunk_average(encoder: Encoder, bodies: list[list[int]], cls: int, sep: int) -> torch.Tensor:
    """Each document as consecutive CHUNK-token pieces, embedded and averaged by token count."""
    step = CHUNK - 2
    vectors = []
    for body in bodies:
        pieces = [body[start : start + step] for start in range(0, len(body), step)]
        embedded = embed(encoder, [wrap(piece, cls, sep) for piece in pieces], DENSE)
        weights = torch.tensor([len(piece) for piece in pieces], dtype=torch.float32)
        average = (embedded * weights[:, None]).sum(dim=0)
        vectors.append(average / average.norm())
    return torch.stack(vectors)


def run_methods(
    encoders: dict[str, Encoder], bodies: list[list[int]], cls: int, sep: int
) -> dict[str, torch.Tensor]:
    """Method name -> (documents, dim) embeddings of the given document bodies."""
    copy, interpolate = encoders["copy"], encoders["interpolate"]
    documents = [wrap(body, cls, sep) for body in bodies]
    runs = {"dense": lambda: embed(copy, documents, DENSE)}
    for spec in SPARSE:
        runs[method_name(spec)] = lambda spec=spec: embed(copy, documents, spec)
    runs["truncate-512"] = lambda: embed(
        copy, [wrap(b[: CHUNK - 2], cls, sep) for b in bodies], DENSE
    )
    runs["chunk-average-512"] = lambda: chunk_average(copy, bodies, cls, sep)
    for spec in EXTENDED:
        runs[f"{method_name(spec)} interpolate"] = lambda spec=spec: embed(
            interpolate, documents, spec
        )
    results = {}
    for name, run in runs.items():
        started = time.perf_counter()
        results[name] = run()
        print(f"    {name:<32} {time.perf_counter() - started:7.1f} s", flush=True)
    return results


def method_name(spec: AttentionSpec) -> str:
    params = ",".join(f"{key}={value}" for key, value in spec.params.items())
    return f"{spec.mode}({params})" if params else spec.mode


# ---- measurements ----------------------------------------------------------------------------


def passages(bodies: list[list[int]], cls: int, sep: int) -> tuple[list[list[int]], list[int]]:
    """PASSAGES spans of PASSAGE_TOKENS per body at evenly spaced offsets, and their owners."""
    spans, owners = [], []
    for owner, body in enumerate(bodies):
        room = len(body) - PASSAGE_TOKENS
        for index in range(PASSAGES):
            start = round((index + 0.5) / PASSAGES * room)
            spans.append(wrap(body[start : start + PASSAGE_TOKENS], cls, sep))
            owners.append(owner)
    return spans, owners


def measure_length(
    encoders: dict[str, Encoder], documents: list[Document], n: int
) -> list[dict[str, object]]:
    copy = encoders["copy"]
    cls, sep = copy.tokenize([""])[0]  # the special tokens around every input
    bodies = [document.body[: n - 2] for document in documents]
    embeddings = run_methods(encoders, bodies, cls, sep)
    spans, owners = passages(bodies, cls, sep)
    queries = embed(copy, spans, DENSE)  # (passages, dim)
    owners_t = torch.tensor(owners)
    reference, chunked = embeddings["dense"], embeddings["chunk-average-512"]
    rows = []
    for name, vectors in embeddings.items():
        to_dense = (vectors * reference).sum(dim=-1)  # (documents,) cosines: all are unit vectors
        to_chunked = (vectors * chunked).sum(dim=-1)
        similarity = queries @ vectors.T  # (passages, documents)
        own = similarity.gather(1, owners_t[:, None]).squeeze(1)  # (passages,)
        best_other = similarity.scatter(1, owners_t[:, None], float("-inf")).amax(dim=1)
        rows.append(
            {
                "n": n,
                "method": name,
                "documents": len(documents),
                "cosine_to_dense_mean": to_dense.mean().item(),
                "cosine_to_dense_min": to_dense.min().item(),
                "cosine_to_chunk_average_mean": to_chunked.mean().item(),
                "recall_at_1": (own > best_other).float().mean().item(),
                "retrieval_margin_mean": (own - best_other).mean().item(),
                "passages": len(spans),
            }
        )
    return rows


# ---- output ----------------------------------------------------------------------------------


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| n | method | docs | cos to dense: mean | worst | cos to chunk-avg | recall@1 | margin |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n']} | {row['method']} | {row['documents']} "
            f"| {row['cosine_to_dense_mean']:.4f} | {row['cosine_to_dense_min']:.4f} "
            f"| {row['cosine_to_chunk_average_mean']:.4f} | {row['recall_at_1']:.2f} "
            f"| {row['retrieval_margin_mean']:+.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, object]], file: Path) -> None:
    """Cosine to dense (mean, worst) against n as lines; recall@1 per n as grouped bars (each n
    has its own corpus, so recall is compared within an n, not across)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({row["n"] for row in rows})
    methods = list(dict.fromkeys(row["method"] for row in rows))
    colors = dict(zip(methods, plt.cm.tab20.colors, strict=False))
    value = {(row["method"], row["n"], key): row[key] for row in rows for key in row}
    figure, axes = plt.subplots(1, 3, figsize=(18, 6.5))
    for axis, key, title in (
        (axes[0], "cosine_to_dense_mean", "cosine to dense (mean over documents)"),
        (axes[1], "cosine_to_dense_min", "cosine to dense (worst document)"),
    ):
        for method in methods:
            style = "--" if "interpolate" in method or "-512" in method else "-"
            points = [value[method, n, key] for n in lengths]
            axis.plot(lengths, points, style, marker="o", color=colors[method], label=method)
        axis.set_xscale("log", base=2)
        axis.set_xticks(lengths, [str(n) for n in lengths])
        axis.set_xlabel("tokens per document (n)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    width = 0.8 / len(methods)
    for index, method in enumerate(methods):
        recalls = [value[method, n, "recall_at_1"] for n in lengths]
        places = [x + (index - len(methods) / 2 + 0.5) * width for x in range(len(lengths))]
        axes[2].bar(places, recalls, width, color=colors[method])
    documents = {n: value[methods[0], n, "documents"] for n in lengths}
    axes[2].set_xticks(range(len(lengths)), [f"n={n}\n{documents[n]} docs" for n in lengths])
    axes[2].set_ylim(0.5, 1.0)
    axes[2].set_title("passage finds its own document: recall@1")
    axes[2].grid(alpha=0.3, axis="y")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=6, fontsize=9)
    figure.suptitle("all-MiniLM-L6-v2, mean pooling, float32: fidelity to dense attention")
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(file, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--documents", type=int, default=None, help="cap per length")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--replot", action="store_true", help="redraw from --out's fidelity.json")
    args = parser.parse_args(argv)
    if args.replot:
        rows = json.loads((args.out / "fidelity.json").read_text())["rows"]
        (args.out / "fidelity.md").write_text(table(rows) + "\n")
        plot(rows, args.out / "fidelity.png")
        return

    torch.manual_seed(0)
    encoders = {
        strategy: load_encoder(device="cpu", dtype=torch.float32, position_extension=strategy)
        for strategy in ("copy", "interpolate")
    }
    corpus = build_corpus(encoders["copy"])
    rows, used = [], {}
    for n in args.lengths:
        documents = pick(corpus, n, args.documents or DOCUMENTS.get(n, 8))
        print(f"n={n}: {len(documents)} documents", flush=True)
        if len(documents) < 2:
            print("  too few documents this long; skipped")
            continue
        used[n] = [document.name for document in documents]
        rows += measure_length(encoders, documents, n)

    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "model": encoders["copy"].name,
        "device": "cpu",
        "dtype": "float32",
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "settings": {
            "pooling": "mean",
            "normalize": True,
            "reference": "dense, position_extension=copy",
            "chunk_tokens": CHUNK,
            "passages_per_document": PASSAGES,
            "passage_tokens": PASSAGE_TOKENS,
        },
        "documents": {str(n): names for n, names in used.items()},
        "rows": rows,
    }
    (args.out / "fidelity.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "fidelity.md").write_text(table(rows) + "\n")
    plot(rows, args.out / "fidelity.png")
    print(table(rows))


if __name__ == "__main__":
    main()
