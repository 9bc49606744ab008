"""Serving efficiency: short texts through HTTP against the same server code's encoder in process.

    python -m benchmarks.serving                     # the full run (CPU: about 8 minutes)
    python -m benchmarks.serving --quick             # a smoke run (about 2 minutes)
    python -m benchmarks.serving --profile DIR       # and py-spy the server (an extra run)
    python -m benchmarks.serving --streams 1 0 1 0   # one pass at a time against streams, in turn
    python -m benchmarks.serving --graph-forward off on off on   # eager passes against graphs
    python -m benchmarks.serving --tree HEAD here HEAD here      # a revision against this tree

Writes benchmarks/results/serving_cpu<suffix>.json (serving_cpu_smoke.json with --quick).
Needs Debian's `wrk` on PATH.

Method
- The server is a real `python -m app` subprocess on 127.0.0.1 (tests.e2e.server), default
  settings but LONGENC_DTYPE, LONGENC_LOOP, LONGENC_HTTP, LONGENC_CPU_STREAMS and
  LONGENC_GRAPH_FORWARD, once per dtype, --stacks entry (uvicorn's event loop/HTTP parser:
  asyncio/h11 and uvloop/httptools), --streams entry (0: the server's own choice; 1: one
  forward pass at a time), --graph-forward entry (on: dense passes as traced graphs) and --tree
  entry ("here": this checkout; a git revision: its app/, models/ and sparse_core/, exported
  with `git archive` into a temporary directory and run from there).
  Every request is POST /v1/embeddings with one ~20-word real-English text (Debian's license
  texts), the server's default attention.
- The load generators cost little CPU on the shared cores (their CPU time is recorded beside
  the server's, per text):
  - closed loop: `wrk` (one thread) with 32 connections, each sending its next request when
    the last is answered, cycling through 512 different texts (a Lua script); latency
    percentiles from wrk's own histogram. Every non-2xx answer counts as an error.
  - open loop: Poisson arrivals at a fixed rate (50% and 80% of the closed loop's
    throughput), cycling through the same texts, from a small asyncio client in this process
    that writes pre-rendered requests on raw keep-alive sockets (a new connection when none is
    idle): arrivals never wait for answers, and latency counts from each request's due time, so
    queueing is never hidden. h2load's --rps is not used: its connections all start together
    and send in step, in bursts of one request per connection.
- In process: the same dtype's encoder (models.load_encoder, as the server loads it), the same
  texts, tokenized and run as the server's batcher runs them (`encode_batch`, batches of the
  server's max_batch_size, the attention the server resolved, graphs as the server's /info
  says), on the server's streams side by side (its /info forward_threads,
  app.streams.ForwardThreads), in this process while the server sits idle.
- Rounds: in process, then the closed loop, back to back, --rounds times; serving efficiency =
  HTTP texts/s ÷ in-process texts/s of the same round, the median over rounds (same dtype, same
  run; drift of a shared machine hits both halves of a round alike). The open loops follow.
- The server's resident memory (VmRSS, and its peak so far, VmHWM) is read after each closed
  loop.
- Other load on the machine skews everything; the 1-minute load average before and after each
  dtype is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.service import corpus, percentile, process_cpu_s
from tests.e2e.server import ROOT, Server

RESULTS = Path(__file__).parent / "results"
ROUTE = "/v1/embeddings"
CLOSED_CONNECTIONS = 32
OPEN_FRACTIONS = (0.5, 0.8)
TEXTS = 512
WORDS = 20

# wrk's script: cycle through pre-formatted requests; report wrk's own statistics as JSON.
WRK_SCRIPT = r"""
local bodies = {BODIES}
local requests = {}
local sent = 0

init = function(args)
  for index, body in ipairs(bodies) do
    requests[index] = wrk.format("POST", "{ROUTE}", {["Content-Type"] = "application/json"}, body)
  end
end

request = function()
  sent = sent + 1
  return requests[(sent % #requests) + 1]
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '\nRESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def short_texts() -> list[str]:
    """TEXTS texts of WORDS words each, consecutive pieces of the corpus."""
    words = corpus().split()
    return [" ".join(words[i * WORDS : (i + 1) * WORDS]) for i in range(TEXTS)]


def lua_string(text: str) -> str:
    """`text` as a Lua long string, whatever it holds."""
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not on PATH; install Debian's {name} (apt-get install)")
    return path


def run_measured(command: list[str], server_pid: int) -> tuple[str, dict[str, float]]:
    """Run a load generator to its end: its output, the wall time, and the CPU seconds it, the
    server and the server's event loop (its main thread) used meanwhile."""
    server, loop = process_cpu_s(server_pid), process_cpu_s(server_pid, thread=server_pid)
    children = os.times()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return done.stdout, {
        "wall_s": wall,
        "server_cpu_s": process_cpu_s(server_pid) - server,
        "server_event_loop_cpu_s": process_cpu_s(server_pid, thread=server_pid) - loop,
        "load_generator_cpu_s": after.children_user
        + after.children_system
        - children.children_user
        - children.children_system,
    }


def closed_loop(url: str, texts: list[str], seconds: float, server_pid: int, work: Path) -> dict:
    """wrk: CLOSED_CONNECTIONS connections, one thread, for `seconds`."""
    bodies = ", ".join(lua_string(json.dumps({"input": text})) for text in texts)
    script = work / "embeddings.lua"
    script.write_text(WRK_SCRIPT.replace("{ROUTE}", ROUTE).replace("{BODIES}", "{" + bodies + "}"))
    command = [
        tool("wrk"),
        "--threads=1",
        f"--connections={CLOSED_CONNECTIONS}",
        f"--duration={seconds:g}s",
        "--timeout=60s",
        f"--script={script}",
        url + ROUTE,
    ]
    batches_before = batch_sizes(url)
    output, cpu = run_measured(command, server_pid)
    batches = {key: value - batches_before[key] for key, value in batch_sizes(url).items()}
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    stats = json.loads(line.removeprefix("RESULT "))
    errors = sum(stats[key] for key in ("non_2xx", "connect_errors", "read_errors", "timeouts"))
    answered = stats["requests"]
    return {
        "loop": "closed",
        "connections": CLOSED_CONNECTIONS,
        "requests": answered,
        "errors": errors,
        "texts_per_s": (answered - stats["non_2xx"]) / (stats["duration_us"] / 1e6),
        "latency_p50_ms": stats["p50_us"] / 1000,
        "latency_p90_ms": stats["p90_us"] / 1000,
        "latency_p99_ms": stats["p99_us"] / 1000,
        "latency_max_ms": stats["max_us"] / 1000,
        **per_text(cpu, answered),
        "batches": batches["count"],
        "mean_batch_size": batches["sum"] / max(1, batches["count"]),
        **server_memory_mb(server_pid),
        "wrk": stats,
    }


def server_memory_mb(pid: int) -> dict[str, float]:
    """The server's resident memory now and at its peak so far (VmRSS, VmHWM), in MiB."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        f"server_{name}_mb": int(status[field].split()[0]) / 1024
        for name, field in (("rss", "VmRSS"), ("peak_rss", "VmHWM"))
    }


def batch_sizes(url: str) -> dict[str, float]:
    """The server's longenc_batch_size histogram so far, summed over modes: count and sum."""
    totals = {"count": 0.0, "sum": 0.0}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        for key in totals:
            if line.startswith(f"longenc_batch_size_{key}{{"):
                totals[key] += float(line.rpartition(" ")[2])
    return totals


def open_loop(url: str, texts: list[str], rate: float, seconds: float, server_pid: int) -> dict:
    """Poisson arrivals at `rate` requests/s for `seconds`, whatever the answers do: each
    request goes out at its due time on an idle keep-alive connection, or a new one if none is
    idle, so a slow server never slows the arrivals. Latency counts from the due time."""
    host, port = url.removeprefix("http://").split(":")
    requests = [http_request(host, json.dumps({"input": text})) for text in texts]
    server, loop_cpu = process_cpu_s(server_pid), process_cpu_s(server_pid, thread=server_pid)
    cpu, started = time.process_time(), time.perf_counter()
    latencies, statuses = asyncio.run(poisson_load(host, int(port), requests, rate, seconds))
    wall = time.perf_counter() - started
    ok = [latency for latency, status in zip(latencies, statuses, strict=True) if status == 200]
    counters = {
        "wall_s": wall,
        "server_cpu_s": process_cpu_s(server_pid) - server,
        "server_event_loop_cpu_s": process_cpu_s(server_pid, thread=server_pid) - loop_cpu,
        "load_generator_cpu_s": time.process_time() - cpu,
    }
    return {
        "loop": "open",
        "offered_per_s": rate,
        "requests": len(statuses),
        "errors": len(statuses) - len(ok),
        "texts_per_s": len(ok) / wall,
        "latency_p50_ms": 1000 * percentile(ok, 50),
        "latency_p90_ms": 1000 * percentile(ok, 90),
        "latency_p99_ms": 1000 * percentile(ok, 99),
        "latency_max_ms": 1000 * max(ok, default=float("nan")),
        **per_text(counters, len(statuses)),
    }


def http_request(host: str, body: str) -> bytes:
    encoded = body.encode()
    return (
        f"POST {ROUTE} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(encoded)}\r\n\r\n"
    ).encode() + encoded


async def poisson_load(
    host: str, port: int, requests: list[bytes], rate: float, seconds: float
) -> tuple[list[float], list[int]]:
    """Send `requests` in turn with exponential gaps of mean 1/rate; (latency, status) each."""
    loop = asyncio.get_running_loop()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened: list[asyncio.StreamWriter] = []
    latencies: list[float] = []
    statuses: list[int] = []

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(host, port)
        opened.append(writer)
        return reader, writer

    async def send(request: bytes, due: float) -> None:
        reader, writer = idle.pop() if idle else await connect()
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            # the server closed this connection while it sat idle (its keep-alive timeout),
            # before reading the request: send it again on a new one
            reader, writer = await connect()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
        await reader.readexactly(length)
        latencies.append(loop.time() - due)
        statuses.append(int(head[9:12]))
        idle.append((reader, writer))

    arrivals = random.Random(0)
    tasks = []
    due = start = loop.time()
    while due < start + seconds:
        await asyncio.sleep(max(0.0, due - loop.time()))
        tasks.append(asyncio.create_task(send(requests[len(tasks) % len(requests)], due)))
        due += arrivals.expovariate(rate)
    await asyncio.gather(*tasks)
    for writer in opened:
        writer.close()
    return latencies, statuses


def per_text(cpu: dict[str, float], texts: int) -> dict[str, float]:
    texts = max(1, texts)
    return cpu | {
        "server_cpu_ms_per_text": 1000 * cpu["server_cpu_s"] / texts,
        "server_event_loop_cpu_ms_per_text": 1000 * cpu["server_event_loop_cpu_s"] / texts,
        "load_generator_cpu_ms_per_text": 1000 * cpu["load_generator_cpu_s"] / texts,
    }


class InProcess:
    """The server's encoder in this process, run as the server runs short batches: tokenize +
    encode_batch, batch_size texts a call, on each of the server's streams side by side (the
    same app.streams.ForwardThreads)."""

    def __init__(
        self, dtype: str, attention: dict, batch_size: int, streams: int, graph_forward: bool
    ) -> None:
        import torch

        from app.streams import ForwardThreads
        from models import load_encoder
        from sparse_core import AttentionSpec

        self.encoder = load_encoder(device="cpu", dtype=dtype, graph_forward=graph_forward)
        self.spec = AttentionSpec(**attention)
        self.batch_size = batch_size
        self.threads = ForwardThreads(streams, torch.get_num_threads())

    def encode(self, chunk: list[str]) -> None:
        encoder = self.encoder
        encoder.encode_batch(encoder.tokenize(chunk), self.spec, encoder.default_pooling, True)

    def warm_up(self, texts: list[str]) -> None:
        for stream in self.threads.narrow:
            stream.submit(self.encode, texts[: self.batch_size]).result()

    def run(self, texts: list[str], seconds: float) -> dict:
        started, cpu = time.perf_counter(), time.process_time()

        def stream(first: int) -> int:
            encoded = 0
            while time.perf_counter() - started < seconds:
                offset = first + encoded
                self.encode([texts[(offset + i) % len(texts)] for i in range(self.batch_size)])
                encoded += self.batch_size
            return encoded

        running = [
            thread.submit(stream, index * len(texts) // len(self.threads.narrow))
            for index, thread in enumerate(self.threads.narrow)
        ]
        encoded = sum(future.result() for future in running)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        return {
            "batch_size": self.batch_size,
            "streams": len(self.threads.narrow),
            "texts": encoded,
            "wall_s": wall,
            "texts_per_s": encoded / wall,
            "cpu_ms_per_text": 1000 * cpu / encoded,
        }


def profile(pid: int, seconds: float, path: Path) -> subprocess.Popen:
    """py-spy the server while the load runs, without pausing it (--nonblocking): every thread,
    only samples holding the GIL (the Python work that the event loop and the forward thread take
    turns at), as collapsed stacks, one line per distinct stack with its sample count."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += ["--rate", "200", "--gil", "--threads", "--nonblocking", "--format", "raw"]
    command += ["--output", str(path)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Where a frame's file lies -> the layer it belongs to, for the event loop's breakdown.
LAYERS = (
    (("uvicorn/", "h11/", "httptools"), "HTTP protocol (uvicorn, h11)"),
    (("fastapi/", "starlette/", "pydantic", "anyio/"), "framework (FastAPI, Starlette, pydantic)"),
    (("app/",), "longenc app/"),
    (("prometheus_client/",), "metrics (prometheus_client)"),
    (("asyncio/", "selectors", "threading", "concurrent/", "socket"), "asyncio and threads"),
    (("models/", "sparse_core/", "torch/", "tokenizers"), "model and tokenizer"),
)


def layer_of(frame: str) -> str:
    """The layer of a py-spy frame "function (path:line)"."""
    where = frame.rpartition("(")[2]
    for prefixes, layer in LAYERS:
        if any(prefix in where for prefix in prefixes):
            return layer
    return "other (json, email, stdlib)"


# Leaf frames of a thread that waits (for a lock, a queue, the selector): not work.
WAITING = ("Condition.wait", "EpollSelector.select", "Queue.get", "Event.wait", "_worker (")


def summarize_profile(path: Path, requests: int, top: int = 40) -> str:
    """A text summary of py-spy's collapsed stacks: samples per thread, then for the event loop
    (MainThread) and the forward thread the frames with the most samples, on their own (self)
    and with what they call (total)."""
    threads: collections.Counter[str] = collections.Counter()
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if frames[-1].startswith(WAITING):
            continue
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += int(count)
        own[thread][frames[-1]] += int(count)
        for frame in set(frames[1:]):
            total[thread][frame] += int(count)
    lines = [
        f"py-spy --gil samples (200/s) of the server under closed-loop load, {requests} "
        "requests answered while sampling",
        "",
        "samples per thread:",
    ]
    lines += [f"  {count:6d}  {thread}" for thread, count in threads.most_common()]
    layers: collections.Counter[str] = collections.Counter()
    for frame, count in own["MainThread"].items():
        layers[layer_of(frame)] += count
    loop = max(1, threads["MainThread"])
    lines += ["", "MainThread (the event loop) by layer of the running frame:"]
    lines += [
        f"  {count:6d} {100 * count / loop:5.1f}%  {name}" for name, count in layers.most_common()
    ]
    lines += ["", f"event-loop samples per request: {threads['MainThread'] / max(1, requests):.2f}"]
    for thread in ("MainThread", "forward_0"):
        samples = max(1, threads[thread])
        for title, counter in (("self", own[thread]), ("total", total[thread])):
            lines += ["", f"{thread}, {title} (share of the thread's samples):"]
            lines += [
                f"  {count:6d} {100 * count / samples:5.1f}%  {frame}"
                for frame, count in counter.most_common(top)
            ]
    return "\n".join(lines) + "\n"


def run_dtype(
    dtype: str,
    stack: str,
    streams: int,
    graph: str,
    tree: str,
    texts: list[str],
    args: argparse.Namespace,
    work: Path,
) -> dict:
    """One server of `dtype` on `stack` ("loop/http", uvicorn's event loop and HTTP parser) with
    LONGENC_CPU_STREAMS=`streams` and LONGENC_GRAPH_FORWARD=`graph` ("on"/"off"), from `tree`
    ("here" or a git revision): rounds of (in process, closed loop) in turn, then the open
    loops. The in-process half always runs this checkout's encoder."""
    load_before = os.getloadavg()[0]
    loop, http = stack.split("/")
    settings = {
        "LONGENC_LOG_LEVEL": "warning",
        "LONGENC_DTYPE": dtype,
        "LONGENC_LOOP": loop,
        "LONGENC_HTTP": http,
        "LONGENC_CPU_STREAMS": str(streams),
        "LONGENC_GRAPH_FORWARD": str(graph == "on").lower(),
    }
    name = f"{dtype}_{loop}_{http}_streams{streams}_graph_{graph}_tree_{tree}"
    server = Server(settings, work / f"server_{name}.log", source_tree(tree, work))
    local: InProcess | None = None
    try:
        server.wait_ready(timeout_s=600)
        info = httpx.get(f"{server.url}/info").json()
        answer = httpx.post(f"{server.url}{ROUTE}", json={"input": texts[0]}).json()
        pid = server.process.pid
        # the idle server costs nothing while this process encodes
        layout = info["forward_threads"]
        local = InProcess(
            dtype,
            answer["attention"],
            info["limits"]["max_batch_size"],
            layout["streams"],
            info["graph_forward"],
        )
        local.warm_up(texts)
        closed_loop(server.url, texts, 2, pid, work)  # warm-up: connections, allocator, caches
        rounds = []
        for index in range(args.rounds):
            reference = local.run(texts, args.seconds)
            closed = closed_loop(server.url, texts, args.seconds, pid, work)
            efficiency = closed["texts_per_s"] / reference["texts_per_s"]
            rounds.append({"in_process": reference, "closed": closed, "efficiency": efficiency})
            print(
                f"{name} round {index + 1}: HTTP {closed['texts_per_s']:.1f} texts/s "
                f"(batches of {closed['mean_batch_size']:.1f}), in process "
                f"{reference['texts_per_s']:.1f}, efficiency {efficiency:.2f}",
                flush=True,
            )
        if args.profile is not None:  # an extra closed loop, not counted: py-spy costs CPU
            args.profile.mkdir(parents=True, exist_ok=True)
            raw = args.profile / f"server_{name}_stacks.txt"
            spy = profile(pid, args.seconds, raw)
            profiled = closed_loop(server.url, texts, args.seconds, pid, work)
            spy.wait()
            summary = summarize_profile(raw, profiled["requests"])
            (args.profile / f"server_{name}_summary.txt").write_text(summary)
        closed_rate = statistics.median(r["closed"]["texts_per_s"] for r in rounds)
        opened = []
        for fraction in OPEN_FRACTIONS:
            result = open_loop(server.url, texts, fraction * closed_rate, args.seconds, pid)
            opened.append({"fraction_of_closed": fraction, **result})
            print(
                f"{name} open {fraction:.0%}: {result['texts_per_s']:.1f} texts/s, "
                f"p50 {result['latency_p50_ms']:.0f} ms, p99 {result['latency_p99_ms']:.0f} ms",
                flush=True,
            )
    finally:
        exit_code = server.stop(timeout_s=120)
        if local is not None:
            local.threads.shutdown()
    return {
        "dtype": dtype,
        "stack": stack,
        "tree": tree,
        "cpu_streams_setting": streams,
        "forward_threads": layout,
        "graph_forward": info["graph_forward"],
        "server_dtype": info["dtype"],
        "server_limits": info["limits"],
        "attention": answer["attention"],
        "rounds": rounds,
        "open": opened,
        # the median round's ratio: each round's two halves ran back to back
        "serving_efficiency": statistics.median(r["efficiency"] for r in rounds),
        "http_texts_per_s": closed_rate,
        "in_process_texts_per_s": statistics.median(r["in_process"]["texts_per_s"] for r in rounds),
        "server_exit_code": exit_code,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }


def source_tree(tree: str, work: Path) -> Path:
    """The directory to run `python -m app` in: this checkout for "here"; for a git revision,
    its app/, models/ and sparse_core/ exported once into `work` (the installed packages, the
    bundled weights among them, are shared)."""
    if tree == "here":
        return ROOT
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", tree],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    into = work / f"tree_{commit}"
    if not into.exists():
        into.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "app", "models", "sparse_core"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def markdown(report: dict) -> str:
    lines = [
        "| dtype | server loop/parser | streams × threads, forward | load | HTTP texts/s "
        "| in process texts/s | efficiency | p50 | p99 |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for case in report["cases"]:
        reference = case["in_process_texts_per_s"]
        middle = sorted(case["rounds"], key=lambda r: r["efficiency"])[len(case["rounds"]) // 2]
        closed = middle["closed"]
        layout = case.get("forward_threads", {"streams": 1, "threads_per_stream": 2})
        threads = f"{layout['streams']} × {layout['threads_per_stream']}"
        threads += ", graph" if case.get("graph_forward") else ", eager"
        threads += "" if case.get("tree", "here") == "here" else f", {case['tree']}"
        lines.append(
            f"| {case['dtype']} | {case.get('stack', 'asyncio/h11')} | {threads} "
            f"| closed, {closed['connections']} connections | "
            f"{case['http_texts_per_s']:.1f} | {reference:.1f} | "
            f"{case['serving_efficiency']:.2f} | {closed['latency_p50_ms']:.0f} ms | "
            f"{closed['latency_p99_ms']:.0f} ms |"
        )
        for run in case["open"]:
            lines.append(
                f"| {case['dtype']} | {case.get('stack', 'asyncio/h11')} | {threads} "
                f"| open, {run['offered_per_s']:.0f}/s "
                f"({run['fraction_of_closed']:.0%}) | {run['texts_per_s']:.1f} | | | "
                f"{run['latency_p50_ms']:.0f} ms | {run['latency_p99_ms']:.0f} ms |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    # A SIGTERM unwinds through `finally`, so the server subprocess is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument(
        "--stacks",
        nargs="+",
        default=["asyncio/h11", "uvloop/httptools"],
        help="uvicorn event loop/HTTP parser pairs, one server each (LONGENC_LOOP/LONGENC_HTTP)",
    )
    parser.add_argument(
        "--streams",
        nargs="+",
        type=int,
        default=[0],
        help="LONGENC_CPU_STREAMS values, one server each (0: the server picks; 1: one pass at a "
        "time)",
    )
    parser.add_argument(
        "--graph-forward",
        nargs="+",
        choices=["on", "off"],
        default=["on"],
        help="LONGENC_GRAPH_FORWARD values, one server each (on: dense passes as traced graphs)",
    )
    parser.add_argument(
        "--tree",
        nargs="+",
        default=["here"],
        help="source trees, one server each: here (this checkout) or a git revision",
    )
    parser.add_argument("--seconds", type=float, default=None, help="per load run")
    parser.add_argument("--rounds", type=int, default=None, help="(in process, closed) pairs")
    parser.add_argument("--profile", type=Path, help="py-spy the server's closed loop into DIR")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--suffix", default="", help="appended to the result's file name")
    args = parser.parse_args()
    args.seconds = args.seconds or (5.0 if args.quick else 15.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    texts = short_texts()
    work = Path(tempfile.mkdtemp(prefix="longenc-serving-"))
    cases = [
        run_dtype(dtype, stack, streams, graph, tree, texts, args, work)
        for dtype in args.dtypes
        for stack in args.stacks
        for streams in args.streams
        for graph in args.graph_forward
        for tree in args.tree
    ]
    report = {
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "route": ROUTE,
        "texts": {"count": TEXTS, "words": WORDS, "source": "Debian's license texts"},
        "seconds_per_run": args.seconds,
        "load_generators": {
            "closed": f"wrk, 1 thread, {CLOSED_CONNECTIONS} connections",
            "open": "Poisson arrivals from asyncio sockets in the benchmark's process",
        },
        "environment": {
            key: value
            for key, value in os.environ.items()
            if key.startswith(("LONGENC_", "OMP_", "SPARSE_CORE_"))
        },
        "quick": args.quick,
        "cases": cases,
        "targets": {"serving_efficiency_at_least": 0.8},
    }
    args.output.mkdir(parents=True, exist_ok=True)
    suffix = ("_smoke" if args.quick else "") + args.suffix
    path = args.output / f"serving_cpu{suffix}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
