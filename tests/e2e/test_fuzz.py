"""Property-based fuzzing of the published OpenAPI schema against a real server, and the hostile
bodies a schema-driven generator does not write (DESIGN.md §8).

The schema run is schemathesis's own runner (`st run`) against the server's /openapi.json, every
operation, every phase (explicit examples, boundary coverage, random fuzzing), bounded by the
number of examples: no response is a 5xx, every response's status, content type, headers and body
are documented, a request valid per the schema is accepted (2xx), an invalid one refused (4xx),
auth is enforced where the schema says, and unsupported methods answer 405.

The hostile cases are raw HTTP/1.1 on one keep-alive connection: each must get a 4xx with the
JSON error shape, leave no traceback in the server log, and the next request on the same
connection must still be served.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import API_KEY
from tests.e2e.server import ROOT, Server

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# A server of its own, so that its log belongs to this module alone; the limits are the
# defaults, which the schema has to describe.
FUZZ_SETTINGS = {"LONGENC_API_KEY": API_KEY, "LONGENC_DTYPE": "float32", "LONGENC_WARMUP": "false"}
# Bounded for CI (about a minute on two cores) by examples per operation and generation mode.
SCHEMATHESIS_CONFIG = """
[generation]
mode = "all"
max-examples = 20

[checks]
# A request invalid per the schema is refused as such.
negative_data_rejection.expected-statuses = ["400", "401", "404", "405", "406", "413", "415", "422"]
not_a_server_error.expected-statuses = ["2xx", "4xx"]
# Only a response slower than the request timeout counts as hung (this is no benchmark).
max_response_time = 60
"""
SCHEMATHESIS_TIMEOUT_S = 300
SEED = 20261129


@pytest.fixture(scope="module")
def fuzz_server(start_server) -> Server:
    return start_server(FUZZ_SETTINGS)


def test_every_operation_answers_as_its_schema_says(fuzz_server: Server, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config)),
        *("run", f"{fuzz_server.url}/openapi.json", "--checks", "all"),
        # A request valid per the schema is accepted (the key is sent, so not even a 401), but
        # for the rules JSON Schema cannot state: the hooks module's check takes its place.
        *("--exclude-checks", "positive_data_acceptance"),
        *("--header", f"Authorization: Bearer {API_KEY}"),
        *("--workers", "2", "--request-timeout", "60", "--no-color"),
        # The same cases on every run, so that the suite's verdict is the code's; change the
        # seed (or run `schemathesis run` by hand) to explore further.
        *("--seed", str(SEED)),
    ]
    # In a folder of its own: the runner keeps its example database in the working directory.
    environment = os.environ | {
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
    }
    try:
        run = subprocess.run(
            command,
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=SCHEMATHESIS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as timeout:
        output = timeout.output or b""  # bytes, whatever `text` says
        output = output.decode(errors="replace") if isinstance(output, bytes) else output
        pytest.fail(f"schemathesis still running after {timeout.timeout} s:\n{output[-30_000:]}")
    report = run.stdout
    assert run.returncode == 0, report[-30_000:]
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    assert selected is not None, report[-5000:]
    chosen, published, tested = (int(count) for count in selected.groups())
    assert chosen == published == tested, f"not every operation was tested:\n{report[-5000:]}"
    log = fuzz_server.log
    assert "Traceback" not in log, log[max(0, log.find("Traceback") - 2000) :][:8000]


# -- hostile bodies, byte for byte ------------------------------------------------------------


class KeepAliveConnection:
    """HTTP/1.1 requests in sequence on one TCP connection, bytes exactly as given."""

    def __init__(self, port: int, timeout_s: float = 120) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buffer = b""

    def close(self) -> None:
        self.socket.close()

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request and read its whole response: (status, headers lowercased, body)."""
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        self.socket.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        response_headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            response_headers[name.strip().lower()] = value.strip()
        length = int(response_headers["content-length"])
        return status, response_headers, self._read_exactly(length)

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._receive()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._receive()
        content, self.buffer = self.buffer[:size], self.buffer[size:]
        return content

    def _receive(self) -> None:
        chunk = self.socket.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection; unread: {self.buffer!r}")
        self.buffer += chunk


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


JSON = "application/json"
HUGE = [2**63, 10**30, -(2**63)]
PARAMS = {"block": "block_size", "sliding_window": "window", "topk": "top_k"}

# name: (path, body bytes, content type or None for no header)
HOSTILE: dict[str, tuple[str, bytes, str | None]] = {
    "lone surrogate escape": ("/encode", rb'{"inputs": "\ud800"}', JSON),
    "lone low surrogate escape in a list": ("/encode", rb'{"inputs": ["ok", "\udfff"]}', JSON),
    "surrogate pair reversed": ("/encode", rb'{"inputs": "a\udc00\ud800b"}', JSON),
    "surrogate as raw bytes ED A0 80": ("/encode", b'{"inputs": "\xed\xa0\x80"}', JSON),
    "lone surrogate in /v1/embeddings": ("/v1/embeddings", rb'{"input": "\ud800"}', JSON),
    "raw surrogate bytes in /v1/embeddings": (
        "/v1/embeddings",
        b'{"input": ["\xed\xb0\x80"]}',
        JSON,
    ),
    "mode is a list": ("/encode", b'{"inputs": "a", "attention": {"mode": []}}', JSON),
    "mode is an object": ("/encode", b'{"inputs": "a", "attention": {"mode": {}}}', JSON),
    "mode is a list in /v1/embeddings": (
        "/v1/embeddings",
        b'{"input": "a", "attention": {"mode": ["dense"]}}',
        JSON,
    ),
    "attention is a list": ("/encode", b'{"inputs": "a", "attention": ["dense"]}', JSON),
    "attention is a number": ("/encode", b'{"inputs": "a", "attention": 5}', JSON),
    "parameter is a list": (
        "/encode",
        b'{"inputs": "a", "attention": {"mode": "block", "block_size": [8]}}',
        JSON,
    ),
    "parameter is an object": (
        "/encode",
        b'{"inputs": "a", "attention": {"mode": "sliding_window", "window": {}}}',
        JSON,
    ),
    "parameter is a float": (
        "/encode",
        b'{"inputs": "a", "attention": {"mode": "topk", "top_k": 8.5}}',
        JSON,
    ),
    **{
        f"{param} = {value}": (
            "/encode",
            json.dumps({"inputs": "a", "attention": {"mode": mode, param: value}}).encode(),
            JSON,
        )
        for mode, param in PARAMS.items()
        for value in HUGE
    },
    **{
        f"{param} = {literal}": (
            "/encode",
            b'{"inputs": "a", "attention": {"mode": "%s", "%s": %s}}'
            % (mode.encode(), param.encode(), literal.encode()),
            JSON,
        )
        for mode, param in PARAMS.items()
        for literal in ("NaN", "Infinity", "-Infinity")
    },
    "dimensions = 10**30": (
        "/v1/embeddings",
        b'{"input": "a", "dimensions": 1%s}' % (b"0" * 30),
        JSON,
    ),
    "dimensions = 2**63": ("/v1/embeddings", b'{"input": "a", "dimensions": %d}' % 2**63, JSON),
    "dimensions = NaN": ("/v1/embeddings", b'{"input": "a", "dimensions": NaN}', JSON),
    "normalize = NaN": ("/encode", b'{"inputs": "a", "normalize": NaN}', JSON),
    "inputs = Infinity": ("/encode", b'{"inputs": Infinity}', JSON),
    "body is NaN": ("/encode", b"NaN", JSON),
    "inputs nested 100,000 deep": ("/encode", b'{"inputs": %s}' % nested(100_000), JSON),
    "attention nested 50,000 deep": (
        "/encode",
        b'{"inputs": "a", "attention": %s}' % nested_objects(50_000),
        JSON,
    ),
    "body nested 100,000 deep": ("/encode", nested(100_000), JSON),
    "input nested 100,000 deep in /v1/embeddings": (
        "/v1/embeddings",
        b'{"input": %s}' % nested(100_000),
        JSON,
    ),
    "latin-1 byte in a string": ("/encode", b'{"inputs": "caf\xe9"}', JSON),
    "bytes FF FE": ("/encode", b'{"inputs": "\xff\xfe"}', JSON),
    "truncated UTF-8 sequence": ("/encode", b'{"inputs": "\xe2\x82"}', JSON),
    "overlong UTF-8 slash": ("/encode", b'{"inputs": "\xc0\xaf"}', JSON),
    "invalid UTF-8 outside strings": ("/encode", b'{"inputs": "a"}\xff', JSON),
    "non-UTF-8 body in /v1/embeddings": ("/v1/embeddings", b'{"input": "\xff"}', JSON),
    "empty body": ("/encode", b"", JSON),
    "body is null": ("/encode", b"null", JSON),
    "body is a list": ("/encode", b'["a"]', JSON),
    "body is a string": ("/encode", b'"a"', JSON),
    "unterminated JSON": ("/encode", b'{"inputs": "a', JSON),
    "text/plain": ("/encode", b'{"inputs": "a"}', "text/plain"),
    "form-urlencoded": ("/encode", b"inputs=a", "application/x-www-form-urlencoded"),
    "multipart": (
        "/encode",
        b'--x\r\nContent-Disposition: form-data; name="inputs"\r\n\r\na\r\n--x--\r\n',
        "multipart/form-data; boundary=x",
    ),
    "xml": ("/encode", b"<inputs>a</inputs>", "application/xml"),
    "text/plain in /v1/embeddings": ("/v1/embeddings", b'{"input": "a"}', "text/plain"),
    "binary": ("/encode", bytes(range(256)), "application/octet-stream"),
}


def error_shape_problem(path: str, body: bytes) -> str | None:
    """None if `body` is the service's JSON error (OpenAI's shape allowed on /v1/embeddings)."""
    try:
        error = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if (
        isinstance(error, dict)
        and set(error) == {"error", "error_type"}
        and isinstance(error["error"], str)
        and isinstance(error["error_type"], str)
    ):
        return None
    if path.startswith("/v1/") and isinstance(error, dict) and set(error) == {"error"}:
        inner = error["error"]
        if (
            isinstance(inner, dict)
            and {"message", "type", "param", "code"} <= set(inner)
            and isinstance(inner["message"], str)
            and isinstance(inner["type"], str)
        ):
            return None
    return f"not the JSON error shape: {body[:300]!r}"


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_body_gets_a_json_4xx_and_the_connection_keeps_serving(
    fuzz_server: Server, name: str
) -> None:
    path, body, content_type = HOSTILE[name]
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    log_before = len(fuzz_server.log)
    connection = KeepAliveConnection(fuzz_server.port)
    try:
        status, response_headers, content = connection.request("POST", path, body, headers)
        server_log = fuzz_server.log[log_before:]
        assert 400 <= status < 500, f"{name}: {status} {content[:300]!r}\n{server_log}"
        assert response_headers["content-type"].startswith("application/json")
        problem = error_shape_problem(path, content)
        assert problem is None, f"{name}: {status} {problem}"
        assert "Traceback" not in server_log, f"{name}: the server logged\n{server_log}"
        # The same connection serves the next request.
        follow_up = json.dumps({"inputs": "still serving"}).encode()
        status, _, content = connection.request(
            "POST", "/encode", follow_up, AUTH | {"Content-Type": JSON}
        )
        assert status == 200, f"after {name}: {status} {content[:300]!r}"
        assert len(json.loads(content)["embeddings"]) == 1
    finally:
        connection.close()
