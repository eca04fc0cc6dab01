"""Slow, stalled and idle clients against a real `stocks serve`: others still get answers.

Few threads (3 workers x 2) and more slow sockets (30) than threads: a server that gives
a thread to a request before its headers and body are in would time out every GET here.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from pathlib import Path

import pytest
from conftest import business_days, random_bars, store, wait_for
from test_api_server import get, start_server, stop_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ sits beside src/
from bench.httpload import SLOW_KINDS, SlowClients  # noqa: E402

SLOW = 30
TIMEOUTS = {"STOCKS_HEADER_TIMEOUT": "2", "STOCKS_BODY_TIMEOUT": "2", "STOCKS_THREADS": "2"}


@pytest.fixture(scope="module")
def slow_server(redis_server):
    port, proc = start_server(redis_server.url, **TIMEOUTS)
    yield port
    stop_server(proc)


def test_normal_gets_answer_while_slow_sockets_hold_on(slow_server, r0):
    store(r0, "AAPL", random_bars(business_days("2017-01-02", "2017-12-29")), name="Apple")
    port = slow_server
    with SlowClients(f"http://127.0.0.1:{port}", SLOW, interval=0.5) as slow:
        time.sleep(0.7)  # every kind is in place, the trickling ones have sent more
        for _ in range(10):
            started = time.monotonic()
            status, _, body = get(port, "/tickers/AAPL/prices?start=2017-06-01&end=2017-06-30")
            assert status == 200 and json.loads(body)["count"] == 22
            assert time.monotonic() - started < 2.0  # generous: ~5 ms when healthy
        # The server ends each of them by itself (header and body timeouts: 2 s here).
        everyone = {kind: SLOW // len(SLOW_KINDS) for kind in SLOW_KINDS}
        wait_for(lambda: slow.closed() == everyone, timeout=15, what="slow sockets closed")
    assert get(port, "/health")[0] == 200


def post_partial_body(port: int, length: int) -> tuple[bytes, dict]:
    """POST one byte of a ``length``-byte body, then wait: (status line, JSON error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{" % length
        )
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)["error"]


def test_a_body_that_never_comes_gets_a_json_408(slow_server):
    status, error = post_partial_body(slow_server, 500)
    assert status.startswith(b"HTTP/1.1 408 ")
    assert error["code"] == "request_timeout"


def test_a_body_over_the_limit_is_refused_before_it_is_read(slow_server):
    started = time.monotonic()
    status, error = post_partial_body(slow_server, 10_000_000)
    assert status.startswith(b"HTTP/1.1 413 ") and error["status"] == 413
    assert time.monotonic() - started < 1.5  # at once, not after the 2 s body timeout


def test_chunked_bodies_are_read_whole_and_bounded(slow_server):
    def post_chunked(chunks: list[bytes]) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", slow_server, timeout=10)
        try:
            conn.request(
                "POST",
                "/jobs",
                body=iter(chunks),
                encode_chunked=True,
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())["error"]
        finally:
            conn.close()

    status, error = post_chunked([b'{"symbols": ', b'"not a list"}'])
    assert status == 400 and error["status"] == 400  # the app saw the whole body
    status, error = post_chunked([b"x" * 40_000, b"x" * 40_000])
    assert status == 413 and error["code"] == "payload_too_large"


def test_a_non_ascii_path_is_a_json_404(slow_server):
    status, headers, body = get(slow_server, "/tickers/%C3%A9%FF/prices")
    assert status == 404 and json.loads(body)["error"]["status"] == 404
