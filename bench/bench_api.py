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
headers, a third stalling a POST body, a third idle). In the same turns: the app of the
day issue 12 was filed, on its own gunicorn (``bench/filing_peer.py``), the peer of the
issue's ">= 2x" target.

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
from contextlib import ExitStack
from pathlib import Path

import redis

from bench import filing_peer
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
FILING = f"gunicorn gthread, the app at filing ({filing_peer.FILING_COMMIT})"


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


def load_data(url: str) -> tuple[list[str], str]:
    """The bench's series in today's layout (DB 0) and the naive peer's (NAIVE_DB)."""
    r = redis.Redis.from_url(url, db=STOCKS_DB)
    naive = redis.Redis.from_url(url, db=NAIVE_DB)
    series, source = filing_peer.bench_series(SP500_DIR)
    pipe = naive.pipeline(transaction=False)
    for sym, bars in series.items():
        storage.replace_series(r, sym, bars, filing_peer.META)
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
    elif kind == "filing":
        cmd = filing_peer.serve_command(port)
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
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        stack.callback(server.stop)
        filing = start_filing_store(Path(tmp), stack)
        symbols, source = load_data(server.url)
        if isinstance(filing, tuple):
            filing = finish_filing_store(*filing)
        full = [f"/tickers/{s}/prices" for s in symbols]
        month = [f"/tickers/{s}/prices?start={MONTH[0]}&end={MONTH[1]}" for s in symbols]
        both = (("5 years", full), ("1 month", month))
        results, slow, notes = compare_servers(server.url, both, month[0], filing)
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
    return report(results, slow, source, load_before, notes)


def start_filing_store(tmp: Path, stack: ExitStack) -> tuple[subprocess.Popen, dict] | str:
    """The code at filing and its own redis-server, being loaded: (loader, env), or why not."""
    pkg = filing_peer.extract(ROOT, tmp / "filing")
    if isinstance(pkg, str):
        return pkg
    redis_server = RedisServer(tmp / "redis-filing", appendonly=False).start()
    stack.callback(redis_server.stop)
    env = {"REDIS_URL": redis_server.url, "PYTHONPATH": filing_peer.python_path(pkg, ROOT)}
    return filing_peer.load(pkg, ROOT, redis_server.url, SP500_DIR), env


def finish_filing_store(loader: subprocess.Popen, env: dict) -> dict | str:
    """The filing server's environment once its data is in, or why it is not."""
    _, err = loader.communicate()
    if loader.returncode:
        lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
        return f"its loader failed ({lines[-1]})"
    return env


def compare_servers(redis_url: str, ranges, probe: str, filing: dict | str):
    """Our app under each server, and the app at filing under its own (``filing``: its
    environment, or why it is missing), all running at once and measured in turns
    (ABCABC...): the machine's load drifts, so each figure is the median of ROUNDS turns.
    Returns the figures, the slow-socket effects and notes for the report."""
    procs, bases, notes = [], {}, []
    try:
        for name, worker_class in SERVERS:
            env = {"STOCKS_WORKER_CLASS": worker_class}
            proc, bases[name] = start_server("ours", redis_url, probe, env)
            procs.append(proc)
        if isinstance(filing, dict):
            try:
                proc, bases[FILING] = start_server("filing", redis_url, probe, filing)
                procs.append(proc)
                notes += same_answers(bases[SERVERS[0][0]], bases[FILING], ranges)
            except RuntimeError as exc:
                filing = str(exc)
        if isinstance(filing, str):
            notes.append(f"No row for the app at filing: {filing}.")
        for base in bases.values():
            for _, paths in ranges:
                warm(base, paths, cached=True)
        turns: dict[tuple[str, str], list[LoadResult]] = {}
        for _ in range(ROUNDS):
            for name, base in bases.items():
                for label, paths in ranges:
                    turns.setdefault((name, label), []).append(measure(base, paths))
        results = {
            key: sorted(runs, key=lambda r: r.rps)[len(runs) // 2] for key, runs in turns.items()
        }
        slow = {name: slow_clients_effect(bases[name], probe) for name, _ in SERVERS}
    finally:
        for proc in procs:
            stop_process(proc)
    return results, slow, notes


def same_answers(ours: str, filing: str, ranges) -> list[str]:
    """Whether today's app and the one at filing answer the same JSON for a few paths: the
    comparison is only fair if they do. Keys today's answers added are named, not warned."""
    notes, added, sampled = [], set(), 0
    for label, paths in ranges:
        for path in (paths[0], paths[len(paths) // 2], paths[-1]):
            now, then = (json.load(urllib.request.urlopen(base + path)) for base in (ours, filing))
            added |= now.keys() - then.keys()
            differ = sorted(k for k in then if now.get(k) != then[k])
            sampled += 1
            if differ:
                notes.append(
                    f"Warning: {label}, `{path}`: today's answer differs from the one at "
                    f"filing in {', '.join(differ)}."
                )
    if not notes:
        extra = f", apart from the keys added since ({', '.join(sorted(added))})" if added else ""
        notes.append(
            f"The app at filing answered the same JSON as today's for {sampled} sampled "
            f"paths{extra}."
        )
    return notes


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
    notes: list[str],
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
        f"`stocks serve` under each STOCKS_WORKER_CLASS, {default_workers()} workers, and "
        f"the peer of issue 12's target: the code of commit {filing_peer.FILING_COMMIT} (the "
        "day the issue was filed) served by its own `stocks serve` (gunicorn gthread, "
        f"{default_workers()} workers x 4 threads) from its own redis-server holding the same "
        "bars in its own layout. All four run at once and are measured in turns: each "
        f"figure is the median of {ROUNDS} turns (the load of a shared machine drifts within "
        "a run). Slow sockets (not measured for the app at filing: same gunicorn and "
        f"settings as the gthread row): {SLOW_SOCKETS} open at once (a third trickling a "
        "header line a second, a third a POST whose body never comes, a third idle); p50 of "
        "20 one-month GETs made one after another on new connections, a failure (error or "
        "no answer within 2 s) counted as 2,000 ms.",
        "",
        *(f"{note}\n" for note in notes),
        "| server | 5 years req/s | 1 month req/s | 1 month p50 ms | 1 month p99 ms "
        "| GET p50 ms, quiet | GET p50 ms, 50 slow sockets | failed GETs (of 20) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = [name for name, _ in SERVERS]
    if (FILING, "1 month") in results:
        names.append(FILING)
    for name in names:
        full, month = results[(name, "5 years")], results[(name, "1 month")]
        if name in slow:
            quiet, busy, failures = slow[name]
            effect = f"{quiet:.1f} | {busy:,.1f} | {failures}"
        else:
            effect = "-- | -- | --"
        lines.append(
            f"| {name} | {full.rps:,.0f} | {month.rps:,.0f} | {month.p50_ms:.2f} "
            f"| {month.p99_ms:.2f} | {effect} |"
        )
    lines += [
        "",
        "| range | default / gunicorn gthread (req/s) "
        f"| default / gunicorn at filing ({filing_peer.FILING_COMMIT}) |",
        "| --- | ---: | ---: |",
        *(
            f"| {label} | {ratio(results, label, SERVERS[-1][0])} "
            f"| {ratio(results, label, FILING)} |"
            for label in ("5 years", "1 month")
        ),
        "",
        "Target (issue 12): >= 2x gunicorn at filing on both ranges; under slow sockets, p50 "
        "well under 100 ms and no failed GET.",
        "",
        "Command: `.venv/bin/python -m bench.bench_api`",
        "",
    ]
    return "\n".join(lines)


def ratio(results: dict[tuple[str, str], LoadResult], label: str, peer: str) -> str:
    """The default server's req/s over the peer's, or -- when the peer has no figure."""
    if (peer, label) not in results:
        return "--"
    return f"{results[(SERVERS[0][0], label)].rps / results[(peer, label)].rps:.1f}x"


if __name__ == "__main__":
    print(run())
