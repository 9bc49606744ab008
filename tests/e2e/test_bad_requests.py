"""Each bad request gets its documented 4xx JSON error, and the server stays healthy."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import API_KEY, words

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


CASES = {
    # name: (method, path, content, extra headers, status, error_type, words in the message)
    "malformed json": ("POST", "/encode", b'{"inputs": ["a"', {}, 422, "validation", "JSON"),
    "inputs not text": ("POST", "/encode", body(inputs=5), {}, 422, "validation", "inputs"),
    "normalize not bool": (
        "POST",
        "/encode",
        body(inputs="a", normalize="maybe"),
        {},
        422,
        "validation",
        "normalize",
    ),
    "unknown field": (
        "POST",
        "/encode",
        body(inputs="a", attentoin={}),
        {},
        422,
        "validation",
        "attentoin",
    ),
    "empty list": ("POST", "/encode", body(inputs=[]), {}, 422, "validation", "at least one"),
    "empty string": ("POST", "/encode", body(inputs=["a", ""]), {}, 422, "validation", "input 1"),
    "unknown mode": (
        "POST",
        "/encode",
        body(inputs="a", attention={"mode": "fast"}),
        {},
        422,
        "validation",
        "allowed: dense, block, sliding_window, topk",
    ),
    "missing parameter": (
        "POST",
        "/encode",
        body(inputs="a", attention={"mode": "block"}),
        {},
        422,
        "validation",
        "needs 'block_size'",
    ),
    "odd window": (
        "POST",
        "/encode",
        body(inputs="a", attention={"mode": "sliding_window", "window": 7}),
        {},
        422,
        "validation",
        "even",
    ),
    "parameter of another mode": (
        "POST",
        "/encode",
        body(inputs="a", attention={"mode": "topk", "window": 8}),
        {},
        422,
        "validation",
        "does not take window",
    ),
    "unknown pooling": (
        "POST",
        "/encode",
        body(inputs="a", pooling="max"),
        {},
        422,
        "validation",
        "pooling",
    ),
    "too many inputs": (
        "POST",
        "/encode",
        body(inputs=["a"] * 65),
        {},
        422,
        "validation",
        "at most 64",
    ),
    "too long without truncate": (
        "POST",
        "/encode",
        body(inputs=["a", words(4000)]),
        {},
        422,
        "validation",
        "more than max_input_tokens=4096",
    ),
    "dense beyond its cost limit": (
        "POST",
        "/encode",
        body(inputs=words(2000), attention={"mode": "dense"}),
        {},
        422,
        "validation",
        "max_dense_tokens=2048",
    ),
    "topk beyond the dense cost limit": (
        "POST",
        "/encode",
        body(inputs=words(2000), attention={"mode": "topk", "top_k": 8}),
        {},
        422,
        "validation",
        "max_dense_tokens=2048",
    ),
    "not json content type": (
        "POST",
        "/encode",
        body(inputs="a"),
        {"Content-Type": "text/plain"},
        422,
        "validation",
        "",
    ),
    "body over the payload limit": (
        "POST",
        "/encode",
        body(inputs=["word " * 50_000]),
        {},
        413,
        "payload_too_large",
        "200000 bytes",
    ),
    "dimensions beyond the model": (
        "POST",
        "/v1/embeddings",
        body(input="a", dimensions=385),
        {},
        422,
        "validation",
        "between 1 and 384",
    ),
    "unknown encoding format": (
        "POST",
        "/v1/embeddings",
        body(input="a", encoding_format="int8"),
        {},
        422,
        "validation",
        "encoding_format",
    ),
    "missing api key": (
        "POST",
        "/encode",
        body(inputs="a"),
        {"Authorization": ""},
        401,
        "unauthorized",
        "missing",
    ),
    "wrong api key": (
        "POST",
        "/v1/embeddings",
        body(input="a"),
        {"Authorization": "Bearer nope"},
        401,
        "unauthorized",
        "invalid API key",
    ),
    "lone surrogate escape": (
        "POST",
        "/encode",
        b'{"inputs": "\\ud800"}',
        {},
        422,
        "validation",
        "lone surrogate",
    ),
    "lone surrogate bytes": (
        "POST",
        "/encode",
        b'{"inputs": ["fine", "\xed\xa0\x80"]}',
        {},
        422,
        "validation",
        "input 1 holds a lone surrogate",
    ),
    "not utf-8": ("POST", "/encode", b'{"inputs": "\xff\xfe"}', {}, 422, "validation", "UTF-8"),
    "list as mode": (
        "POST",
        "/v1/embeddings",
        body(input="a", attention={"mode": []}),
        {},
        422,
        "validation",
        "unknown attention mode",
    ),
    "object as mode": (
        "POST",
        "/encode",
        body(inputs="a", attention={"mode": {}}),
        {},
        422,
        "validation",
        "unknown attention mode",
    ),
    "window beyond its upper bound": (
        "POST",
        "/encode",
        body(inputs="a", attention={"mode": "sliding_window", "window": 2**63}),
        {},
        422,
        "validation",
        "value <= 1048576",
    ),
    "request cost over the limit": (
        "POST",
        "/encode",
        body(inputs=[words(1500)] * 4, attention={"mode": "dense"}),
        {},
        422,
        "validation",
        "max_request_cost=10000000",
    ),
    "info without the api key": (
        "GET",
        "/info",
        b"",
        {"Authorization": ""},
        401,
        "unauthorized",
        "",
    ),
    "metrics without the api key": (
        "GET",
        "/metrics",
        b"",
        {"Authorization": ""},
        401,
        "unauthorized",
        "",
    ),
    "docs without the api key": (
        "GET",
        "/docs",
        b"",
        {"Authorization": ""},
        401,
        "unauthorized",
        "",
    ),
    "openapi without the api key": (
        "GET",
        "/openapi.json",
        b"",
        {"Authorization": ""},
        401,
        "unauthorized",
        "",
    ),
    "unknown route": ("GET", "/encodings", b"", {}, 404, "not_found", ""),
    "wrong method": ("GET", "/encode", b"", {}, 405, "method_not_allowed", ""),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_request_gets_its_json_error_and_the_server_stays_healthy(server, case) -> None:
    method, path, content, headers, status, error_type, fragment = CASES[case]
    headers = {**JSON, **AUTH, **headers}
    headers = {name: value for name, value in headers.items() if value}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.request(method, path, content=content, headers=headers)
        assert response.status_code == status, response.text
        if path.startswith("/v1/"):  # OpenAI's error shape, which its clients parse
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            message, kind = error["message"], error["code"]
        else:
            assert set(response.json()) == {"error", "error_type"}
            message, kind = response.json()["error"], response.json()["error_type"]
        assert kind == error_type
        assert fragment in message
        assert client.get("/health").status_code == 200


def test_a_streamed_body_over_the_limit_is_refused_while_it_arrives(server) -> None:
    def chunks():
        yield b'{"inputs": ["'
        for _ in range(100):
            yield b"word " * 1000  # 500 kB in all, with no Content-Length
        yield b'"]}'

    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/encode", content=chunks(), headers={**JSON, **AUTH})
        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert response.json()["error_type"] == "payload_too_large"
        assert client.get("/health").status_code == 200
