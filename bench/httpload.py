"""HTTP load generator for the benchmarks: req/s and latency percentiles under concurrency.

    from bench.httpload import run_load
    res = run_load("http://127.0.0.1:5000", ["/tickers/AAPL/prices"], duration=5, connections=16)
    res.rps, res.p50_ms, res.p99_ms, res.errors, res.tool

``paths`` are cycled in order over keep-alive connections. ``wrk`` (C, with a Lua script
for the path list and the percentiles) is used when it is on PATH, because a Python
client on the same two cores would be the bottleneck; otherwise a multi-process Python
client with one keep-alive ``http.client`` connection per thread does the same job.
Set HTTPLOAD_TOOL=python to force the fallback.
Non-2xx answers and socket errors are counted in ``errors``; a benchmark should treat
``errors > 0`` as a failed measurement.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_load(
    base_url: str,
    paths: Sequence[str],
    duration: float = 5.0,
    connections: int = 16,
    headers: dict[str, str] | None = None,
    use_wrk: bool | None = None,
) -> LoadResult:
    """Hammer ``base_url`` + each of ``paths`` (round robin) for ``duration`` seconds."""
    if not paths:
        raise ValueError("need at least one path")
    wrk = shutil.which("wrk")
    if use_wrk is None:
        use_wrk = wrk is not None and os.environ.get("HTTPLOAD_TOOL") != "python"
    if use_wrk:
        if wrk is None:
            raise RuntimeError("wrk is not on PATH")
        return _run_wrk(wrk, base_url, paths, duration, connections, headers or {})
    return _run_python(base_url, paths, duration, connections, headers or {})


def warm_up(base_url: str, paths: Sequence[str], rounds: int = 2) -> None:
    """Touch every path a few times (fills per-worker caches, checks they answer 200)."""
    for _ in range(rounds):
        for path in paths:
            status = _get_once(base_url, path)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")


def _get_once(base_url: str, path: str) -> int:
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


# --- wrk -------------------------------------------------------------------------------

_WRK_LUA = """
paths = {%(paths)s}
counter = 0
%(headers)s
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run_wrk(
    wrk: str,
    base_url: str,
    paths: Sequence[str],
    duration: float,
    connections: int,
    headers: dict[str, str],
) -> LoadResult:
    header_lines = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()
    )
    script = _WRK_LUA % {
        "paths": ", ".join(_lua_string(p) for p in paths),
        "headers": header_lines,
    }
    threads = max(1, min(connections, 2))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        script_path = f.name
    try:
        out = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "10s",
                "-s",
                script_path,
                base_url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
        ).stdout
    finally:
        os.unlink(script_path)
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    requests, micros, p50, p99, errors = (int(x) for x in line.split()[1:])
    return LoadResult(requests, micros / 1e6, p50 / 1e3, p99 / 1e3, errors, "wrk")


# --- Python fallback -------------------------------------------------------------------


def _client_process(args: tuple) -> tuple[int, int, list[float]]:
    base_url, paths, duration, threads, headers, offset = args
    parts = urlsplit(base_url)
    deadline = time.perf_counter() + duration
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine: list[float] = []
        bad = 0
        i = offset + k
        while time.perf_counter() < deadline:
            path = paths[i % len(paths)]
            i += 1
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if not 200 <= resp.status < 300:
                    bad += 1
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                continue
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return len(latencies), errors[0], latencies


def _run_python(
    base_url: str,
    paths: Sequence[str],
    duration: float,
    connections: int,
    headers: dict[str, str],
) -> LoadResult:
    procs = max(1, min(connections, os.cpu_count() or 1))
    per = [connections // procs + (1 if k < connections % procs else 0) for k in range(procs)]
    jobs = [
        (base_url, list(paths), duration, n, headers, k * 1000) for k, n in enumerate(per) if n > 0
    ]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(_client_process, jobs)
    elapsed = time.perf_counter() - t0
    seconds = min(duration, elapsed) if elapsed else duration
    lat = np.array([x for _, _, lats in results for x in lats]) * 1e3
    count = sum(n for n, _, _ in results)
    errors = sum(e for _, e, _ in results)
    p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99)) if len(lat) else (0.0, 0.0)
    return LoadResult(count, seconds, p50, p99, errors, "python")


# --- slow clients ----------------------------------------------------------------------

SLOW_KINDS = ("trickle", "stalled-body", "idle")


class SlowClients:
    """Sockets that each hold a server's attention without ever finishing a request.

    ``count`` sockets, split evenly over: ``trickle`` (request headers, one more line
    every ``interval`` s, never the blank line that ends them), ``stalled-body`` (a POST
    whose headers promise a body that never comes), ``idle`` (connected, silent). Use as
    a context manager; ``closed()`` counts the sockets the server has since closed.
    """

    def __init__(self, base_url: str, count: int = 50, interval: float = 1.0):
        parts = urlsplit(base_url)
        self.address = (parts.hostname, parts.port)
        self.count = count
        self.interval = interval
        self.sockets: dict[str, list[socket.socket]] = {kind: [] for kind in SLOW_KINDS}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def __enter__(self) -> SlowClients:
        host = f"{self.address[0]}:{self.address[1]}"
        for i in range(self.count):
            kind = SLOW_KINDS[i % len(SLOW_KINDS)]
            sock = socket.create_connection(self.address, timeout=5)
            if kind == "trickle":
                sock.sendall(f"GET /tickers HTTP/1.1\r\nHost: {host}\r\n".encode())
            elif kind == "stalled-body":
                sock.sendall(
                    f"POST /jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    "Content-Length: 1000\r\n\r\n{".encode()
                )
            self.sockets[kind].append(sock)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for socks in self.sockets.values():
            for sock in socks:
                sock.close()

    def _trickle(self) -> None:
        n = 0
        while not self._stop.wait(self.interval):
            n += 1
            for sock in self.sockets["trickle"]:
                # OSError: closed by the server, as it should do eventually
                with contextlib.suppress(OSError):
                    sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())

    def closed(self) -> dict[str, int]:
        """Per kind, how many sockets the server has closed (EOF or reset seen)."""
        out = {}
        for kind, socks in self.sockets.items():
            out[kind] = 0
            for sock in socks:
                try:
                    sock.setblocking(False)
                    while data := sock.recv(65536):
                        del data  # an error answer before the close, e.g. 408
                    out[kind] += 1  # b"": the server closed it
                except BlockingIOError:
                    pass  # still open
                except OSError:
                    out[kind] += 1
                finally:
                    sock.setblocking(True)
        return out


def probe_latency(
    base_url: str, path: str, count: int = 20, timeout: float = 2.0
) -> tuple[float, int]:
    """``count`` GETs one after another, each on a new connection: (p50 ms, failures).

    A request that fails or takes over ``timeout`` counts as ``timeout`` in the p50."""
    parts = urlsplit(base_url)
    times, failures = [], 0
    for _ in range(count):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
        finally:
            conn.close()
        elapsed = time.perf_counter() - t0
        if not ok:
            failures += 1
            elapsed = max(elapsed, timeout)
        times.append(elapsed * 1e3)
    return float(np.percentile(times, 50)), failures
