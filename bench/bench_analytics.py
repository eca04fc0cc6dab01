"""Analytics routes through the real server under load: stats, rsi, macd, compare.

Starts its own redis-server (free port, temp dir), stores 10 five-year tickers (real
CSVs from ../shared/data when present, else synthetic walks), serves the API with
``stocks serve`` (gunicorn) and drives it with bench.httpload (wrk when on PATH).

Three server configurations in the same run:
- *all caches* (as shipped): a repeated identical GET is answered from the API's
  encoded-answer cache after one version check;
- *computed*: that answer cache off (STOCKS_API_CACHE_MB=0), so every request goes
  through Flask, validation, the figures (series and indicator rows still cached per
  data version) and JSON encoding;
- *no cache* (the peer): every cache off, each request reads the series from Redis,
  recomputes and serializes, as a plain implementation would.
The data API's own full 5-year ``/prices`` read is measured too, as a baseline.

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

from bench.common import stop_process
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
TARGETS = {"stats (5y)": 5, "rsi (5y)": 5, "macd (5y)": 5, "compare 10 tickers (5y)": 20}
CONFIGS = {
    "all caches": {},
    "computed": {"STOCKS_API_CACHE_MB": "0"},
    "no cache": {
        "STOCKS_API_CACHE_MB": "0",
        "STOCKS_ANALYTICS_CACHE": "0",
        "STOCKS_INDICATOR_CACHE": "0",
    },
}
COMMAND = ".venv/bin/python -m bench.bench_analytics"


def store_tickers(url: str) -> str:
    """Put the 10 tickers in DB 0; returns where they came from."""
    r = redis.Redis.from_url(url, db=0)
    real = SP500_DIR.is_dir()
    for sym in TICKERS:
        if real:
            from stocks.sources.csv import parse_csv  # noqa: PLC0415

            bars = parse_csv(SP500_DIR / f"{sym}.csv").bars
        else:
            from stocks.sources.synthetic import random_walk  # noqa: PLC0415

            bars = random_walk(sym, seed=1)
        storage.replace_series(r, sym, bars, {"name": sym, "sector": None, "source": "bench"})
    rows = storage.get_meta(r, TICKERS[0])["rows"]
    return f"{'real S&P 500 CSVs' if real else 'synthetic walks'}, {rows} rows each"


def start_server(url: str, port: int, extra_env: dict[str, str], log) -> subprocess.Popen:
    # one load generator is one client: far over fair use, still counted (its cost is real)
    env = {**env_with_redis(url), "STOCKS_COMPUTE_RATE": "1000000/second", **extra_env}
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
    """Each configuration at LIGHT connections; the shipped one also at CONNECTIONS."""
    cases = scenarios()
    results: dict[str, dict[str, LoadResult]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - closed below
        try:
            source = store_tickers(server.url)
            for config, env in CONFIGS.items():
                port = free_port()
                proc = start_server(server.url, port, env, log)
                base = f"http://127.0.0.1:{port}"
                try:
                    results[config] = {n: measure(base, p, LIGHT) for n, p in cases.items()}
                    if config != "no cache":
                        prices = [f"/tickers/{s}/prices" for s in TICKERS]
                        results[config][PRICES] = measure(base, prices, LIGHT)
                    if config == "all caches":
                        results["heavy"] = {
                            n: measure(base, p, CONNECTIONS) for n, p in cases.items()
                        }
                finally:
                    stop_process(proc)
        finally:
            log.close()
            server.stop()
    return report(results, source)


def cells(res: LoadResult | None) -> str:
    if res is None:
        return "| — | — | — "
    return f"| {res.rps:,.0f} | {res.p50_ms:.2f} | {res.p99_ms:.2f} "


def report(results: dict[str, dict[str, LoadResult]], source: str) -> str:
    shipped, heavy = results["all caches"], results["heavy"]
    computed, plain = results["computed"], results["no cache"]
    tool = next(iter(shipped.values())).tool
    lines = [
        "## Analytics API (stats, indicators, compare)",
        "",
        f"Data: 10 tickers ({', '.join(TICKERS)}), {source}. Server: `stocks serve` "
        f"(granian, default workers); load: {tool}, {DURATION:g} s per cell after a "
        f"warm-up, paths cycling over the 10 tickers, {LIGHT} keep-alive connections "
        f"(and {CONNECTIONS} for the shipped server); wrk and the server share the cores.",
        "",
        "| route | target p50 | all caches req/s | p50 ms | p99 ms "
        f"| @{CONNECTIONS} conns req/s | p50 ms | p99 ms "
        "| computed req/s | p50 ms | p99 ms | no cache req/s | p50 ms | p99 ms "
        "| all caches / no cache |",
        "| --- | ---: " + "| ---: " * 13 + "|",
    ]
    for name, res in shipped.items():
        target = f"≤ {TARGETS[name]} ms" if name in TARGETS else "—"
        peer = plain.get(name)
        ratio = f"{res.rps / peer.rps:.1f}×" if peer else "—"
        lines.append(
            f"| {name} | {target} "
            + cells(res)
            + cells(heavy.get(name))
            + cells(computed.get(name))
            + cells(peer)
            + f"| {ratio} |"
        )
    base = computed[PRICES]
    lines += [
        "",
        "*all caches*: as shipped (a repeated GET is served from the encoded-answer cache "
        "after one Redis version check); *computed*: `STOCKS_API_CACHE_MB=0`, every request "
        "runs Flask, validation, the figures from the per-version series/indicator caches "
        "and JSON encoding; *no cache* (the peer): also `STOCKS_ANALYTICS_CACHE=0 "
        "STOCKS_INDICATOR_CACHE=0`, every request reads the series from Redis and "
        "recomputes. *computed* req/s relative to the full 5-year `/prices` read, also "
        "computed: "
        + ", ".join(f"{n.split(' ')[0]} {computed[n].rps / base.rps:.2f}" for n in TARGETS)
        + ". p50 at a fixed connection count includes queueing (≈ connections / req/s).",
        "",
        f"Command: `{COMMAND}` (env BENCH_DURATION, BENCH_CONNECTIONS).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
