"""GET .../prices through the real server under load, against a naive peer in the same run.

Ours: ``stocks serve`` (granian + BufferedWsgi, DB-0 binary year chunks, cached encoded
answers revalidated by data version). Naive peer: what simple Flask apps do, one JSON
document per ticker in Redis (a list of row dicts), ``json.loads`` and a filter per
request, ``jsonify`` the result; run by the same server settings (``stocks.api.server``).
Both read the same tickers from the same redis-server. Requests rotate over all
tickers: the full 5-year series, and one month (June 2017).

The same app is also served by the other HTTP servers ``stocks serve`` can run
(STOCKS_WORKER_CLASS): gunicorn gthread (the previous default) and granian's own WSGI
mode; for each, the p50 of plain GETs while 50 slow sockets are open (a third trickling
headers, a third stalling a POST body, a third idle).

Run: ``.venv/bin/python -m bench.bench_api`` (prints a Markdown section).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import redis

from bench.common import stop_process
from bench.httpload import LoadResult, SlowClients, probe_latency, run_load
from stocks import storage
from stocks.api.server import default_workers
from stocks.keys import STOCKS_DB
from stocks.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
SP500_DIR = ROOT.parent / "shared" / "data" / "sp500_daily"
NAIVE_DB = 15  # a DB no part of the project uses; the naive peer's documents live there
NAIVE_PREFIX = "naive:"
DURATION = float(os.environ.get("BENCH_DURATION", "5"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
MONTH = ("2017-06-01", "2017-06-30")
SLOW_SOCKETS = 50
ROUNDS = 3
# (row name, STOCKS_WORKER_CLASS): the HTTP servers compared on the same app
SERVERS = (
    ("granian + BufferedWsgi (default)", "granian"),
    ("granian, its WSGI mode", "granian-wsgi"),
    ("gunicorn gthread 4 threads", "gthread"),
)


# --- the naive peer --------------------------------------------------------------------


def create_naive_app():
    """One JSON document per ticker, parsed and filtered on every request."""
    from flask import Flask, jsonify, request  # noqa: PLC0415 - only the peer needs it

    app = Flask("naive")
    r = redis.Redis.from_url(os.environ["NAIVE_REDIS_URL"], db=NAIVE_DB)

    @app.get("/tickers/<symbol>/prices")
    def prices(symbol: str):
        raw = r.get(NAIVE_PREFIX + symbol.upper())
        if raw is None:
            return jsonify({"error": "unknown symbol"}), 404
        start = request.args.get("start")
        end = request.args.get("end")
        rows = [
            row
            for row in json.loads(raw)
            if (start is None or row["date"] >= start) and (end is None or row["date"] <= end)
        ]
        return jsonify(
            {"symbol": symbol.upper(), "interval": "1d", "count": len(rows), "prices": rows}
        )

    return app


def create_static_app():
    """The ceiling: a bare WSGI app answering fixed bytes (a one-month answer's size)."""
    body = b"x" * int(os.environ.get("STATIC_BYTES", "2500"))
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]

    def app(environ, start_response):
        start_response("200 OK", headers)
        return [body]

    return app


# --- data ------------------------------------------------------------------------------


def synthetic_series(seed: int) -> np.ndarray:
    days = np.arange(np.datetime64("2013-02-08"), np.datetime64("2018-02-08"))
    days = days[np.is_busday(days)]
    rng = np.random.default_rng(seed)
    close = np.round(50 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days)))), 4)
    return storage.make_bars(
        days, close, close * 1.01, close * 0.99, close, rng.integers(10**5, 10**8, len(days))
    )


def load_data(url: str) -> tuple[list[str], str]:
    """All 505 real tickers when ../shared is there, else 100 synthetic ones; both layouts."""
    r = redis.Redis.from_url(url, db=STOCKS_DB)
    naive = redis.Redis.from_url(url, db=NAIVE_DB)
    if SP500_DIR.is_dir():
        from stocks.sources.csv import parse_csv  # noqa: PLC0415

        series = {p.stem: parse_csv(p).bars for p in sorted(SP500_DIR.glob("*.csv"))}
        source = f"{len(series)} real tickers (../shared/data/sp500_daily)"
    else:
        series = {f"SYN{i:03d}": synthetic_series(i) for i in range(100)}
        source = f"{len(series)} synthetic tickers (5 years of business days)"
    pipe = naive.pipeline(transaction=False)
    for sym, bars in series.items():
        storage.replace_series(r, sym, bars, {"source": "bench"})
        pipe.set(NAIVE_PREFIX + sym, json.dumps(storage.bar_dicts(bars)))
    pipe.execute()
    return sorted(series), source


# --- servers ---------------------------------------------------------------------------


def start_server(kind: str, redis_url: str, probe: str, extra_env: dict | None = None):
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "NAIVE_REDIS_URL": redis_url}
    # one load generator is one client: far over fair use, still counted (its cost is real)
    env["STOCKS_COMPUTE_RATE"] = "1000000/second"
    env.update(extra_env or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if kind == "ours":
        cmd = [str(Path(sys.executable).with_name("stocks")), "serve", "--port", str(port)]
    else:
        factory = {"naive": "create_naive_app", "static": "create_static_app"}[kind]
        cmd = [
            sys.executable,
            "-c",
            "import sys; from stocks.api.server import run_wsgi; "
            "from stocks.config import Settings; "
            f"from bench.bench_api import {factory}; "
            f"sys.exit(run_wsgi(Settings.from_env(), {factory}, '127.0.0.1', {port}))",
        ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + probe)
            return proc, base
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def warm(base: str, paths: list[str], cached: bool) -> None:
    # Every worker has its own answer cache: warm until each worker has likely seen each
    # path (4 requests per worker and path: ~2% unseen), at most 20 s. Others: WARMUP s.
    wanted = 4 * default_workers() * len(paths) if cached else 0
    done, started = 0, time.monotonic()
    while time.monotonic() - started < 20:
        done += run_load(base, paths, duration=WARMUP, connections=CONNECTIONS).requests
        if done >= wanted:
            break


def measure(base: str, paths: list[str]) -> LoadResult:
    result = run_load(base, paths, duration=DURATION, connections=CONNECTIONS)
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests against {base}")
    return result


# --- the section -----------------------------------------------------------------------


def run() -> str:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        try:
            symbols, source = load_data(server.url)
            full = [f"/tickers/{s}/prices" for s in symbols]
            month = [f"/tickers/{s}/prices?start={MONTH[0]}&end={MONTH[1]}" for s in symbols]
            both = (("5 years", full), ("1 month", month))
            results, slow = compare_servers(server.url, both, month[0])
            configs = [
                ("ours, cache off", "ours", {"STOCKS_API_CACHE_MB": "0"}, both),
                ("naive", "naive", {}, both),
                ("bare server, fixed 2.5 KB", "static", {}, (("1 month", month),)),
            ]
            for name, kind, env, ranges in configs:
                proc, base = start_server(kind, server.url, month[0], env)
                try:
                    for label, paths in ranges:
                        warm(base, paths, cached=False)
                        results[(name, label)] = measure(base, paths)
                finally:
                    stop_process(proc)
        finally:
            server.stop()
    return report(results, slow, source, load_before)


def compare_servers(redis_url: str, ranges, probe: str):
    """Our app under each server, all running at once and measured in turns (ABCABC...):
    the machine's load drifts, so each figure is the median of ROUNDS turns."""
    procs, bases = [], {}
    try:
        for name, worker_class in SERVERS:
            env = {"STOCKS_WORKER_CLASS": worker_class}
            proc, bases[name] = start_server("ours", redis_url, probe, env)
            procs.append(proc)
            for _, paths in ranges:
                warm(bases[name], paths, cached=True)
        turns: dict[tuple[str, str], list[LoadResult]] = {}
        for _ in range(ROUNDS):
            for name, base in bases.items():
                for label, paths in ranges:
                    turns.setdefault((name, label), []).append(measure(base, paths))
        results = {
            key: sorted(runs, key=lambda r: r.rps)[len(runs) // 2] for key, runs in turns.items()
        }
        slow = {name: slow_clients_effect(base, probe) for name, base in bases.items()}
    finally:
        for proc in procs:
            stop_process(proc)
    return results, slow


def slow_clients_effect(base: str, path: str) -> tuple[float, float, int]:
    """p50 of one-after-another GETs without, then with 50 slow sockets open; failures."""
    quiet, _ = probe_latency(base, path)
    with SlowClients(base, SLOW_SOCKETS):
        time.sleep(1.0)  # let the trickling sockets start
        busy, failures = probe_latency(base, path)
    return quiet, busy, failures


def report(
    results: dict[tuple[str, str], LoadResult],
    slow: dict[str, tuple[float, float, int]],
    source: str,
    load_before: float,
) -> str:
    tool = next(iter(results.values())).tool
    ours = SERVERS[0][0]
    lines = [
        "## API: GET /tickers/{symbol}/prices under load",
        "",
        f"Data: {source}; requests rotate over every ticker. Load: {tool}, "
        f"{CONNECTIONS} keep-alive connections, {DURATION:g} s after a warm-up of 4 requests "
        "per worker and path for the cached server (at most 20 s), 3 s for the others, "
        "on the same machine as the servers. Ours and the naive peer: the default server "
        "of `stocks.api.server` (same workers and threads). Naive peer: one JSON document "
        "per ticker, `json.loads` + filter + `jsonify` per request. The bare server row is "
        "the ceiling of the server itself on this machine: a WSGI app returning fixed bytes. "
        f"1-minute load average before the run: {load_before:.1f} on {os.cpu_count()} cores.",
        "",
        "| server | range | req/s | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for (name, label), res in results.items():
        lines.append(f"| {name} | {label} | {res.rps:,.0f} | {res.p50_ms:.2f} | {res.p99_ms:.2f} |")
    lines += [
        "",
        "| range | ours / naive (req/s) | ours, cache off / naive |",
        "| --- | ---: | ---: |",
    ]
    for label in ("5 years", "1 month"):
        naive = results[("naive", label)].rps
        lines.append(
            f"| {label} | {results[(ours, label)].rps / naive:.1f}x "
            f"| {results[('ours, cache off', label)].rps / naive:.1f}x |"
        )
    lines += [
        "",
        "Targets: >= 800 req/s for 5 years, >= 3,000 req/s for one month, >= 3x the naive peer.",
        "",
        "### HTTP servers on the same app",
        "",
        f"`stocks serve` under each STOCKS_WORKER_CLASS, {default_workers()} workers, all "
        f"three running at once and measured in turns: each figure is the median of {ROUNDS} "
        "turns (the load of a shared machine drifts within a run). Slow "
        f"sockets: {SLOW_SOCKETS} open at once (a third trickling a header line a second, "
        "a third a POST whose body never comes, a third idle); p50 of 20 one-month GETs made "
        "one after another on new connections, a failure (error or no answer within 2 s) "
        "counted as 2,000 ms.",
        "",
        "| server | 5 years req/s | 1 month req/s | 1 month p50 ms | 1 month p99 ms "
        "| GET p50 ms, quiet | GET p50 ms, 50 slow sockets | failed GETs (of 20) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, _ in SERVERS:
        full, month = results[(name, "5 years")], results[(name, "1 month")]
        quiet, busy, failures = slow[name]
        lines.append(
            f"| {name} | {full.rps:,.0f} | {month.rps:,.0f} | {month.p50_ms:.2f} "
            f"| {month.p99_ms:.2f} | {quiet:.1f} | {busy:,.1f} | {failures} |"
        )
    gthread = SERVERS[-1][0]
    lines += [
        "",
        "| range | default / gunicorn gthread (req/s) |",
        "| --- | ---: |",
        *(
            f"| {label} | {results[(ours, label)].rps / results[(gthread, label)].rps:.1f}x |"
            for label in ("5 years", "1 month")
        ),
        "",
        "Target: >= 2x gunicorn gthread on both ranges; under slow sockets, p50 well under "
        "100 ms and no failed GET.",
        "",
        "Command: `.venv/bin/python -m bench.bench_api`",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
