"""Servers of their own: a full queue (429), a client that leaves, and SIGTERM under load."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import API_KEY, sample, scrape, words
from tests.e2e.server import Server, free_port

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# One input per forward pass and room for only four waiting inputs.
TINY_QUEUE = {
    "LONGENC_API_KEY": API_KEY,
    "LONGENC_QUEUE_SIZE": "4",
    "LONGENC_MAX_INPUTS_PER_REQUEST": "4",
    "LONGENC_MAX_BATCH_SIZE": "1",
    "LONGENC_BATCH_WAIT_MS": "0",
    "LONGENC_WARMUP": "false",
}
SLOW = {"mode": "sliding_window", "window": 64}


@pytest.fixture(scope="module")
def tiny_queue(start_server) -> Server:
    return start_server(TINY_QUEUE)


def wait_for(condition, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_full_queue_answers_429_with_retry_after(tiny_queue: Server) -> None:
    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tiny_queue.url, headers=AUTH, timeout=120) as http:
            body = {"inputs": words(250, 40), "attention": SLOW}
            return await asyncio.gather(*(http.post("/encode", json=body) for _ in range(30)))

    responses = asyncio.run(flood())
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {200, 429}, statuses
    for response in responses:
        if response.status_code == 429:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error_type"] == "overloaded"
        else:
            assert len(response.json()["embeddings"]) == 1
    with httpx.Client(base_url=tiny_queue.url, headers=AUTH) as client:
        assert client.get("/health").status_code == 200
        assert client.post("/encode", json={"inputs": "still serving"}).status_code == 200


def test_a_request_whose_client_left_is_dropped_before_its_forward_pass(tiny_queue) -> None:
    dense = {"mode": "dense"}
    with httpx.Client(base_url=tiny_queue.url, headers=AUTH, timeout=120) as client:

        def count(name: str, **labels: str) -> float:
            return sample(scrape(client), name, **labels)

        cancelled_before = count("longenc_cancelled_inputs_total")
        dense_inputs_before = count("longenc_input_tokens_count", mode="dense")
        dense_batches_before = count("longenc_batch_size_count", mode="dense")
        with ThreadPoolExecutor(1) as pool:
            # Four long inputs, one forward pass each: the worker stays busy for a while.
            long_inputs = [words(1000, start) for start in (0, 9, 99, 999)]
            busy = pool.submit(
                client.post, "/encode", json={"inputs": long_inputs, "attention": SLOW}
            )
            wait_for(lambda: count("longenc_queue_size") >= 1, "a busy worker")
            leaving = RawRequest(tiny_queue.port, {"inputs": "never computed", "attention": dense})
            # Its tokens are counted in the same event-loop step that queues it.
            wait_for(
                lambda: count("longenc_input_tokens_count", mode="dense") > dense_inputs_before,
                "the request to be queued",
            )
            leaving.close()
            wait_for(
                lambda: count("longenc_cancelled_inputs_total") == cancelled_before + 1,
                "the input to be dropped",
            )
            assert busy.result().status_code == 200
        assert count("longenc_batch_size_count", mode="dense") == dense_batches_before


class RawRequest:
    """POST /encode on a raw socket, so the test decides when the body ends or the client leaves."""

    def __init__(self, port: int, body: dict, send_whole_body: bool = True) -> None:
        content = json.dumps(body).encode()
        head = (
            "POST /encode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(content)}\r\n\r\n"
        ).encode()
        cut = len(content) if send_whole_body else 10
        self.rest = content[cut:]
        self.connection = socket.create_connection(("127.0.0.1", port))
        self.connection.sendall(head + content[:cut])

    def finish_body(self) -> None:
        self.connection.sendall(self.rest)

    def status(self) -> int:
        self.connection.settimeout(120)
        reply = b""
        while b"\r\n" not in reply:
            chunk = self.connection.recv(4096)
            if not chunk:
                break
            reply += chunk
        return int(reply.split(b" ", 2)[1])

    def close(self) -> None:
        self.connection.close()


def test_sigterm_drains_every_accepted_request_then_exits_0(start_server) -> None:
    settings = {"LONGENC_API_KEY": API_KEY, "LONGENC_WARMUP": "false"}
    server = start_server(settings | {"LONGENC_DRAIN_TIMEOUT_S": "60"})
    texts = [words(300, 1000 * index) for index in range(8)]
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as client:
        # Accepted before the signal: 8 requests. One whose body has not fully arrived is not
        # accepted yet: it does not hold the drain, and is refused if its body ends after it.
        half_sent = RawRequest(server.port, {"inputs": "late body"}, send_whole_body=False)
        with ThreadPoolExecutor(len(texts)) as pool:
            accepted = [
                pool.submit(client.post, "/encode", json={"inputs": [text], "attention": SLOW})
                for text in texts
            ]
            wait_for(
                lambda: sample(scrape(client), "longenc_requests_in_flight") == len(texts),
                "every request to arrive",
            )
            server.process.send_signal(signal.SIGTERM)

            # Draining: new requests and /health answer 503 while the accepted ones finish.
            wait_for(lambda: client.get("/health").status_code == 503, "draining")
            assert client.get("/health").json() == {"status": "draining"}
            refused = client.post("/encode", json={"inputs": "too late"})
            assert refused.status_code == 503
            assert refused.json()["error_type"] == "unavailable"

            half_sent.finish_body()
            assert half_sent.status() == 503
            half_sent.close()
            for future in accepted:
                response = future.result()
                assert response.status_code == 200
                assert len(response.json()["embeddings"]) == 1
    assert server.process.wait(timeout=60) == 0
    assert "drained" in server.log


def test_a_stalled_body_times_out_with_408_and_never_holds_a_drain(start_server) -> None:
    settings = {"LONGENC_API_KEY": API_KEY, "LONGENC_WARMUP": "false"}
    server = start_server(
        settings | {"LONGENC_BODY_TIMEOUT_S": "2", "LONGENC_DRAIN_TIMEOUT_S": "600"}
    )
    stalled = RawRequest(server.port, {"inputs": "never finished"}, send_whole_body=False)
    assert stalled.status() == 408
    stalled.close()
    # Stalled uploads open when SIGTERM arrives: the server drains and exits without waiting
    # for them (the drain timeout is 10 minutes; the body timeout ends them in 2 s anyway).
    dripping = [
        RawRequest(server.port, {"inputs": "dripping"}, send_whole_body=False) for _ in range(5)
    ]
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        assert client.post("/encode", json={"inputs": "served"}).status_code == 200
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
    for connection in dripping:
        connection.close()
    assert "Traceback" not in server.log


def test_metrics_on_their_own_port_need_no_key_while_the_main_port_asks_for_it(
    start_server,
) -> None:
    metrics_port = free_port()
    settings = {"LONGENC_API_KEY": API_KEY, "LONGENC_WARMUP": "false"}
    server = start_server(settings | {"LONGENC_METRICS_PORT": str(metrics_port)})
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post("/encode", json={"inputs": "counted"}, headers=AUTH).status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=AUTH).status_code == 200
        assert client.get("/health").status_code == 200  # always open
    with httpx.Client(base_url=f"http://127.0.0.1:{metrics_port}", timeout=30) as internal:
        families = scrape(internal)  # no key
    assert sample(families, "longenc_requests_total", mode="dense", status="200") == 1
