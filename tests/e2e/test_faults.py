"""The fault run (DESIGN.md §8): many clients, mixed modes and lengths, clients that leave
mid-request, malformed requests, device out-of-memory in the forward pass, then SIGTERM under load.

The server is `python -m tests.e2e.fault_launcher`: the real server, whose forward pass raises
`torch.cuda.OutOfMemoryError` on any input holding OOM_MARKER. The batcher answers such an input
507 (after splitting its batch, so its batch-mates are still served).

What is exactly countable, and asserted:
- a client that stays gets exactly one response, and it answers its own request (its inputs,
  its mode), with the status its request calls for: 200, 507 for an out-of-memory input, a 4xx
  for a malformed one; 503 only in answers that arrive after SIGTERM;
- at a quiet point (every client done, nothing in flight) the server's
  longenc_requests_total counts, per status, at least what the staying clients saw, and at most
  one more answer per client that left (a 499, or the answer the server had already sent; a
  client that left before its request was read is never counted); likewise the 200s per mode;
- nothing is refused 503 before SIGTERM; the requests in flight at the signal are all served,
  not refused; a request sent once the drain has begun is refused 503, or finds nobody listening
  once the server has stopped;
- the process exits 0, without a traceback or a drain timeout in its log.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import API_KEY, sample, words
from tests.e2e.fault_launcher import OOM_MARKER
from tests.e2e.server import ROOT, Server, free_port

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {API_KEY}"}
FAULT_SETTINGS = {
    "LONGENC_API_KEY": API_KEY,
    "LONGENC_DTYPE": "float32",
    "LONGENC_MAX_INPUT_TOKENS": "4096",
    "LONGENC_MAX_DENSE_TOKENS": "2048",
    "LONGENC_MAX_INPUTS_PER_REQUEST": "8",
    "LONGENC_DRAIN_TIMEOUT_S": "60",
    "LONGENC_WARMUP": "false",
}
CLIENTS = 24
LOAD_S = 20  # the first phase: load up to a quiet point
SIGTERM_AFTER_S = 4  # the second phase: load, then SIGTERM while requests are in flight
MIN_IN_FLIGHT_AT_SIGTERM = 4
EXIT_TIMEOUT_S = 90
KINDS = {"ok": 55, "leave": 15, "malformed": 15, "oom": 15}  # weights

ATTENTIONS = [
    None,  # the server's default ("auto")
    {"mode": "dense"},
    {"mode": "block", "block_size": 16},
    {"mode": "block", "block_size": 256},
    {"mode": "sliding_window", "window": 16},
    {"mode": "sliding_window", "window": 512},
    {"mode": "topk", "top_k": 8},
    {"mode": "topk", "top_k": 64},
]
# Words per input: mostly short, some long; dense and topk stay under max_dense_tokens.
LENGTHS = [3, 12, 40, 150, 500, 1000]
LENGTH_WEIGHTS = [6, 5, 4, 2, 1, 1]
SPARSE_LONG = 2000
CORPUS_WORDS = 12_000  # of the 14,000 in the license texts

JSON = "application/json"
# Each must be refused with a 4xx (or 503 once draining); none may take the server down.
MALFORMED: list[tuple[str, bytes, str]] = [
    ("/encode", b'{"inputs": ["a"', JSON),
    ("/encode", b'{"inputs": []}', JSON),
    ("/encode", b'{"inputs": "a", "attention": {"mode": "fast"}}', JSON),
    ("/encode", b'{"inputs": "a", "attention": {"mode": "sliding_window", "window": 7}}', JSON),
    ("/encode", b'{"inputs": "a", "attention": {"mode": []}}', JSON),
    (
        "/encode",
        b'{"inputs": "a", "attention": {"mode": "block", "block_size": 1%s}}' % (b"0" * 30),
        JSON,
    ),
    ("/encode", b'{"inputs": "a", "attention": {"mode": "topk", "top_k": NaN}}', JSON),
    ("/encode", rb'{"inputs": "\ud800"}', JSON),
    ("/encode", b'{"inputs": "\xed\xa0\x80"}', JSON),
    ("/encode", b'{"inputs": "\xff"}', JSON),
    ("/encode", b'{"inputs": "a"}', "text/plain"),
    ("/v1/embeddings", b'{"input": "a", "dimensions": 0}', JSON),
    ("/v1/embeddings", b'{"input": "a", "attention": {"mode": {}}}', JSON),
]


@dataclass
class Outcome:
    """One request as its client saw it."""

    kind: str  # a key of KINDS; "leave": the client goes away mid-request
    started: float  # time.monotonic()
    ended: float = 0.0
    status: int | None = None  # None: no response (left, or a transport error)
    left: bool = False
    error: str | None = None  # the transport error, if any
    mismatch: str | None = None  # how a 200 fails to answer this request
    mode: str | None = None  # the mode a 200 says it ran


@dataclass
class Load:
    """CLIENTS clients, each sending one request after another until `stop` is set."""

    url: str
    seed: int
    corpus: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(
            base_url=self.url, headers=AUTH, timeout=120, limits=limits
        ) as http:
            await asyncio.gather(*(self._client(http, index) for index in range(CLIENTS)))

    async def _client(self, http: httpx.AsyncClient, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        while not self.stop.is_set():
            outcome = await self._one(http, rng)
            self.outcomes.append(outcome)
            if outcome.error is not None:
                return  # the test reports it

    async def _one(self, http: httpx.AsyncClient, rng: random.Random) -> Outcome:
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        outcome = Outcome(kind, time.monotonic())
        expected = None
        if kind == "malformed":
            path, content, content_type = rng.choice(MALFORMED)
            headers = {"Content-Type": content_type}
            request = http.build_request("POST", path, content=content, headers=headers)
        else:
            path, body, expected = self._inference_request(rng, oom=kind == "oom")
            request = http.build_request("POST", path, json=body)
        try:
            if kind == "leave":
                response = await leave_after(request, rng.uniform(0.01, 0.6))
            else:
                response = await http.send(request)
        except httpx.TransportError as error:
            outcome.error = f"{type(error).__name__}: {error}"
            response = None
        outcome.ended = time.monotonic()
        if response is None:
            outcome.left = outcome.error is None
            return outcome
        outcome.status = response.status_code
        if response.status_code == 200 and expected is not None:
            outcome.mode, outcome.mismatch = check_answer(path, response, expected)
        return outcome

    def _inference_request(self, rng: random.Random, oom: bool) -> tuple[str, dict, dict]:
        """A valid request: (path, body, what a 200 must show)."""
        attention = rng.choice(ATTENTIONS)
        pairwise = attention is None or attention["mode"] in ("dense", "topk")
        texts = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            length = rng.choices(LENGTHS, LENGTH_WEIGHTS)[0]
            if not pairwise and length == LENGTHS[-1] and rng.random() < 0.5:
                length = SPARSE_LONG
            start = rng.randrange(len(self.corpus) - length)
            texts.append(" ".join(self.corpus[start : start + length]))
        if oom:
            victim = rng.randrange(len(texts))
            cut = rng.randrange(len(texts[victim]) + 1)
            texts[victim] = f"{texts[victim][:cut]} {OOM_MARKER} {texts[victim][cut:]}"
        expected = {"inputs": len(texts), "mode": attention["mode"] if attention else None}
        body: dict = {"input": texts} if rng.random() < 0.25 else {"inputs": texts}
        if attention is not None:
            body["attention"] = attention
        return ("/v1/embeddings" if "input" in body else "/encode"), body, expected


async def leave_after(request: httpx.Request, delay_s: float) -> httpx.Response | None:
    """Send on a connection of its own and close it after `delay_s` (None: left unanswered)."""
    async with httpx.AsyncClient(timeout=120) as own:
        try:
            return await asyncio.wait_for(own.send(request), delay_s)
        except TimeoutError:
            return None


def check_answer(path: str, response: httpx.Response, expected: dict) -> tuple[str, str | None]:
    """(the mode it ran, None) if `response` answers the request `expected` describes."""
    body = response.json()
    mode = body["attention"]["mode"]
    vectors = body["data"] if path == "/v1/embeddings" else body["embeddings"]
    if len(vectors) != expected["inputs"]:
        return mode, f"{len(vectors)} embeddings for {expected['inputs']} inputs"
    if expected["mode"] is not None and mode != expected["mode"]:
        return mode, f"answered with {mode} attention, {expected['mode']} asked"
    return mode, None


class FaultServer(Server):
    """A Server whose program is the fault launcher instead of `python -m app`."""

    def __init__(self, settings: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {key: value for key, value in os.environ.items() if not key.startswith("LONGENC_")}
        env |= {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"} | settings
        self.log_path = log_path
        self._log = log_path.open("w")
        launcher = ["-m", "tests.e2e.fault_launcher", "--host", "127.0.0.1", "--port"]
        self.process = subprocess.Popen(
            [sys.executable, *launcher, str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def fault_server(tmp_path: Path) -> Iterator[FaultServer]:
    server = FaultServer(FAULT_SETTINGS, tmp_path / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


async def requests_counted(http: httpx.AsyncClient) -> tuple[Counter, Counter, float]:
    """longenc_requests_total by status and by (mode, status), and requests in flight."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    families = {
        family.name: family.samples for family in text_string_to_metric_families(response.text)
    }
    by_status: Counter = Counter()
    by_mode: Counter = Counter()
    for item in families.get("longenc_requests", []):
        if item.name == "longenc_requests_total":
            by_status[int(item.labels["status"])] += int(item.value)
            by_mode[item.labels["mode"], int(item.labels["status"])] += int(item.value)
    return by_status, by_mode, sample(families, "longenc_requests_in_flight")


async def quiet(http: httpx.AsyncClient, timeout_s: float = 60) -> tuple[Counter, Counter]:
    """The counters once nothing is in flight and two scrapes in a row agree."""
    deadline = time.monotonic() + timeout_s
    previous = None
    while time.monotonic() < deadline:
        by_status, by_mode, in_flight = await requests_counted(http)
        if in_flight == 0 and by_status == previous:
            return by_status, by_mode
        previous = by_status if in_flight == 0 else None
        await asyncio.sleep(0.5)
    raise AssertionError(f"requests still in flight {timeout_s} s after the load stopped")


def allowed(outcome: Outcome, sigterm_at: float | None) -> set[int]:
    """The statuses a request may get; 503 only in an answer that came after SIGTERM."""
    if outcome.kind == "malformed":
        statuses = set(range(400, 500)) - {499}
    else:
        statuses = {507} if outcome.kind == "oom" else {200}
    if sigterm_at is not None and outcome.ended > sigterm_at:
        statuses.add(503)
    return statuses


def describe(outcomes: list[Outcome]) -> str:
    return ", ".join(
        f"{o.kind}:{o.status if o.status is not None else o.error or 'left'}" for o in outcomes
    )


def check_outcomes(outcomes: list[Outcome], sigterm_at: float | None) -> None:
    """Every staying client got one response, its own, with a status its request allows."""
    lost = [o for o in outcomes if o.error is not None]
    assert not lost, f"requests that got no response: {describe(lost)}"
    mismatched = [o for o in outcomes if o.mismatch is not None]
    assert not mismatched, f"answers to other requests: {mismatched}"
    wrong = [o for o in outcomes if o.status is not None and o.status not in allowed(o, sigterm_at)]
    assert not wrong, f"unexpected statuses: {describe(wrong)}"


def seen(outcomes: list[Outcome]) -> tuple[Counter, Counter]:
    """What the staying clients saw: responses by status, and 200s by (mode, 200)."""
    by_status = Counter(o.status for o in outcomes if o.status is not None)
    by_mode = Counter((o.mode, 200) for o in outcomes if o.status == 200)
    return by_status, by_mode


def check_counted(counted: Counter, clients: Counter, left: int, what: str) -> None:
    """At a quiet point: each key counted at least as often as the staying clients saw it,
    and no more answers beyond those than clients that left."""
    short = {key: (counted[key], clients[key]) for key in clients if counted[key] < clients[key]}
    assert not short, f"{what}: counted fewer than seen, (server, clients): {short}"
    surplus = sum((counted - clients).values())
    assert surplus <= left, (
        f"{what}: {surplus} answers counted that no staying client saw, but only {left} left; "
        f"server {dict(counted)}, clients {dict(clients)}"
    )


async def probe_after_sigterm(url: str) -> list[Outcome]:
    """Requests sent after the signal, each on a new connection, until one is not served."""
    probes = []
    for _ in range(50):
        outcome = Outcome("ok", time.monotonic())
        try:
            async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:
                response = await http.post("/encode", json={"inputs": "sent after SIGTERM"})
            outcome.status = response.status_code
        except httpx.TransportError as error:
            outcome.error = f"{type(error).__name__}: {error}"
        outcome.ended = time.monotonic()
        probes.append(outcome)
        if outcome.status != 200:
            break
        await asyncio.sleep(0.05)
    return probes


def test_faults_lose_nothing_and_the_counters_match_what_clients_saw(
    fault_server: FaultServer,
) -> None:
    asyncio.run(fault_run(fault_server))


async def fault_run(server: FaultServer) -> None:
    corpus = words(CORPUS_WORDS).split()
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as http:
        before, before_by_mode = await quiet(http)

        # Phase 1: everything but SIGTERM, up to a quiet point where counting is exact.
        load = Load(server.url, seed=1, corpus=corpus)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(LOAD_S)
        load.stop.set()
        await running
        check_outcomes(load.outcomes, sigterm_at=None)
        counted, counted_by_mode = await quiet(http)
        clients, clients_by_mode = seen(load.outcomes)
        left = sum(o.left for o in load.outcomes)
        print(f"phase 1: seen {dict(clients)}, {left} left; counted {dict(counted - before)}")
        assert clients[200] and clients[507] and left, f"a fault was not exercised: {clients}"
        assert any(400 <= status < 500 for status in clients), clients
        assert counted[503] == 0, f"503s before any SIGTERM: {dict(counted)}"
        check_counted(counted - before, clients, left, "requests by status")
        counted_200s = Counter({key: n for key, n in counted_by_mode.items() if key[1] == 200})
        before_200s = Counter({key: n for key, n in before_by_mode.items() if key[1] == 200})
        check_counted(counted_200s - before_200s, clients_by_mode, left, "200s by mode")

        # Phase 2: load again; SIGTERM while requests are in flight.
        drain = Load(server.url, seed=2, corpus=corpus)
        running = asyncio.create_task(drain.run())
        await asyncio.sleep(SIGTERM_AFTER_S)
        deadline = time.monotonic() + 30
        while True:
            scrape_sent_at = time.monotonic()
            just_before, _, in_flight = await requests_counted(http)
            if in_flight >= MIN_IN_FLIGHT_AT_SIGTERM or time.monotonic() > deadline:
                break
        sigterm_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        drain.stop.set()  # each client waits for the request it has sent, then stops

    await asyncio.sleep(0.2)
    probes = await probe_after_sigterm(server.url)
    await asyncio.wait_for(running, EXIT_TIMEOUT_S)
    exit_code = await asyncio.to_thread(server.process.wait, EXIT_TIMEOUT_S)
    log = server.log
    drained, _ = seen(drain.outcomes)
    left_in_drain = sum(o.left for o in drain.outcomes)
    print(
        f"phase 2: seen {dict(drained)}, {left_in_drain} left, {in_flight:.0f} in flight at "
        f"SIGTERM; probes after it: {describe(probes)}"
    )

    assert in_flight >= MIN_IN_FLIGHT_AT_SIGTERM, f"only {in_flight} in flight at SIGTERM"
    assert just_before[503] == 0, f"503s before SIGTERM: {dict(just_before)}"
    # Every request sent before the signal got its one answer (503 if it came too late).
    check_outcomes(drain.outcomes, sigterm_at)
    # Counted up to the signal: no answer that no client got, beyond those that left.
    surplus = sum((just_before - counted - drained).values())
    assert surplus <= left_in_drain, (
        f"counted before SIGTERM {dict(just_before - counted)}, clients saw {dict(drained)}"
    )
    # The requests in flight at the signal were served to the end, not refused.
    in_flight_then = [o for o in drain.outcomes if o.ended >= scrape_sent_at]
    served = [o for o in in_flight_then if o.left or o.status not in (None, 503)]
    assert len(served) >= in_flight, (
        f"{in_flight:.0f} requests in flight at SIGTERM, {len(served)} served: "
        f"{describe(in_flight_then)}"
    )
    # A request sent once the drain has begun is refused 503, or finds nobody listening.
    assert all(p.status in (None, 200, 503) for p in probes), describe(probes)
    assert probes[-1].status in (None, 503), describe(probes)
    assert exit_code == 0, f"exit code {exit_code}\n{log[-4000:]}"
    assert "Traceback" not in log, log
    assert "drain timeout" not in log, log
