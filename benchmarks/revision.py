"""The working tree's attention kernels against an earlier revision's, side by side in one run.

    python -m benchmarks.revision --revision 03cbe1f^ --modes block sliding_window --sizes 16384

Answers "no slower than before" on this machine, where a table measured on another machine
cannot: the old `sparse_core` is exported from git (`git archive`) into a temporary directory,
and fresh interpreters, alternating between the two trees for --rounds rounds, each time every
(mode, n) case: inputs built as benchmarks.attention builds them (B=1, H=12, D=32, seeded), one
warm-up call on 1,024 tokens and one at full size, then --reps calls of the mode alternating
with dense SDPA. Reported per case: each tree's median time and speed-up over dense (the dense
calls of its own processes), and the ratio new ÷ old of the mode's time per round (the two
processes of a round run back to back), with the median over rounds. float32 or bfloat16;
OMP_WAIT_POLICY=passive as in benchmarks.attention.

Writes benchmarks/results/revision_<device><suffix>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def run_case(case: dict) -> dict:
    """In this process (whichever tree's sparse_core is on the path): one case's times."""
    import torch
    import torch.nn.functional as F

    import sparse_core
    from sparse_core import AttentionSpec, attend

    dtype = getattr(torch, case["dtype"])
    spec = AttentionSpec(case["mode"], **case["spec"])
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 12, case["n"], 32, generator=generator).to(dtype) for _ in range(3))
    times, dense = [], []
    with torch.inference_mode():
        warm = q[:, :, :1024].contiguous()
        attend(warm, warm, warm, spec)
        attend(q, k, v, spec)
        for _ in range(case["reps"]):
            tick = time.perf_counter()
            attend(q, k, v, spec)
            times.append(time.perf_counter() - tick)
            tick = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v)
            dense.append(time.perf_counter() - tick)
    return {"times_s": times, "dense_times_s": dense, "package": sparse_core.__file__}


def export(revision: str, into: Path) -> None:
    """`sparse_core` as of `revision`, into `into`/sparse_core."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "sparse_core"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def measure(tree: Path, case: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{ROOT}", OMP_WAIT_POLICY="passive")
    # -P: the working directory is not put first on sys.path, so the old tree's package is used
    command = [sys.executable, "-P", "-m", "benchmarks.revision", "--case", json.dumps(case)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(result["package"]).is_relative_to(tree):  # the other tree's package: no comparison
        raise RuntimeError(f"expected sparse_core from {tree}, imported {result['package']}")
    return result


def summarize(rounds: list[dict]) -> dict:
    """Medians per tree and the per-round ratio new ÷ old of the mode's median time."""
    out = {}
    for tree in ("old", "new"):
        times = [statistics.median(r[tree]["times_s"]) for r in rounds]
        dense = [statistics.median(r[tree]["dense_times_s"]) for r in rounds]
        out[tree] = {
            "time_s": statistics.median(times),
            "dense_time_s": statistics.median(dense),
            "speedup_vs_dense": statistics.median(d / t for d, t in zip(dense, times, strict=True)),
        }
    ratios = [
        statistics.median(r["new"]["times_s"]) / statistics.median(r["old"]["times_s"])
        for r in rounds
    ]
    return out | {"new_over_old_by_round": ratios, "new_over_old": statistics.median(ratios)}


def markdown(report: dict) -> str:
    lines = [
        f"Working tree against `{report['revision']}` ({report['dtype']}, {report['rounds']} "
        f"alternating rounds of {report['reps']} calls; machine: {report['hardware']})",
        "",
        "| mode | n | old: time, × dense | new: time, × dense | new ÷ old (median; rounds) |",
        "|---|---:|---:|---:|---|",
    ]
    for case in report["cases"]:
        old, new = case["old"], case["new"]
        rounds = " / ".join(f"{r:.2f}" for r in case["new_over_old_by_round"])
        lines.append(
            f"| `{case['mode']}` | {case['n']:,} | {old['time_s']:.3f} s, "
            f"{old['speedup_vs_dense']:.1f}× | {new['time_s']:.3f} s, "
            f"{new['speedup_vs_dense']:.1f}× | {case['new_over_old']:.2f} ({rounds}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--revision", default="03cbe1f^")
    # the modes and parameters of benchmarks.attention (imported by the driver only: a case
    # process runs the other revision's sparse_core, which benchmarks.attention may not match)
    parser.add_argument("--modes", nargs="+", default=["block", "sliding_window"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[16384])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--suffix", default="")
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    from benchmarks.attention import SPECS, cpu_model

    if unknown := sorted(set(args.modes) - SPECS.keys()):
        parser.error(f"unknown modes {unknown}; choose from {sorted(SPECS)}")

    cases = []
    with tempfile.TemporaryDirectory() as old:
        export(args.revision, Path(old))
        trees = {"old": Path(old), "new": ROOT}
        for n in args.sizes:
            for mode in args.modes:
                case = {
                    "mode": mode, "spec": SPECS[mode], "n": n, "dtype": args.dtype,
                    "reps": args.reps,
                }  # fmt: skip
                rounds = []
                for index in range(args.rounds):
                    # alternate which tree goes first, so that neither always follows the other
                    order = ("old", "new") if index % 2 == 0 else ("new", "old")
                    rounds.append({tree: measure(trees[tree], case) for tree in order})
                    last = {tree: round(rounds[-1][tree]["times_s"][-1], 3) for tree in order}
                    print(mode, n, index, last, flush=True)
                cases.append({**case, "rounds": rounds, **summarize(rounds)})
    report = {
        "revision": args.revision,
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", args.revision],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip(),  # fmt: skip
        "dtype": args.dtype,
        "rounds": args.rounds,
        "reps": args.reps,
        "hardware": cpu_model(),
        "threads": __import__("torch").get_num_threads(),
        "load_avg_1min_after": os.getloadavg()[0],
        "cases": cases,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / f"revision_cpu{args.suffix}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
