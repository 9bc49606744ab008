"""Where a FlexAttention call's time goes on CUDA: the block mask built from the pattern's
block lists, the compiled kernel, and everything else, beside dense SDPA at the same size.

    python -m benchmarks.flex_profile [--n 16384] [--dtype bfloat16]

Each part is timed alone (median of --reps calls, synchronized), then one torch.profiler table
of a whole `attend` call per mode. Writes benchmarks/results/profiles/flex_<gpu>.txt.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.attention import DTYPES, SPECS, device_name
from sparse_core import MODES, AttentionSpec, attend
from sparse_core.flex import compiled_flex_attention, pattern_block_mask

RESULTS = Path(__file__).parent / "results" / "profiles"
FLEX_MODES = [
    "sliding_window",
    "global_window",
    "dilated",
    "strided",
    "fixed",
    "bigbird",
    "routing",
]


def median_ms(call: Callable[[], object], reps: int, device: str) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    call()
    sync()
    times = []
    for _ in range(reps):
        tick = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - tick)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--modes", nargs="+", default=FLEX_MODES)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device, n = args.device, args.n
    generator = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 12, n, 32, generator=generator).to(device, DTYPES[args.dtype])
        for _ in range(3)
    )
    lengths = torch.full((1,), n, dtype=torch.int64, device=device)
    flex = compiled_flex_attention()
    lines = [f"{device_name(device)} n={n} {args.dtype} B=1 H=12 D=32, torch {torch.__version__}"]
    dense = median_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.reps, device)
    lines.append(f"dense SDPA: {dense:.3f} ms")
    lines.append(f"{'mode':15} {'attend':>9} {'pattern':>9} {'mask':>9} {'kernel':>9}  (ms)")
    profiled = []
    with torch.inference_mode():
        for mode in args.modes:
            spec = AttentionSpec(mode, **SPECS[mode])
            factory = MODES[mode].pattern
            pattern = factory(spec, lengths, q, k)
            mask = pattern_block_mask(pattern, lengths, n)
            whole = median_ms(lambda: attend(q, k, v, spec, lengths), args.reps, device)  # noqa: B023
            built = median_ms(lambda: factory(spec, lengths, q, k), args.reps, device)  # noqa: B023
            masked = median_ms(
                lambda: pattern_block_mask(pattern, lengths, n),  # noqa: B023
                args.reps,
                device,
            )
            kernel = median_ms(lambda: flex(q, k, v, block_mask=mask), args.reps, device)  # noqa: B023
            lines.append(f"{mode:15} {whole:9.3f} {built:9.3f} {masked:9.3f} {kernel:9.3f}")
            print(lines[-1], flush=True)
            activities = [torch.profiler.ProfilerActivity.CPU]
            if device.startswith("cuda"):
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as profile:
                for _ in range(3):
                    attend(q, k, v, spec, lengths)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
            cuda = device.startswith("cuda")
            averages = profile.key_averages()
            for sort in ["self_cuda_time_total"] * cuda + ["cpu_time_total"]:
                table = averages.table(sort_by=sort, row_limit=18, max_name_column_width=60)
                profiled.append(f"\n== {mode}: 3 attend calls, by {sort}\n{table}")
    text = "\n".join(lines + profiled)
    print("\n".join(lines))
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"flex_{device_name(device)}.txt"
    path.write_text(text + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
