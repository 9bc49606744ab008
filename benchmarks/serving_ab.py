"""Short-text serving of an earlier revision's server against this checkout's, round by round.

    python -m benchmarks.serving_ab --revision 7424214            # 8 cycles of 10 s each
    python -m benchmarks.serving_ab --revision HEAD~3 --cycles 12 --seconds 8

Answers "is the server faster than before" on a machine whose speed drifts by more than the
change: benchmarks.serving runs one server after the other, and on a shared VM the same
in-process encoder has run at 135-195 texts/s from one of its rounds to the next.

Method
- Two real `python -m app` subprocesses (tests.e2e.server), started together and kept up for the
  whole run: "old" from `--revision`'s app/, models/ and sparse_core/ (exported with `git
  archive`, benchmarks.serving.source_tree), "new" from this checkout. Same settings: float32,
  uvloop/httptools, everything else default. An idle server costs nothing: it only waits on its
  socket.
- A cycle: the in-process encoder for --seconds (benchmarks.serving.InProcess: this checkout's
  encoder, batches of the servers' max_batch_size, on their streams side by side), then each
  server's closed loop for --seconds (benchmarks.serving.closed_loop: wrk, one thread, 32
  connections, one ~20-word text per POST /v1/embeddings). The servers' order alternates between
  cycles, so that neither always runs first.
- Per cycle: each server's texts/s, its serving efficiency (÷ the cycle's in-process texts/s),
  and the ratio new ÷ old of the two closed loops, which ran back to back. Reported: every cycle
  and the medians.

Writes benchmarks/results/serving_ab_cpu<suffix>.json and .md. Needs Debian's `wrk` on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from benchmarks.serving import ROUTE, InProcess, closed_loop, short_texts, source_tree
from tests.e2e.server import ROOT, Server

RESULTS = Path(__file__).parent / "results"
SETTINGS = {
    "LONGENC_LOG_LEVEL": "warning",
    "LONGENC_DTYPE": "float32",
    "LONGENC_LOOP": "uvloop",
    "LONGENC_HTTP": "httptools",
}
TREES = ("old", "new")


def commit_of(revision: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", revision], capture_output=True, text=True, check=True
    ).stdout.strip()


def summary(cycles: list[dict]) -> dict:
    median = statistics.median
    return {
        tree: {
            "texts_per_s": median([c[tree]["texts_per_s"] for c in cycles]),
            "efficiency": median([c[tree]["efficiency"] for c in cycles]),
            "mean_batch_size": median([c[tree]["mean_batch_size"] for c in cycles]),
            "latency_p99_ms": median([c[tree]["latency_p99_ms"] for c in cycles]),
            "server_cpu_ms_per_text": median([c[tree]["server_cpu_ms_per_text"] for c in cycles]),
        }
        for tree in TREES
    } | {
        "in_process_texts_per_s": median([c["in_process"]["texts_per_s"] for c in cycles]),
        "new_over_old": median([c["new_over_old"] for c in cycles]),
        "cycles_new_faster": sum(c["new_over_old"] > 1 for c in cycles),
    }


def markdown(report: dict) -> str:
    lines = [
        f"old: {report['revision']} ({report['commit'][:12]}); new: this checkout. "
        f"{report['seconds']:g} s per run, float32, uvloop/httptools.",
        "",
        "| cycle | in process texts/s | old texts/s (eff., batch, p99) "
        "| new texts/s (eff., batch, p99) | new ÷ old |",
        "|---:|---:|---|---|---:|",
    ]

    def cell(run: dict) -> str:
        return (
            f"{run['texts_per_s']:.1f} ({run['efficiency']:.2f}, {run['mean_batch_size']:.1f}, "
            f"{run['latency_p99_ms']:.0f} ms)"
        )

    for index, cycle in enumerate(report["cycles"], 1):
        lines.append(
            f"| {index} | {cycle['in_process']['texts_per_s']:.1f} | {cell(cycle['old'])} "
            f"| {cell(cycle['new'])} | {cycle['new_over_old']:.3f} |"
        )
    medians = report["summary"]
    lines.append(
        f"| median | {medians['in_process_texts_per_s']:.1f} | {cell(medians['old'])} "
        f"| {cell(medians['new'])} | **{medians['new_over_old']:.3f}** |"
    )
    lines += [
        "",
        f"new faster in {medians['cycles_new_faster']} of {len(report['cycles'])} cycles.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the servers stop too
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revision", required=True, help="the old server's git revision")
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="per load run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--suffix", default="")
    args = parser.parse_args()
    texts = short_texts()
    work = Path(tempfile.mkdtemp(prefix="longenc-serving-ab-"))
    roots = {"old": source_tree(args.revision, work), "new": ROOT}
    servers: dict[str, Server] = {}
    local: InProcess | None = None
    try:
        for tree in TREES:  # one at a time: each builds its kernels and warms up alone
            servers[tree] = Server(SETTINGS, work / f"server_{tree}.log", roots[tree])
            servers[tree].wait_ready(timeout_s=600)
        info = {tree: httpx.get(f"{server.url}/info").json() for tree, server in servers.items()}
        if info["old"]["forward_threads"] != info["new"]["forward_threads"]:
            raise SystemExit(f"the servers' forward threads differ: {info}")
        answer = httpx.post(f"{servers['new'].url}{ROUTE}", json={"input": texts[0]}).json()
        layout = info["new"]["forward_threads"]
        local = InProcess(
            "float32",
            answer["attention"],
            info["new"]["limits"]["max_batch_size"],
            layout["streams"],
            info["new"]["graph_forward"],
        )
        local.warm_up(texts)
        for server in servers.values():  # warm-up: connections, allocator, caches
            closed_loop(server.url, texts, 2, server.process.pid, work)
        cycles = []
        for index in range(args.cycles):
            cycle = {"in_process": local.run(texts, args.seconds)}
            order = TREES if index % 2 == 0 else TREES[::-1]
            for tree in order:
                server = servers[tree]
                run = closed_loop(server.url, texts, args.seconds, server.process.pid, work)
                run["efficiency"] = run["texts_per_s"] / cycle["in_process"]["texts_per_s"]
                cycle[tree] = run
            cycle["order"] = list(order)
            cycle["new_over_old"] = cycle["new"]["texts_per_s"] / cycle["old"]["texts_per_s"]
            cycles.append(cycle)
            print(
                f"cycle {index + 1}: in process {cycle['in_process']['texts_per_s']:.1f}, "
                f"old {cycle['old']['texts_per_s']:.1f}, new {cycle['new']['texts_per_s']:.1f} "
                f"texts/s, new/old {cycle['new_over_old']:.3f}",
                flush=True,
            )
    finally:
        exit_codes = {tree: server.stop(timeout_s=120) for tree, server in servers.items()}
        if local is not None:
            local.threads.shutdown()
    report = {
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "revision": args.revision,
        "commit": commit_of(args.revision),
        "settings": SETTINGS,
        "forward_threads": layout,
        "graph_forward": {tree: info[tree]["graph_forward"] for tree in TREES},
        "seconds": args.seconds,
        "cycles": cycles,
        "summary": summary(cycles),
        "server_exit_codes": exit_codes,
        "load_average_1min_after": os.getloadavg()[0],
    }
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / f"serving_ab_cpu{args.suffix}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
