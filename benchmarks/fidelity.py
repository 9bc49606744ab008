"""Fidelity: how close each attention mode and the production baselines come to dense attention,
and what each costs.

    python -m benchmarks.fidelity                                     # the full run (CPU, float32)
    python -m benchmarks.fidelity --lengths 512 2048 --documents 2    # a smoke run
    python -m benchmarks.fidelity --replot                            # redraw from fidelity.json

Writes benchmarks/results/fidelity.json, fidelity.md (the table), fidelity.png (fidelity against
n) and fidelity_pareto.png (speed-up against fidelity at the largest n).

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
- Modes: every mode of the table, at one or two settings (SPARSE): block-listed patterns at about
  128 and about 512 keys per query, topk and threshold at two strengths, performer and nystrom at
  a small and a larger rank. performer and nystrom estimate dense attention in a form the model
  was never trained with; their numbers are published as measured.
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
- Speed: each document is embedded alone, and each method's whole-model forward (tokens in,
  pooled vector out) is timed; the documents of one n are the repetitions, and the methods take
  turns within each document, so that a change in the machine's load falls on all of them alike.
  The speed-up is dense's median time over the method's. It is a ratio from one run on one
  machine, not a portable number.
- Fidelity classes, by mean cosine to dense: close >= CLOSE, partial >= PARTIAL, little below.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from models import Encoder, load_encoder
from sparse_core import AttentionSpec
from sparse_core.registry import MODES

RESULTS = Path(__file__).parent / "results"
LENGTHS = (512, 2048, 8192)
# Cap per length: the CPU time grows with n, and at 8k the O(n²) modes take longest.
DOCUMENTS = {512: 8, 2048: 6, 8192: 4}
SPARSE = (
    # block-listed patterns, at about 128 and about 512 keys per query
    AttentionSpec("block", block_size=128),
    AttentionSpec("block", block_size=512),
    AttentionSpec("sliding_window", window=128),
    AttentionSpec("sliding_window", window=512),
    AttentionSpec("global_window", window=128),  # the window, plus [CLS] as row and column
    AttentionSpec("global_window", window=512),
    AttentionSpec("dilated", window=128, dilation=2),  # 129 keys spread over 257 positions
    AttentionSpec("dilated", window=512, dilation=2),
    AttentionSpec("strided", stride=256),  # 511 local keys + n/256 columns: 543 at 8k
    AttentionSpec("fixed", block_size=512),  # its block + n/512 summary keys: 528 at 8k
    AttentionSpec("bigbird", block_size=64),  # 3 window + 2 global + 3 random blocks: 512 keys
    AttentionSpec("routing", block_size=32, blocks=3),  # own block + 3 routed: 128 keys
    AttentionSpec("routing", block_size=128, blocks=3),  # 512 keys
    # data-dependent selection, O(n²) time
    AttentionSpec("topk", top_k=32),
    AttentionSpec("topk", top_k=128),
    AttentionSpec("threshold", threshold=0.1),  # keys with at least 1/10 of the row's top weight
    AttentionSpec("threshold", threshold=0.01),
    # not masks: estimates of dense attention in O(n·m·D)
    AttentionSpec("performer", features=64),
    AttentionSpec("performer", features=256),
    AttentionSpec("nystrom", landmarks=32),
    AttentionSpec("nystrom", landmarks=128),
)
DENSE = AttentionSpec("dense")
EXTENDED = (DENSE, AttentionSpec("sliding_window", window=512))  # also run with "interpolate"
CHUNK = 512
PASSAGES = 4
PASSAGE_TOKENS = 48
WARM_UP_TOKENS = 256
CLOSE, PARTIAL = 0.95, 0.85  # fidelity classes by mean cosine to dense

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


def chunk_average(encoder: Encoder, body: list[int], cls: int, sep: int) -> torch.Tensor:
    """One document as consecutive CHUNK-token pieces, embedded and averaged by token count:
    (dim,)."""
    step = CHUNK - 2
    pieces = [body[start : start + step] for start in range(0, len(body), step)]
    embedded = embed(encoder, [wrap(piece, cls, sep) for piece in pieces], DENSE)
    weights = torch.tensor([len(piece) for piece in pieces], dtype=torch.float32)
    average = (embedded * weights[:, None]).sum(dim=0)
    return average / average.norm()


Method = Callable[[list[int]], torch.Tensor]  # a document's body -> its (dim,) embedding


def methods(encoders: dict[str, Encoder], cls: int, sep: int) -> dict[str, Method]:
    """Every method by name, each embedding one document body: dense, the SPARSE modes, the
    baselines, and the interpolated position extension."""
    copy, interpolate = encoders["copy"], encoders["interpolate"]

    def whole(encoder: Encoder, spec: AttentionSpec) -> Method:
        return lambda body: embed(encoder, [wrap(body, cls, sep)], spec)[0]

    runs = {"dense": whole(copy, DENSE)}
    for spec in SPARSE:
        runs[method_name(spec)] = whole(copy, spec)
    runs["truncate-512"] = lambda body: embed(copy, [wrap(body[: CHUNK - 2], cls, sep)], DENSE)[0]
    runs["chunk-average-512"] = lambda body: chunk_average(copy, body, cls, sep)
    for spec in EXTENDED:
        runs[f"{method_name(spec)} interpolate"] = whole(interpolate, spec)
    return runs


def warm_up(runs: dict[str, Method], body: list[int]) -> None:
    """One untimed pass of every method, so that first-use costs (the top-k extension's build,
    allocator growth) stay out of the timings."""
    for run in runs.values():
        run(body)


def run_methods(
    runs: dict[str, Method], bodies: list[list[int]]
) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """Method name -> (documents, dim) embeddings, and -> the forward seconds of each document.

    Documents one at a time, every method in turn within a document: the documents are the
    timing's repetitions, and a change in the machine's load meets all methods alike.
    """
    vectors: dict[str, list[torch.Tensor]] = {name: [] for name in runs}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for index, body in enumerate(bodies):
        document_started = time.perf_counter()
        for name, run in runs.items():
            started = time.perf_counter()
            vectors[name].append(run(body))
            seconds[name].append(time.perf_counter() - started)
        spent = time.perf_counter() - document_started
        print(f"    document {index + 1}/{len(bodies)}: {spent:7.1f} s", flush=True)
    for name, times in seconds.items():
        print(f"    {name:<40} median {statistics.median(times):7.2f} s", flush=True)
    return {name: torch.stack(rows) for name, rows in vectors.items()}, seconds


def method_name(spec: AttentionSpec) -> str:
    """The resolved spec, every parameter named: 'global_window(window=128,global_tokens=1)'."""
    params = ",".join(f"{key}={value}" for key, value in spec.params.items())
    return f"{spec.mode}({params})" if params else spec.mode


def label(method: str) -> str:
    """A method's name for tables and plots, without the parameters left at their defaults:
    'global_window(window=128)'."""
    mode, _, params = method.partition("(")
    if mode not in MODES or not params.endswith(")"):
        return method  # a baseline
    defaults = {param.name: param.default for param in MODES[mode].params}
    kept = [
        pair
        for pair in params[:-1].split(",")
        if str(defaults.get(pair.partition("=")[0])) != pair.partition("=")[2]
    ]
    return f"{mode}({','.join(kept)})"


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
    embeddings, seconds = run_methods(methods(encoders, cls, sep), bodies)
    spans, owners = passages(bodies, cls, sep)
    queries = embed(copy, spans, DENSE)  # (passages, dim)
    owners_t = torch.tensor(owners)
    reference, chunked = embeddings["dense"], embeddings["chunk-average-512"]
    dense_seconds = statistics.median(seconds["dense"])
    rows = []
    for name, vectors in embeddings.items():
        to_dense = (vectors * reference).sum(dim=-1)  # (documents,) cosines: all are unit vectors
        to_chunked = (vectors * chunked).sum(dim=-1)
        similarity = queries @ vectors.T  # (passages, documents)
        own = similarity.gather(1, owners_t[:, None]).squeeze(1)  # (passages,)
        best_other = similarity.scatter(1, owners_t[:, None], float("-inf")).amax(dim=1)
        forward = statistics.median(seconds[name])
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
                "forward_seconds": seconds[name],
                "forward_seconds_median": forward,
                "speedup_vs_dense": dense_seconds / forward,
            }
        )
    return rows


# ---- output ----------------------------------------------------------------------------------


def fidelity_class(row: dict[str, object]) -> str:
    cosine = row["cosine_to_dense_mean"]
    return "close" if cosine >= CLOSE else "partial" if cosine >= PARTIAL else "**little**"


def is_baseline(method: str) -> bool:
    return method == "dense" or "-512" in method or "interpolate" in method


def frontier(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The rows no other row beats on both speed-up and mean cosine, fastest first."""
    ordered = sorted(rows, key=lambda row: (-row["speedup_vs_dense"], -row["cosine_to_dense_mean"]))
    best, kept = float("-inf"), []
    for row in ordered:
        if row["cosine_to_dense_mean"] > best:
            kept.append(row)
            best = row["cosine_to_dense_mean"]
    return kept


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| n | method | docs | cos to dense: mean | worst | cos to chunk-avg | recall@1 | margin "
        "| speed-up | fidelity |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n']} | {label(row['method'])} | {row['documents']} "
            f"| {row['cosine_to_dense_mean']:.4f} | {row['cosine_to_dense_min']:.4f} "
            f"| {row['cosine_to_chunk_average_mean']:.4f} | {row['recall_at_1']:.2f} "
            f"| {row['retrieval_margin_mean']:+.3f} | {row['speedup_vs_dense']:.2f}× "
            f"| {fidelity_class(row)} |"
        )
    return "\n".join(lines)


def describe(row: dict[str, object]) -> str:
    return (
        f"`{label(row['method'])}`: cosine {row['cosine_to_dense_mean']:.3f} "
        f"(worst {row['cosine_to_dense_min']:.3f}), recall@1 {row['recall_at_1']:.2f}, "
        f"{row['speedup_vs_dense']:.2f}× dense's speed"
    )


def report_markdown(report: dict[str, object]) -> str:
    """fidelity.md: the setting, where fidelity is lost, the Pareto front, and every row."""
    rows = report["rows"]
    timed = max(row["n"] for row in rows)
    at_timed = [row for row in rows if row["n"] == timed]
    by_method = {row["method"]: row for row in at_timed}
    truncated = by_method["truncate-512"]["cosine_to_dense_mean"]
    lost = [
        row
        for row in at_timed
        if row["cosine_to_dense_mean"] < PARTIAL and not is_baseline(row["method"])
    ]
    compared = [row for row in at_timed if "interpolate" not in row["method"]]
    lines = [
        "# Fidelity to dense attention, and speed",
        "",
        f"{report['model']}, mean pooling, {report['dtype']} on {report['device']} "
        f"({report['cpu']}, {report['threads']} threads, torch {report['torch']}). Reference: "
        "dense attention with the copy position extension. Documents per n in the table; "
        "the corpus and the retrieval check are described in `benchmarks/fidelity.py`.",
        "",
        f"**Speed-up** is dense's median whole-model forward time for one document over the "
        f"method's, at the same n, from one run on this machine ({report['speed_note']}). It "
        "is a ratio measured side by side, not a portable number; the small-n ratios are the "
        "noisiest.",
        "",
        f"**Fidelity** by mean cosine to dense: close >= {CLOSE}, partial >= {PARTIAL}, "
        f"**little** below {PARTIAL}.",
        "",
        f"## Where a pattern keeps little fidelity (n = {timed})",
        "",
    ]
    if lost:
        lines.append(
            f"Below {PARTIAL} mean cosine to dense at n = {timed} "
            f"(truncate-512, reading only the first 512 tokens, scores {truncated:.3f}):"
        )
        lines.append("")
        for row in sorted(lost, key=lambda row: row["cosine_to_dense_mean"]):
            worse = " — below truncate-512" if row["cosine_to_dense_mean"] < truncated else ""
            lines.append(f"- {describe(row)}{worse}")
    else:
        lines.append(f"No method falls below {PARTIAL} mean cosine to dense at n = {timed}.")
    lines += [
        "",
        f"## Pareto front at n = {timed} (`fidelity_pareto.png`)",
        "",
        "No other method is both faster and closer to dense than these, fastest first "
        "(the interpolate rows, which cost what their copy rows cost, left out):",
        "",
        *(f"- {describe(row)}" for row in frontier(compared)),
        "",
        "## Every method and length",
        "",
        table(rows),
    ]
    return "\n".join(lines) + "\n"


def colours(methods: list[str]) -> dict[str, tuple[float, ...]]:
    import matplotlib.pyplot as plt

    palette = list(plt.cm.tab20.colors) + list(plt.cm.tab20b.colors)
    return dict(zip(methods, palette, strict=False))


def plot(rows: list[dict[str, object]], file: Path) -> None:
    """Cosine to dense (mean, worst) against n as lines; recall@1 per n as grouped bars (each n
    has its own corpus, so recall is compared within an n, not across)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({row["n"] for row in rows})
    methods = list(dict.fromkeys(row["method"] for row in rows))
    colors = colours(methods)
    value = {(row["method"], row["n"], key): row[key] for row in rows for key in row}
    figure, axes = plt.subplots(1, 3, figsize=(20, 8))
    for axis, key, title in (
        (axes[0], "cosine_to_dense_mean", "cosine to dense (mean over documents)"),
        (axes[1], "cosine_to_dense_min", "cosine to dense (worst document)"),
    ):
        for method in methods:
            style = "--" if is_baseline(method) and method != "dense" else "-"
            points = [value[method, n, key] for n in lengths]
            axis.plot(lengths, points, style, marker="o", color=colors[method], label=label(method))
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
    lowest = min(row["recall_at_1"] for row in rows)
    axes[2].set_xticks(range(len(lengths)), [f"n={n}\n{documents[n]} docs" for n in lengths])
    axes[2].set_ylim(min(0.5, lowest - 0.05), 1.0)
    axes[2].set_title("passage finds its own document: recall@1")
    axes[2].grid(alpha=0.3, axis="y")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=6, fontsize=9)
    figure.suptitle("all-MiniLM-L6-v2, mean pooling, float32: fidelity to dense attention")
    figure.tight_layout(rect=(0, 0.17, 1, 1))
    figure.savefig(file, dpi=110)
    plt.close(figure)


# Marker per kind of method in the Pareto plot.
DATA_DEPENDENT = ("topk", "threshold", "routing")
ESTIMATES = ("performer", "nystrom")


def marker(method: str) -> str:
    mode = method.split("(")[0]
    if is_baseline(method):
        return "*" if method == "dense" else "D"
    return "^" if mode in ESTIMATES else "s" if mode in DATA_DEPENDENT else "o"


def plot_pareto(report: dict[str, object], file: Path) -> None:
    """Speed-up over dense (x, log) against mean cosine to dense (y) at the largest n: one point
    per method, a thin line down to its worst document, the Pareto front dashed. Left: every
    method; right: the same, zoomed on the methods that keep most of dense's embedding. The
    interpolate rows are left out: they cost what their copy rows cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    timed = max(row["n"] for row in rows)
    points = [row for row in rows if row["n"] == timed and "interpolate" not in row["method"]]
    colors = colours(list(dict.fromkeys(row["method"] for row in rows)))
    by_method = {row["method"]: row for row in points}
    floor = min(PARTIAL, by_method["truncate-512"]["cosine_to_dense_mean"]) - 0.02
    figure, (whole, zoom) = plt.subplots(
        1, 2, figsize=(19, 9), gridspec_kw={"width_ratios": (2, 3)}
    )
    for axis, lowest in ((whole, None), (zoom, floor)):
        shown = [row for row in points if lowest is None or row["cosine_to_dense_mean"] >= lowest]
        # the whole view names only what the zoom cannot show
        named = {row["method"] for row in shown if lowest or row["cosine_to_dense_mean"] < floor}
        pareto_axis(axis, shown, named, frontier(points), colors)
        if lowest is not None:
            axis.set_ylim(lowest, 1.005)
    whole.set_title("every method", fontsize=10)
    zoom.set_title(f"zoom: mean cosine >= {floor:.2f}", fontsize=10)
    for shape, kind in (
        ("o", "block-listed mask"),
        ("s", "data-dependent (topk, threshold, routing)"),
        ("^", "estimate of dense (performer, nystrom)"),
        ("D", "baseline (dense, truncate-512, chunk-average-512)"),
    ):
        whole.scatter([], [], marker=shape, color="0.45", label=kind)
    handles, names = whole.get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=5, fontsize=9)
    documents = points[0]["documents"]
    figure.suptitle(
        f"{report['model']}: fidelity against speed at n = {timed} tokens ({documents} "
        f"documents, {report['dtype']} on {report['device']})\nspeed ratios from one run on "
        f"this machine ({report['speed_note']})",
        fontsize=11,
    )
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(file, dpi=110)
    plt.close(figure)


def pareto_axis(
    axis: object,
    points: list[dict[str, object]],
    named: set[str],
    front: list[dict[str, object]],
    colors: dict[str, tuple[float, ...]],
) -> None:
    """One panel of the Pareto plot: the points, those in `named` labelled, and the front."""
    from matplotlib.ticker import FuncFormatter

    for index, row in enumerate(sorted(points, key=lambda row: row["cosine_to_dense_mean"])):
        x, y = row["speedup_vs_dense"], row["cosine_to_dense_mean"]
        color = "0.45" if is_baseline(row["method"]) else colors[row["method"]]
        axis.plot([x, x], [row["cosine_to_dense_min"], y], color=color, alpha=0.35, lw=1)
        axis.scatter(x, y, s=70, marker=marker(row["method"]), color=color, zorder=3)
        if row["method"] not in named:
            continue
        side = 1 if index % 2 else -1  # alternate sides: neighbours in y rarely collide
        axis.annotate(
            label(row["method"]),
            (x, y),
            xytext=(7 * side, 3),
            textcoords="offset points",
            ha="left" if side > 0 else "right",
            fontsize=8,
        )
    front = sorted(front, key=lambda row: row["speedup_vs_dense"])
    axis.plot(
        [row["speedup_vs_dense"] for row in front],
        [row["cosine_to_dense_mean"] for row in front],
        "--",
        color="0.3",
        lw=1,
        label="Pareto front (no method both faster and closer)",
    )
    axis.set_xscale("log")
    times = FuncFormatter(lambda value, _: f"{value:g}×")
    axis.xaxis.set_major_formatter(times)
    axis.xaxis.set_minor_formatter(times)
    axis.tick_params(axis="x", which="minor", labelsize=7)
    axis.set_xlabel("speed-up over dense: dense's median forward time / the method's (log)")
    axis.set_ylabel("cosine to dense embedding (mean over documents; line down to the worst)")
    axis.grid(alpha=0.3, which="both")


def write_outputs(report: dict[str, object], out: Path) -> None:
    (out / "fidelity.md").write_text(report_markdown(report))
    plot(report["rows"], out / "fidelity.png")
    plot_pareto(report, out / "fidelity_pareto.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--documents", type=int, default=None, help="cap per length")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--replot", action="store_true", help="redraw from --out's fidelity.json")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (float32 either way)")
    args = parser.parse_args(argv)
    if args.replot:
        write_outputs(json.loads((args.out / "fidelity.json").read_text()), args.out)
        return

    torch.manual_seed(0)
    encoders = {
        strategy: load_encoder(device=args.device, dtype=torch.float32, position_extension=strategy)
        for strategy in ("copy", "interpolate")
    }
    corpus = build_corpus(encoders["copy"])
    cls, sep = encoders["copy"].tokenize([""])[0]
    first = next(iter(corpus.values()))[0]
    warm_up(methods(encoders, cls, sep), first.body[: WARM_UP_TOKENS - 2])
    rows, used = [], {}
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    for n in args.lengths:
        documents = pick(corpus, n, args.documents or DOCUMENTS.get(n, 4))
        print(f"n={n}: {len(documents)} documents", flush=True)
        if len(documents) < 2:
            print("  too few documents this long; skipped")
            continue
        used[n] = [document.name for document in documents]
        rows += measure_length(encoders, documents, n)
        # after every length: a long run stopped early still leaves the lengths it finished
        report = make_report(
            encoders["copy"].name, used, rows, time.perf_counter() - started, args.device
        )
        (args.out / "fidelity.json").write_text(json.dumps(report, indent=2) + "\n")
        write_outputs(report, args.out)
    print(table(rows))


def make_report(
    model: str,
    used: dict[int, list[str]],
    rows: list[dict[str, object]],
    seconds: float,
    device: str = "cpu",
) -> dict[str, object]:
    threads = torch.get_num_threads()
    cuda = device.startswith("cuda")
    return {
        "model": model,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "dtype": "float32",
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": threads,
        "speed_note": "one GPU, float32 without TF32"
        if cuda
        else f"{threads} threads, CPU shared with other work",
        "run_seconds": round(seconds),
        "settings": {
            "pooling": "mean",
            "normalize": True,
            "reference": "dense, position_extension=copy",
            "chunk_tokens": CHUNK,
            "passages_per_document": PASSAGES,
            "passage_tokens": PASSAGE_TOKENS,
            "speed": "median forward seconds of one document over the documents of its n; "
            "speed-up = dense's median / the method's; one run on this machine",
            "fidelity_classes": {"close": CLOSE, "partial": PARTIAL},
        },
        "documents": {str(n): names for n, names in used.items()},
        "rows": rows,
    }


if __name__ == "__main__":
    main()
