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

import http.client
import multiprocessing as mp
import os
import shutil
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
