"""A real stack for the operator's-view tests: `stocks serve` and `stocks worker` processes
started through the CLI (whatever HTTP server it runs), their stderr kept in files."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import random_bars, stop_process, store

from stocks.redis_server import env_with_redis, free_port


def http_call(port: int, method: str, path: str, body=None, headers=None):
    """(status, headers with lower-case names, body bytes) on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json",
                                                       **(headers or {})})  # fmt: skip
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _popen(redis_url: str, args: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stocks.cli", *args],
        env={**env_with_redis(redis_url), "STOCKS_LOG_FORMAT": "json", **env},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )


def start_api(redis_url: str, log: Path, workers: int = 2, **env: str):
    """`stocks serve --workers N` on a free port, once /health answers: (port, process)."""
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    proc = _popen(redis_url, args, log, env)
    deadline = time.monotonic() + 60
    while True:
        try:
            if http_call(port, "GET", "/health")[0] == 200:
                return port, proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError("stocks serve did not start: " + log.read_text()[-3000:])
        time.sleep(0.1)


def start_worker(redis_url: str, log: Path, *args: str, **env: str) -> subprocess.Popen:
    return _popen(redis_url, ["worker", *args], log, env)


def stop(proc: subprocess.Popen) -> None:
    stop_process(proc, grace=20)


def json_lines(log: Path) -> list[dict]:
    """Every line of ``log``, each parsed as JSON (one that does not parse fails the test):
    granian's own lines go through the same formatter as ours."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def load_series(r0, symbol: str = "AAPL", days: int = 300) -> None:
    store(r0, symbol, random_bars(days, start_price=15))
