"""Analytics routes through the real server under load: stats, rsi, macd, compare.

Starts its own redis-server (free port, temp dir), stores 10 five-year tickers (real
CSVs from ../shared/data when present, else synthetic walks), serves the API with
``stocks serve`` (gunicorn) and drives it with bench.httpload (wrk when on PATH).

Peers measured in the same run:
- the same server with the analytics caches off (STOCKS_ANALYTICS_CACHE,
  STOCKS_INDICATOR_CACHE and STOCKS_ANSWER_CACHE = 0): every request reads the series
  from Redis, recomputes and serializes, as a plain implementation would;
- ``GET /tickers/{s}/prices`` for the same five years, the data API's own full read.

    .venv/bin/python -m bench.bench_analytics
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis

from bench.httpload import LoadResult, run_load, warm_up
from stocks import storage
from stocks.redis_server import RedisServer, env_with_redis, free_port

ROOT = Path(__file__).resolve().parents[1]
SP500_DIR = ROOT.parent / "shared" / "data" / "sp500_daily"
TICKERS = ["AAPL", "MSFT", "AMZN", "JPM", "XOM", "JNJ", "PG", "KO", "INTC", "CSCO"]
DURATION = float(os.environ.get("BENCH_DURATION", "4"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
LIGHT = 4
PRICES = "prices, full 5y (data API)"
COMMAND = ".venv/bin/python -m bench.bench_analytics"


def store_tickers(url: str) -> str:
    """Put the 10 tickers in DB 0; returns where they came from."""
    r = redis.Redis.from_url(url, db=0)
    real = SP500_DIR.is_dir()
    for sym in TICKERS:
        if real:
            from stocks.csv_source import parse_csv  # noqa: PLC0415

            bars = parse_csv(SP500_DIR / f"{sym}.csv").bars
        else:
            from stocks.synthetic import random_walk  # noqa: PLC0415

            bars = random_walk(sym, seed=1)
        storage.replace_series(r, sym, bars, {"name": sym, "sector": None, "source": "bench"})
    rows = storage.get_meta(r, TICKERS[0])["rows"]
    return f"{'real S&P 500 CSVs' if real else 'synthetic walks'}, {rows} rows each"


def start_server(url: str, port: int, cache: int | None, log) -> subprocess.Popen:
    env = env_with_redis(url)
    if cache is not None:
        for name in ("STOCKS_ANALYTICS_CACHE", "STOCKS_INDICATOR_CACHE", "STOCKS_ANSWER_CACHE"):
            env[name] = str(cache)
    stocks = shutil.which("stocks", path=str(Path(sys.executable).parent)) or "stocks"
    proc = subprocess.Popen(
        [stocks, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stocks serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("stocks serve did not answer /health in 30 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def scenarios() -> dict[str, list[str]]:
    """Each scenario cycles over all 10 tickers (5-year series)."""
    return {
        "stats (5y)": [f"/tickers/{s}/stats" for s in TICKERS],
        "rsi (5y)": [f"/tickers/{s}/indicators/rsi" for s in TICKERS],
        "macd (5y)": [f"/tickers/{s}/indicators/macd" for s in TICKERS],
        "compare 10 tickers (5y)": ["/compare?symbols=" + ",".join(TICKERS)],
    }


def measure(base: str, paths: list[str], connections: int) -> LoadResult:
    warm_up(base, paths, rounds=8)  # every gunicorn worker gets its caches filled
    result = run_load(base, paths, duration=DURATION, connections=connections)
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests on {paths[0]}")
    return result


def run() -> str:
    """Cached server at a moderate and a saturating load, then the peers."""
    cases = scenarios()
    cases[PRICES] = [f"/tickers/{s}/prices" for s in TICKERS]
    results: dict[str, dict[str, LoadResult]] = {"light": {}, "heavy": {}, "no cache": {}}
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - closed below
        try:
            source = store_tickers(server.url)
            for cache in (None, 0):
                port = free_port()
                proc = start_server(server.url, port, cache, log)
                base = f"http://127.0.0.1:{port}"
                try:
                    for name, paths in cases.items():
                        if cache is None:
                            results["light"][name] = measure(base, paths, LIGHT)
                            results["heavy"][name] = measure(base, paths, CONNECTIONS)
                        elif name != PRICES:
                            results["no cache"][name] = measure(base, paths, LIGHT)
                finally:
                    stop_server(proc)
        finally:
            log.close()
            server.stop()
    return report(results, source)


def report(results: dict[str, dict[str, LoadResult]], source: str) -> str:
    light, heavy, plain = results["light"], results["heavy"], results["no cache"]
    tool = next(iter(light.values())).tool
    targets = {"stats (5y)": 5, "rsi (5y)": 5, "macd (5y)": 5, "compare 10 tickers (5y)": 20}
    lines = [
        "## Analytics API (stats, indicators, compare)",
        "",
        f"Data: 10 tickers ({', '.join(TICKERS)}), {source}. Server: `stocks serve` "
        f"(gunicorn, default workers) on this machine; load: {tool}, {DURATION:g} s per "
        f"cell after a warm-up, paths cycling over the 10 tickers, at {LIGHT} and "
        f"{CONNECTIONS} keep-alive connections (wrk and the server share the cores).",
        "",
        f"| route | target p50 | req/s @{LIGHT} | p50 ms @{LIGHT} | p99 ms @{LIGHT} "
        f"| req/s @{CONNECTIONS} | p50 ms @{CONNECTIONS} | p99 ms @{CONNECTIONS} "
        f"| no-cache req/s @{LIGHT} | no-cache p50 ms @{LIGHT} | cached / no-cache |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, res in light.items():
        big = heavy[name]
        target = f"≤ {targets[name]} ms" if name in targets else "—"
        row = (
            f"| {name} | {target} | {res.rps:,.0f} | {res.p50_ms:.2f} | {res.p99_ms:.2f} "
            f"| {big.rps:,.0f} | {big.p50_ms:.2f} | {big.p99_ms:.2f} "
        )
        peer = plain.get(name)
        if peer is None:
            row += "| — | — | — |"
        else:
            row += f"| {peer.rps:,.0f} | {peer.p50_ms:.2f} | {res.rps / peer.rps:.1f}× |"
        lines.append(row)
    prices = light[PRICES]
    lines += [
        "",
        "Peers in the same run: *no cache* is the same server with the analytics caches "
        "off (`STOCKS_ANALYTICS_CACHE=0 STOCKS_INDICATOR_CACHE=0 STOCKS_ANSWER_CACHE=0`: "
        "each request reads the series from Redis, recomputes and serializes); the full "
        f"5-year `/prices` read is the data API baseline (req/s ratio @{LIGHT}: "
        + ", ".join(f"{name.split(' ')[0]} {light[name].rps / prices.rps:.2f}" for name in targets)
        + "). p50 at a fixed connection count includes queueing (≈ connections / req/s).",
        "",
        f"Command: `{COMMAND}` (env BENCH_DURATION, BENCH_CONNECTIONS for the heavy column).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
