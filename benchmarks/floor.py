"""The attention-free floor: the default model's forward pass with attention replaced by nothing,
and every attention mode's forward pass as a multiple of it.

    python -m benchmarks.floor                          # the full run (2-core CPU: ~10-15 min)
    python -m benchmarks.floor --sizes 2048 --reps 1 --output /tmp/floor   # a smoke run

Writes benchmarks/results/floor_<device>.json and floor_<device>.md.

Method
- The model is `models.load_encoder()` (all-MiniLM-L6-v2), one input of n real-English tokens
  (B=1, no padding), forward pass only (`Transformer.forward` under inference_mode), per dtype.
- The floor: the same forward pass with each layer's attention op returning v unchanged (copied
  into a fresh tensor, as a kernel's output is: see `_return_values`). The Q/K/V projection,
  the output projection, the FFN, the norms, the reshapes around attention and the embeddings
  all still run, so floor time is what every mode pays whatever its kernel; the
  patch is made here, on the `attend` name models.attention calls, and undone after each pass.
- Interleaved: every repetition runs the floor and each mode once, in an order rotated by one
  each repetition, so that drift of a busy machine hits them alike. A mode's multiple of the
  floor is the median over repetitions of (mode time ÷ the same repetition's floor time); the
  medians of the raw times are kept beside it.
- Modes: dense (only up to --dense-max-n: its O(n²) cost), block(512), sliding_window(512), and
  the block-listed modes at about 512 keys per query: global_window(512, 1 global token),
  dilated(512, dilation 2), bigbird(blocks of 64: 3 window + 2 global + 3 random = 512 keys),
  routing(blocks of 64, 7 routed blocks + its own = 512 keys).
- Arithmetic: the floor's multiply-adds per token (projections and FFN) and each mode's
  attention multiply-adds per token (2·hidden per key per query, q·k and weights·v) give the
  multiple a kernel as efficient as the GEMMs would reach: 1 + attention ÷ floor.
- OMP_WAIT_POLICY=passive unless --omp-wait-policy says otherwise (see benchmarks.attention:
  on shared cores, spinning OpenMP workers measure the machine's load, not the kernels).
  The JSON records the policy and the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from benchmarks.attention import device_name

RESULTS = Path(__file__).parent / "results"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FLOOR = "floor"
WARM_TOKENS = 2048  # the warm-up pass of each mode, shorter than the measured ones
# about 512 keys per query each (see the module docstring)
SPECS: dict[str, dict] = {
    "dense": {},
    "block": {"block_size": 512},
    "sliding_window": {"window": 512},
    "global_window": {"window": 512, "global_tokens": 1},
    "dilated": {"window": 512, "dilation": 2},
    "bigbird": {"block_size": 64, "window_blocks": 3, "global_blocks": 2, "random_blocks": 3},
    "routing": {"block_size": 64, "blocks": 7},
}
# the targets, as multiples of the floor (block-listed modes: at ~512 keys per query)
TARGETS = {
    "sliding_window": 1.25,
    "block": 1.15,
    "global_window": 1.35,
    "dilated": 1.35,
    "bigbird": 1.35,
    "routing": 1.35,
}


def _return_values(q, k, v, spec, lengths=None):  # attend's signature
    """Attention replaced by nothing: each query's output is its own value row, in a fresh
    (B, H, n, D) tensor as every kernel returns (v itself is a strided view into the fused QKV
    projection; handed on as it is, bfloat16's output projection takes a much slower path)."""
    return v.contiguous()


@contextlib.contextmanager
def attention_removed() -> Iterator[None]:
    """models.attention's `attend` returns v while inside; the library is left as it was."""
    import models.attention

    original = models.attention.attend
    models.attention.attend = _return_values
    try:
        yield
    finally:
        models.attention.attend = original


def token_ids(tokens: int) -> list[int]:
    """`tokens` ids of real English (Debian's license texts, ~46k tokens): [CLS] text [SEP]."""
    from benchmarks.service import corpus, tokenizer

    ids = tokenizer().encode(corpus()).ids  # [CLS] text [SEP]
    if len(ids) < tokens:
        raise ValueError(f"the corpus has {len(ids)} tokens, fewer than {tokens}")
    return ids[: tokens - 1] + ids[-1:]


def macs_per_token(config, keys: dict[str, float]) -> dict[str, float]:
    """Multiply-adds per token: the floor's row-wise work, and each mode's attention work."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    floor = layers * (4 * hidden * hidden + 2 * hidden * config.intermediate_size)
    return {FLOOR: floor} | {mode: layers * 2 * hidden * count for mode, count in keys.items()}


def keys_per_query(mode: str, n: int) -> float:
    """Mean keys a query attends to under SPECS[mode] at n tokens (whole blocks/bands)."""
    from benchmarks.attention import useful_pairs
    from sparse_core import AttentionSpec

    return useful_pairs(AttentionSpec(mode, **SPECS[mode]), n) / n


def forward(model, ids: torch.Tensor, spec) -> float:
    cuda = ids.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        model(ids, spec)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def measure(
    n: int, dtype: str, modes: list[str], reps: int, ids: list[int], device: str = "cpu"
) -> dict:
    """Interleaved repetitions of the floor and every mode at n tokens in `dtype`."""
    from models import load_encoder
    from sparse_core import AttentionSpec

    encoder = load_encoder(device=device, dtype=dtype)
    model = encoder.model
    batch = torch.tensor([ids[: n - 1] + ids[-1:]], dtype=torch.long, device=device)  # (1, n)
    specs = {mode: AttentionSpec(mode, **SPECS[mode]) for mode in modes}
    dense = AttentionSpec("dense")
    names = [FLOOR, *modes]

    def run(name: str, ids: torch.Tensor = batch) -> float:
        if name == FLOOR:
            with attention_removed():
                return forward(model, ids, dense)
        return forward(model, ids, specs[name])

    warm = batch[:, : min(n, WARM_TOKENS)]
    for name in names:  # warm-up: kernels loaded, thread pools started
        run(name, warm)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(run(name))
        print(
            f"n={n} {dtype} rep {rep + 1}/{reps}: "
            + " ".join(f"{name}={times[name][-1]:.2f}s" for name in names),
            flush=True,
        )
    floor = times[FLOOR]
    rows = {}
    for name in names:
        ratios = [t / f for t, f in zip(times[name], floor, strict=True)]
        rows[name] = {
            "spec": None if name == FLOOR else specs[name].to_dict(),
            "times_s": times[name],
            "median_s": statistics.median(times[name]),
            "vs_floor": statistics.median(ratios),
            "vs_floor_per_rep": ratios,
        }
    keys = {mode: keys_per_query(mode, n) for mode in modes}
    macs = macs_per_token(encoder.config, keys)
    for mode in modes:
        rows[mode]["keys_per_query"] = keys[mode]
        # what a kernel as efficient as the floor's GEMMs would cost, as a multiple of the floor
        rows[mode]["arithmetic_vs_floor"] = 1 + macs[mode] / macs[FLOOR]
        if mode in TARGETS:
            rows[mode]["target_vs_floor"] = TARGETS[mode]
            rows[mode]["meets_target"] = rows[mode]["vs_floor"] <= TARGETS[mode]
    return {"n": n, "dtype": dtype, "modes": rows}


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1e3:.2f} ms"


def markdown(report: dict) -> str:
    """A table: one row per mode, one column per (n, dtype), multiples of the floor."""
    cases = [(case["n"], case["dtype"]) for case in report["cases"]]
    by_case = {(case["n"], case["dtype"]): case["modes"] for case in report["cases"]}
    header = "| mode | " + " | ".join(f"{n // 1024}k {dtype}" for n, dtype in cases) + " |"
    lines = [header, "|---|" + "---:|" * len(cases)]
    floor_cells = [_seconds(by_case[case][FLOOR]["median_s"]) for case in cases]
    lines.append("| floor (no attention), time | " + " | ".join(floor_cells) + " |")
    for mode in SPECS:
        cells = []
        for case in cases:
            row = by_case[case].get(mode)
            if row is None:
                cells.append("—")
                continue
            target = row.get("target_vs_floor")
            mark = "" if target is None else (" ✓" if row["meets_target"] else f" (≤{target})")
            cells.append(f"{row['vs_floor']:.2f}×{mark}")
        label = " ".join([f"`{mode}`", *(f"{k}={v}" for k, v in SPECS[mode].items())])
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 32768])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=list(DTYPES))
    parser.add_argument("--modes", nargs="+", choices=list(SPECS), default=list(SPECS))
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median)")
    parser.add_argument("--dense-max-n", type=int, default=8192, help="largest n for dense")
    parser.add_argument(
        "--omp-wait-policy", choices=["passive", "active", "inherit"], default="passive"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--suffix", default="", help="appended to the file names")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    policy = args.omp_wait_policy
    if policy != "inherit" and os.environ.get("OMP_WAIT_POLICY") != policy.upper():
        # OpenMP reads its policy once, when torch loads: start again with it set
        env = os.environ | {"OMP_WAIT_POLICY": policy.upper()}
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.floor", *argv], env)
    load_before = os.getloadavg()
    ids = token_ids(max(args.sizes))
    cases = []
    for n in args.sizes:
        for dtype in args.dtypes:
            modes = [mode for mode in args.modes if mode != "dense" or n <= args.dense_max_n]
            cases.append(measure(n, dtype, modes, args.reps, ids, args.device))
    cuda = args.device.startswith("cuda")
    report = {
        "device": device_name(args.device),
        "hardware": torch.cuda.get_device_name(args.device) if cuda else cpu_model(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "model": "all-MiniLM-L6-v2",
        "batch": 1,
        "reps": args.reps,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "inherit"),
        "specs": SPECS,
        "targets_vs_floor": TARGETS,
        "method": "vs_floor = median over interleaved reps of mode time / same-rep floor time",
        "cases": cases,
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
    }
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / f"floor_{report['device']}{args.suffix}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
