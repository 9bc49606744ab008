"""Model benchmark: a tiny ModernBERT's forward pass with its native per-layer pattern (global
layers dense, local layers a 128-token sliding window) against every layer dense.

    python -m benchmarks.models                       # 8,192 tokens, 5 reps (~1 min on 2 cores)
    python -m benchmarks.models --tokens 2048 --reps 2 --output /tmp/models   # a smoke run

Writes benchmarks/results/models_<device>.json.

Method
- The checkpoint is built at run time: ModernBERT's config.json (hidden 64, 4 heads, 3 layers:
  global, local, local, as global_attn_every_n_layers=3; local_attention 128; intermediate 96)
  and random weights under the hub's tensor names, loaded through load_encoder like any folder.
- One input of --tokens random ids, float32, encode_ids with pooling "mean".
- "native" is a `dense` request: the model as trained, its local layers on sparse_core's
  sliding_window kernel. "all_dense" is the same model with every layer's native pattern set to
  dense (what a server that ignores local layers runs).
- The two run alternately (native, all-dense, native, ...) after one warm-up each, so that both
  see the same machine load; reported: the median seconds of each and all_dense / native, the
  speed-up of the local layers on this model. The JSON records the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from models import Encoder, load_encoder
from models.arch.modernbert import MODERNBERT
from models.modules import Transformer
from models.patterns import native_patterns
from sparse_core import AttentionSpec

RESULTS = Path(__file__).parent / "results"
CONFIG = {
    "model_type": "modernbert",
    "architectures": ["ModernBertModel"],
    "vocab_size": 512,
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "max_position_embeddings": 8192,
    "global_attn_every_n_layers": 3,
    "local_attention": 128,
    "global_rope_theta": 160000.0,
    "local_rope_theta": 10000.0,
    "pad_token_id": 0,
}
DENSE = AttentionSpec("dense")


def write_tiny_modernbert(folder: Path) -> None:
    """config.json, random weights under the hub's names, and a word-level tokenizer.json."""
    from tokenizers import Tokenizer, models

    (folder / "config.json").write_text(json.dumps(CONFIG))
    config = MODERNBERT.read_config(CONFIG)
    with torch.device("meta"):
        shapes = {name: t.shape for name, t in Transformer(config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for local, sources in MODERNBERT.weight_names(config).items():
        part = (shapes[local][0] // len(sources), *shapes[local][1:])
        for source in sources:
            tensors[source] = torch.randn(part, generator=generator) * 0.1 + (
                1.0 if "norm" in source else 0.0
            )
    save_file(tensors, folder / "model.safetensors")
    vocab = {f"w{i}": i for i in range(CONFIG["vocab_size"])}
    Tokenizer(models.WordLevel(vocab, unk_token="w1")).save(str(folder / "tokenizer.json"))


def time_pair(encoder: Encoder, ids: list[int], reps: int) -> dict[str, list[float]]:
    """Seconds per forward, native and all-dense alternately, after one warm-up of each."""
    model = encoder.model
    native = model.native
    all_dense = native_patterns((False,) * len(native), None)
    times: dict[str, list[float]] = {"native": [], "all_dense": []}
    for rep in range(reps + 1):
        for name, patterns in (("native", native), ("all_dense", all_dense)):
            model.native = patterns
            started = time.perf_counter()
            encoder.encode_ids([ids], DENSE, pooling="mean")
            if rep:  # rep 0 is the warm-up
                times[name].append(time.perf_counter() - started)
    model.native = native
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS / "models_cpu")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        write_tiny_modernbert(Path(folder))
        encoder = load_encoder(folder, device="cpu", dtype="float32")
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, CONFIG["vocab_size"], (args.tokens,), generator=generator).tolist()
    load_before = os.getloadavg()[0]
    times = time_pair(encoder, ids, args.reps)
    native, dense = (statistics.median(times[k]) for k in ("native", "all_dense"))
    report = {
        "benchmark": "tiny ModernBERT forward: native per-layer pattern vs every layer dense",
        "model": {k: CONFIG[k] for k in CONFIG if k != "architectures"},
        "native_layer_patterns": encoder.native_layer_patterns,
        "tokens": args.tokens,
        "dtype": "float32",
        "device": "cpu",
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "seconds": times,
        "median_seconds": {"native": native, "all_dense": dense},
        "all_dense_over_native": dense / native,
        "note": "CPU shared with other processes; the ratio, measured alternately in one run, "
        "is the result, not the absolute seconds",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"{args.tokens} tokens: native {native:.3f} s, all dense {dense:.3f} s, "
        f"ratio {dense / native:.2f}x (load {load_before:.1f})"
    )


if __name__ == "__main__":
    main()
