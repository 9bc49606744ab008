"""Attention kernel benchmark: time, peak extra memory, speed-up and efficiency per mode and n.

    python -m benchmarks.attention                      # the full run (2-core CPU: ~15-30 min)
    python -m benchmarks.attention --sizes 1024 2048 --reps 1 --output /tmp/attn   # a smoke run
    python -m benchmarks.attention --sizes 1024 4096 16384 --dtypes float32 \
        --suffix _engine                                 # a reduced run
    python -m benchmarks.attention --sizes 16384 --modes dense bigbird routing \
        --output /tmp/attn                               # a quick check of a few modes

Writes benchmarks/results/attention_<device>.json and .png (device: "cpu" or the GPU's name).

Method
- Every (mode, n, dtype) case runs in a fresh subprocess, so no case inherits another's heap.
- Peak extra memory on CPU: the case process builds q, k, v, warms the kernel up on a tiny input,
  hands freed heap back to the OS (malloc_trim), resets the kernel's high-water mark by writing 5
  to /proc/self/clear_refs, reads VmRSS, makes one call, and reports VmHWM - VmRSS: the most
  resident memory the call ever added, its output included. RSS counts touched pages, so memory
  that was reserved but never used is not counted, and nothing freed early is missed.
  On CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus the memory
  allocated before the call.
- Time: the median of --reps further calls (the memory call is the warm-up), stopping early after
  --case-seconds; the JSON keeps every rep. CUDA calls are synchronized.
- Useful FLOPs = 4·D·(allowed (query, key) pairs)·B·H: n² for dense, Σ block² for block, the band
  for sliding_window, n·k for topk, each rule's own count for the block-listed modes (see
  `useful_pairs`; routing at its (1 + r)·b keys per query), n² for threshold (it scores every
  pair), n·m for performer and nystrom. Efficiency = useful FLOP/s ÷ dense SDPA's FLOP/s at the
  same n and dtype in the same run; speed-up = dense time ÷ mode time. Dense above --dense-max-n
  and the other O(n²) modes (topk, threshold) above --quadratic-max-n are not run: the JSON
  keeps a record for each with `not_run` saying why, and speed-up and efficiency are null ("not
  measured") for every mode at that n, never extrapolated.
- --interleave-dense: each case process also times dense SDPA on the same inputs, alternating
  with the mode's calls, and the ratios use that dense time (`dense_time_s`): on a CPU shared
  with other work, load drifts over minutes, and a dense case measured at another moment can
  move every ratio of its n by 2×.
- Peak extra memory is also reported as a multiple of q's bytes (`extra_per_q_bytes`).
- Tile waste (sliding_window, CPU): 1 - allowed pairs ÷ pairs the kernel computes, from the
  kernel's own tile plan.
- Shared CPUs: case processes run with OMP_WAIT_POLICY=passive unless --omp-wait-policy says
  otherwise. With spinning OpenMP workers on a machine whose cores other processes also use, a
  descheduled worker turns every parallel region into a scheduler time slice: kernels made of many
  tensor ops (top-k, the sliding-window tiles) then measure the machine's load, not themselves.
  Dense SDPA is one long parallel region and is timed under the same setting. The JSON records
  the policy and the 1-minute load average of every case.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from sparse_core import MODES, AttentionSpec, _native, attend
from sparse_core._window_tiles import allowed_pairs, band_block_pairs, plan, tile_size

RESULTS = Path(__file__).parent / "results"
SPECS = {
    "dense": {},
    "block": {"block_size": 256},
    "sliding_window": {"window": 512},
    "topk": {"top_k": 64},
    "global_window": {"window": 512, "global_tokens": 1},
    "dilated": {"window": 512, "dilation": 2},
    "strided": {"stride": 256},
    "fixed": {"block_size": 256, "summary": 16},
    "bigbird": {"block_size": 64, "window_blocks": 3, "global_blocks": 2, "random_blocks": 3},
    "routing": {"block_size": 64, "blocks": 4},
    "threshold": {"threshold": 0.01},
    "performer": {"features": 256},
    "nystrom": {"landmarks": 64},
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def useful_pairs(spec: AttentionSpec, n: int) -> int:
    """Allowed (query, key) pairs of one head of one sequence of n tokens: the work the rule
    asks for, whatever a kernel computes. threshold scores every pair (n²); performer and
    nystrom count n·m (their GEMMs cost a small multiple of 4·D·n·m FLOPs)."""
    rows = torch.arange(n, dtype=torch.int64)
    if spec.mode == "block":
        size = min(spec.block_size, n)
        return (n // size) * size * size + (n % size) ** 2
    if spec.mode == "sliding_window":
        return allowed_pairs(n, spec.window // 2)
    if spec.mode == "topk":
        return n * min(spec.top_k, n)
    if spec.mode == "global_window":
        half, count = spec.window // 2, min(spec.global_tokens, n)
        band = (rows + half).clamp(max=n - 1) - (rows - half).clamp(min=0) + 1
        extra = (rows - half).clamp(min=0).clamp(max=count)  # global keys left of the band
        per_row = torch.where(rows < count, n, band + extra)
        return int(per_row.sum())
    if spec.mode == "dilated":
        half, step = spec.window // 2, spec.dilation
        per_row = (rows // step).clamp(max=half) + ((n - 1 - rows) // step).clamp(max=half) + 1
        return int(per_row.sum())
    if spec.mode == "strided":
        near = spec.stride - 1
        band = rows.clamp(max=near) + (n - 1 - rows).clamp(max=near) + 1
        far = rows // spec.stride + (n - 1 - rows) // spec.stride  # j = i ± m·l, m >= 1
        return int((band + far).sum())
    if spec.mode == "fixed":
        size, count = spec.block_size, spec.summary
        first = rows // size * size
        own = (first + size).clamp(max=n) - first
        summaries = (n // size) * count + max(0, n % size - (size - count))
        in_own = ((first + size).clamp(max=n) - (first + size - count)).clamp(min=0)
        return int((own + summaries - in_own).sum())
    if spec.mode == "bigbird":
        return bigbird_pairs(spec, n)
    if spec.mode == "routing":
        blocks = -(-n // spec.block_size)
        return n * min(n, (1 + min(spec.blocks, blocks - 1)) * spec.block_size)
    if spec.mode == "performer":
        return n * spec.features
    if spec.mode == "nystrom":
        return n * min(n, spec.landmarks)
    return n * n


def bigbird_pairs(spec: AttentionSpec, n: int) -> int:
    """BigBird's allowed pairs from its block rule and R(t) (the real draw, O(nb·r))."""
    from sparse_core.random_blocks import random_blocks

    size = spec.block_size
    blocks = -(-n // size)
    reach, count = (spec.window_blocks - 1) // 2, spec.global_blocks
    widths = torch.full((blocks,), size, dtype=torch.int64)
    widths[-1] = n - (blocks - 1) * size
    prefix = torch.nn.functional.pad(widths.cumsum(0), (1, 0))  # keys before block s
    t = torch.arange(blocks)
    low, high = (t - reach).clamp(min=0), (t + reach).clamp(max=blocks - 1)
    band = prefix[high + 1] - prefix[low]
    global_left = prefix[low.clamp(max=count)]  # global keys left of the band
    keys = torch.where(t < count, n, band + global_left)
    table = random_blocks(spec.seed, blocks, reach, count, spec.random_blocks, torch.device("cpu"))
    drawn = torch.where(table >= 0, widths[table.clamp(min=0)], 0).sum(dim=-1)
    keys = torch.where(t < count, keys, keys + drawn)
    return int((keys * widths).sum())


def tile_waste(spec: AttentionSpec, n: int, dtype: torch.dtype) -> float | None:
    """Share of the scores the CPU sliding-window kernel computes that its mask throws away:
    the C++ kernel's band in float32 when built, else the SDPA tiles."""
    if spec.mode != "sliding_window":
        return None
    half = spec.window // 2
    if half >= n - 1:
        return 1 - allowed_pairs(n, half) / (n * n)
    tile = tile_size(spec.window)
    if dtype == torch.float32 and _native.block_attention() is not None:
        computed = band_block_pairs(n, half, tile)
    else:
        computed = plan(n, half, tile).computed_pairs()
    return 1 - allowed_pairs(n, half) / computed


# ---- one case, in its own process ------------------------------------------------------------


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _peak_extra_cpu(call) -> int:
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_bytes("VmRSS")
    call()
    return _status_bytes("VmHWM") - before


def _peak_extra_cuda(call) -> int:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def run_case(case: dict) -> dict:
    """Measure one (mode, n, dtype, device) case in this process; returns the result record."""
    device, dtype = case["device"], DTYPES[case["dtype"]]
    spec = AttentionSpec(case["mode"], **SPECS[case["mode"]])
    batch, heads, head_dim, n = case["batch"], case["heads"], case["head_dim"], case["n"]
    generator = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(batch, heads, n, head_dim, generator=generator).to(device, dtype)
        for _ in range(3)
    )
    cuda = device.startswith("cuda")

    def call(which: AttentionSpec = spec) -> None:
        attend(q, k, v, which)
        if cuda:
            torch.cuda.synchronize()

    # --interleave-dense: dense SDPA timed in this process between the mode's calls, so that
    # both see the same machine load (a shared CPU's load drifts over a run's minutes)
    dense = AttentionSpec("dense") if case.get("interleave_dense") else None
    with torch.inference_mode():
        warm = q[:, :, : min(n, 1024)].contiguous()
        attend(warm, warm, warm, spec)  # load kernels, start thread pools, take the same path
        peak = _peak_extra_cuda(call) if cuda else _peak_extra_cpu(call)
        times: list[float] = []
        dense_times: list[float] = []
        started = time.perf_counter()
        while len(times) < case["reps"]:
            for which, spent in ((spec, times), (dense, dense_times)):
                if which is not None:
                    tick = time.perf_counter()
                    call(which)
                    spent.append(time.perf_counter() - tick)
            if time.perf_counter() - started > case["case_seconds"]:
                break
    pairs = useful_pairs(spec, n) * batch * heads
    if dense is not None:
        case = {
            **case,
            "dense_time_s": statistics.median(dense_times),
            "dense_times_s": dense_times,
            "dense_flops": 4 * head_dim * n * n * batch * heads,
        }
    return {
        **case,
        "spec": spec.to_dict(),
        "time_s": statistics.median(times),
        "times_s": times,
        "peak_extra_bytes": peak,
        "q_bytes": q.nbytes,
        "useful_flops": 4 * head_dim * pairs,
        "tile_waste": tile_waste(spec, n, dtype) if not cuda else None,
        "load_avg_1min": os.getloadavg()[0],
    }


# ---- the driver ------------------------------------------------------------------------------


def measure(case: dict) -> dict:
    """Run `case` in a fresh interpreter and parse its one-line JSON answer."""
    command = [sys.executable, "-m", "benchmarks.attention", "--case", json.dumps(case)]
    env = dict(os.environ)
    if case["omp_wait_policy"] != "inherit":
        env["OMP_WAIT_POLICY"] = case["omp_wait_policy"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        return {**case, "error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_here(case: dict) -> dict:
    """Run `case` in this process; an error (out of memory, say) becomes the record's error."""
    try:
        return run_case(case)
    except Exception as error:  # noqa: BLE001 - reported in the results, the run goes on
        return {**case, "error": [f"{type(error).__name__}: {error}"[:500]]}
    finally:
        if case["device"].startswith("cuda"):
            torch.cuda.empty_cache()


def not_run_reason(mode: str, n: int, args: argparse.Namespace) -> str | None:
    """Why a (mode, n) case is skipped, or None: O(n²) kernels above their length limits."""
    if mode == "dense" and n > args.dense_max_n:
        times = (n / args.dense_max_n) ** 2
        return (
            f"dense SDPA scores all n² pairs: at n={n} a call takes ~{times:.0f}× its"
            f" n={args.dense_max_n} time on this device (--dense-max-n)"
        )
    if mode != "dense" and MODES[mode].pairwise and n > args.quadratic_max_n:
        return f"{mode} scores all n² pairs; above --quadratic-max-n={args.quadratic_max_n}"
    return None


def add_ratios(results: list[dict]) -> None:
    """Speed-up and efficiency against dense of the same n and dtype; None where not measured."""
    dense = {(r["n"], r["dtype"]): r for r in results if r["mode"] == "dense" and "time_s" in r}
    for record in results:
        if "time_s" in record:
            record["extra_per_q_bytes"] = record["peak_extra_bytes"] / record["q_bytes"]
        base = dense.get((record["n"], record["dtype"]))
        if "dense_time_s" in record:  # dense timed beside the mode, in its process
            base = {"time_s": record["dense_time_s"], "useful_flops": record["dense_flops"]}
        ok = base is not None and "time_s" in record
        record["speedup_vs_dense"] = base["time_s"] / record["time_s"] if ok else None
        record["efficiency"] = (
            (record["useful_flops"] / record["time_s"]) / (base["useful_flops"] / base["time_s"])
            if ok
            else None
        )


def device_name(device: str) -> str:
    """ "cpu", or the CUDA GPU's name slugified (e.g. "nvidia-h100-80gb-hbm3")."""
    if not device.startswith("cuda"):
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def plot(results: list[dict], title: str, path: Path) -> None:
    """Time and peak extra memory vs n, log-log, one line per mode; one row per dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = sorted({r["dtype"] for r in results})
    figure, axes = plt.subplots(len(dtypes), 2, figsize=(11, 4 * len(dtypes)), squeeze=False)
    for row, dtype in enumerate(dtypes):
        for mode in SPECS:
            points = sorted(
                (r["n"], r["time_s"], r["peak_extra_bytes"])
                for r in results
                if r["mode"] == mode and r["dtype"] == dtype and "time_s" in r
            )
            if not points:
                continue
            label = " ".join([mode, *(f"{name}={value}" for name, value in SPECS[mode].items())])
            sizes = [p[0] for p in points]
            axes[row][0].plot(sizes, [p[1] for p in points], marker="o", label=label)
            axes[row][1].plot(sizes, [p[2] / 2**20 for p in points], marker="o", label=label)
        for column, ylabel in enumerate(("time per call (s)", "peak extra memory (MiB)")):
            axis = axes[row][column]
            axis.set(xscale="log", yscale="log", xlabel="sequence length n", ylabel=ylabel)
            axis.set_title(f"{dtype}", fontsize=10)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def print_table(results: list[dict]) -> None:
    header = "mode            dtype     n       time_s   peak_MiB  xq_bytes  speedup  effic  waste"
    print(header)
    for r in results:
        if "not_run" in r:
            print(f"{r['mode']:15} {r['dtype']:9} {r['n']:<7} not run: {r['not_run']}")
            continue
        if "time_s" not in r:
            print(f"{r['mode']:15} {r['dtype']:9} {r['n']:<7} error: {r.get('error')}")
            continue

        def show(value: float | None, digits: int = 2) -> str:
            return "n/m" if value is None else f"{value:.{digits}f}"

        print(
            f"{r['mode']:15} {r['dtype']:9} {r['n']:<7} {r['time_s']:<8.4f} "
            f"{r['peak_extra_bytes'] / 2**20:<9.1f} {r['peak_extra_bytes'] / r['q_bytes']:<9.2f} "
            f"{show(r['speedup_vs_dense'], 1):8} {show(r['efficiency']):6} "
            f"{show(r['tile_waste'], 3)}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1024, 4096, 16384, 32768, 65536] + ([131072] if cuda else []),
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=sorted(DTYPES),
        default=["bfloat16", "float16"] if cuda else ["float32", "bfloat16"],
    )
    parser.add_argument("--modes", nargs="+", choices=list(SPECS), default=list(SPECS))
    parser.add_argument("--reps", type=int, default=3, help="timed calls per case (median)")
    parser.add_argument(
        "--case-seconds", type=float, default=60.0, help="stop timing a case after this long"
    )
    parser.add_argument(
        "--dense-max-n",
        type=int,
        default=65536 if cuda else 16384,
        help="largest n at which dense SDPA is run; above it dense is not measured",
    )
    parser.add_argument(
        "--quadratic-max-n",
        type=int,
        default=65536 if cuda else 16384,
        help="largest n at which topk and threshold (O(n²) scores) are run",
    )
    parser.add_argument(
        "--interleave-dense",
        action="store_true",
        help="time dense SDPA between each mode's calls in the mode's own process and take "
        "speed-up and efficiency from those pairs (a shared machine's load drifts)",
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=["passive", "active", "inherit"],
        default="passive",
        help="OMP_WAIT_POLICY of the case processes (inherit: leave the environment's)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--suffix", default="", help="appended to the file names (attention_<device><suffix>)"
    )
    parser.add_argument(
        "--replot", type=Path, help="redraw the PNG of an existing results JSON and exit"
    )
    parser.add_argument(
        "--in-process",
        action=argparse.BooleanOptionalAction,
        default=cuda,
        help="run every case in this process (default on CUDA: compiled FlexAttention graphs are "
        "reused and memory is read per case from the allocator; on CPU each case gets a fresh "
        "process so that its peak RSS is its own)",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case as JSON
    return parser.parse_args(argv)


def plot_report(report: dict, path: Path) -> None:
    """The PNG of one results JSON: its title names the machine, the shape and dense's limit."""
    shape = report["shape"]
    title = (
        f"attention kernels on {report['hardware']} ({report['threads']} threads), "
        f"B={shape['batch']}, H={shape['heads']}, D={shape['head_dim']}; "
        f"dense run up to n={report['dense_max_n']}"
    )
    plot(report["results"], title, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    if args.replot:
        plot_report(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return
    results = []
    for dtype in args.dtypes:
        for n in args.sizes:
            for mode in args.modes:
                reason = not_run_reason(mode, n, args)
                if reason:
                    results.append({"mode": mode, "n": n, "dtype": dtype, "not_run": reason})
                    print(f"{mode:15} {dtype:9} n={n:<7} not run: {reason}", flush=True)
                    continue
                case = {
                    "mode": mode,
                    "n": n,
                    "dtype": dtype,
                    "device": args.device,
                    "batch": args.batch,
                    "heads": args.heads,
                    "head_dim": args.head_dim,
                    "reps": args.reps,
                    "case_seconds": args.case_seconds,
                    "omp_wait_policy": args.omp_wait_policy,
                }
                if args.interleave_dense and mode != "dense" and n <= args.dense_max_n:
                    case["interleave_dense"] = True
                results.append(run_here(case) if args.in_process else measure(case))
                record = results[-1]
                shown = f"{record['time_s']:.4f} s" if "time_s" in record else record["error"]
                print(f"{mode:15} {dtype:9} n={n:<7} {shown}", flush=True)
                write_report(args, results)  # a run stopped early keeps what it measured
    stem, report = write_report(args, results)
    plot_report(report, stem.with_suffix(".png"))
    print_table(report["results"])
    print(f"wrote {stem}.json and {stem}.png")


def write_report(args: argparse.Namespace, results: list[dict]) -> tuple[Path, dict]:
    """Writes the results JSON of the cases measured so far (ratios added to copies of the
    records); returns its path without the suffix, and the report."""
    results = [dict(record) for record in results]
    add_ratios(results)
    name = device_name(args.device)
    hardware = cpu_model() if name == "cpu" else torch.cuda.get_device_name(args.device)
    report = {
        "device": name,
        "hardware": hardware,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "shape": {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim},
        "specs": SPECS,
        "dense_max_n": args.dense_max_n,
        "quadratic_max_n": args.quadratic_max_n,
        "sizes": args.sizes,
        "dtypes": args.dtypes,
        "not_measured": "speedup_vs_dense / efficiency are null where dense was not run",
        "results": results,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / f"attention_{name}{args.suffix}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    return stem, report


if __name__ == "__main__":
    main()
