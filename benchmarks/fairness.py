"""Fairness benchmark: short requests' latency while a maximal long request runs.

    python -m benchmarks.fairness            # about four minutes on a 2-core CPU
    python -m benchmarks.fairness --quick    # a smoke run

Writes benchmarks/results/fairness_<device>.json.

Method
- One `python -m app` server per configuration, on 127.0.0.1, with LONGENC_MAX_DENSE_TOKENS=4096
  (so one long unit of work takes seconds on a CPU, not a minute) and default settings otherwise:
  `lanes` (the default: short inputs take turns with long ones) and `one_lane`
  (LONGENC_SHORT_INPUT_COST=0: every input in one lane, oldest first), side by side in one run.
- Idle: `clients` clients send short texts (~20 words, /encode, default attention) for
  `seconds`; p50/p99 latency.
- Loaded: the same, while one more client sends, back to back, the largest request the server
  admits: dense inputs of max_dense_tokens tokens, as many as max_request_cost allows (eight
  4,096-token inputs here). One long unit of work is one of those inputs' forward pass
  (each runs alone: it costs more than max_batch_cost); its time is read from the long
  requests' x-inference-time header, divided by the inputs.
- The target (issue: short p99 under load < 2 × idle p99 + one long unit) is reported, not
  asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.service import build_texts, text_of_tokens, tokenizer
from tests.e2e.server import Server

RESULTS = Path(__file__).parent / "results"
# Dense inputs up to 4,096 tokens (the default is 8,192) keep one long unit of work to seconds
# on a CPU, so that each phase sees several; every other limit is the default.
COMMON = {"LONGENC_WARMUP": "false", "LONGENC_MAX_DENSE_TOKENS": "4096"}
CONFIGURATIONS = {"lanes": {}, "one_lane": {"LONGENC_SHORT_INPUT_COST": "0"}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def short_load(url: str, texts: list[str], clients: int, seconds: float) -> list[float]:
    """Latencies (s) of short /encode requests from `clients` closed-loop clients."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=600) as http:
            turn = index
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await http.post("/encode", json={"inputs": texts[turn % len(texts)]})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
                turn += clients

    await asyncio.gather(*(client(index) for index in range(clients)))
    return latencies


async def long_load(url: str, body: dict, stop: asyncio.Event) -> list[float]:
    """Per-input forward time (s) of back-to-back maximal long requests until `stop`."""
    units: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        while not stop.is_set():
            response = await http.post("/encode", json=body)
            response.raise_for_status()
            units.append(float(response.headers["x-inference-time"]) / 1000 / len(body["inputs"]))
    return units


async def measure(url: str, texts: dict, clients: int, seconds: float) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        limits = (await http.get("/info")).json()["limits"]
    tokens = limits["max_dense_tokens"]
    count = max(1, limits["max_request_cost"] // tokens**2)
    long_body = {"inputs": [texts["long"]] * count, "attention": {"mode": "dense"}}
    idle = await short_load(url, texts["short"], clients, seconds)
    stop = asyncio.Event()
    long_task = asyncio.create_task(long_load(url, long_body, stop))
    await asyncio.sleep(1.0)  # the first long request is running
    loaded = await short_load(url, texts["short"], clients, seconds)
    stop.set()
    units = await long_task
    unit = statistics.median(units) if units else float("nan")
    idle_p99, loaded_p99 = percentile(idle, 0.99), percentile(loaded, 0.99)
    return {
        "long_request": {"inputs": count, "tokens_each": tokens, "attention": "dense"},
        "idle": {"requests": len(idle), "p50_s": percentile(idle, 0.5), "p99_s": idle_p99},
        "loaded": {"requests": len(loaded), "p50_s": percentile(loaded, 0.5), "p99_s": loaded_p99},
        "long_unit_s": unit,
        "long_requests_done": len(units),
        "target_s": 2 * idle_p99 + unit,
        "met": loaded_p99 < 2 * idle_p99 + unit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    seconds = 10.0 if args.quick else 40.0
    counter = tokenizer()
    corpus = build_texts(quick=True)
    words = " ".join(corpus["2k"]).split() * 8
    texts = {"short": corpus["short"][:64]}
    results = {}
    with tempfile.TemporaryDirectory() as logs:
        for name, settings in CONFIGURATIONS.items():
            server = Server(COMMON | settings, Path(logs) / f"{name}.log")
            try:
                server.wait_ready()
                info = httpx.get(f"{server.url}/info", timeout=60).json()
                tokens = info["limits"]["max_dense_tokens"]
                texts["long"] = text_of_tokens(words, 0, tokens, counter)
                results[name] = asyncio.run(measure(server.url, texts, args.clients, seconds))
            finally:
                server.stop()
            print(name, json.dumps(results[name], indent=1))
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "device": info["device"],
        "clients": args.clients,
        "seconds_per_phase": seconds,
        "configurations": results,
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = "_smoke" if args.quick else ""
    path = RESULTS / f"fairness_{info['device'].split(':')[0]}{suffix}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
