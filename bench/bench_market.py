"""The whole market at once: ``GET /market/{date}`` and ``GET /market/movers`` over 505 tickers.

Starts its own redis-server, loads the 505 real CSVs from ../shared/data (else 505
synthetic five-year walks) and measures, with every answer cache off (uncached):
- in process (Flask test client, one request at a time): the routes as shipped, which read
  the year chunks they need for every ticker in one MULTI pipeline, against the naive
  peer, which asks Redis once per ticker (505 round trips: ``read_series`` of that day, or
  of the whole series for movers, then ``analytics.change``), and the Redis read alone;
- over HTTP: ``stocks serve`` (its default server) with ``STOCKS_API_CACHE_MB=0``, one keep-alive
  connection, so p50 is one request's latency.

    .venv/bin/python -m bench.run market
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import redis

from bench.bench_analytics import start_server
from bench.common import stop_process, synthetic_bars
from bench.httpload import run_load, warm_up
from stocks import analytics as calc
from stocks import loader, storage
from stocks.api.app import create_app
from stocks.config import Settings
from stocks.constituents import sp500_symbols
from stocks.keys import bars_key, meta_key
from stocks.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
SP500_DIR = ROOT.parent / "shared" / "data" / "sp500_daily"
DURATION = float(os.environ.get("BENCH_DURATION", "4"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "40"))
TARGET_MS = 20
DAYS = ["2017-06-30", "2016-03-15", "2015-01-02", "2014-07-01", "2017-12-29", "2013-09-03"]
PERIODS = ["1d", "1wk", "1mo"]
COMMAND = ".venv/bin/python -m bench.run market"


def store(settings: Settings) -> str:
    if SP500_DIR.is_dir():
        summary = loader.load_csv(settings, SP500_DIR, workers=2, progress=False)
        return f"the {len(summary.loaded)} real S&P 500 CSVs ({summary.rows:,} rows)"
    r = settings.redis(0)
    symbols = sp500_symbols()
    for i, sym in enumerate(symbols):
        storage.replace_series(r, sym, synthetic_bars(i), {"name": sym, "source": "bench"})
    return f"{len(symbols)} synthetic five-year walks"


def p50_ms(fn, args: list) -> float:
    """Median wall time of ``fn(arg)`` in ms, cycling over ``args`` for ROUNDS calls."""
    fn(args[0])
    times = []
    for i in range(ROUNDS):
        started = time.perf_counter()
        fn(args[i % len(args)])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def naive_market_day(r: redis.Redis, day: str) -> bytes:
    """The peer: one round trip per ticker."""
    d = dt.date.fromisoformat(day)
    rows = []
    for sym in storage.list_symbols(r):
        bars = storage.read_bars(r, sym, d, d)
        if bars is not None and len(bars):
            rows.append({"symbol": sym, **storage.bar_dicts(bars)[0]})
    return orjson.dumps({"date": day, "count": len(rows), "bars": rows})


def naive_movers(r: redis.Redis, args: tuple[str, str]) -> bytes:
    day, period = args
    end = dt.date.fromisoformat(day)
    found = []
    for sym in storage.list_symbols(r):
        try:
            found.append((sym, calc.change(storage.read_bars(r, sym), period, end)))
        except calc.AnalyticsError:
            continue
    found.sort(key=lambda item: item[1]["change_pct"])
    return orjson.dumps({"gainers": found[-10:][::-1], "losers": found[:10]})


def run() -> str:
    day_paths = [f"/market/{d}" for d in DAYS]
    mover_args = [(d, p) for d in DAYS for p in PERIODS]
    mover_paths = [f"/market/movers?date={d}&period={p}" for d, p in mover_args]
    with tempfile.TemporaryDirectory(prefix="bench-market-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - closed below
        try:
            settings = Settings(redis_url=server.url, api_cache_mb=0)
            source = store(settings)
            r = settings.redis(0)
            client = create_app(settings).test_client()

            def get(path: str) -> None:
                resp = client.get(path)
                if resp.status_code != 200:
                    raise RuntimeError(f"{path}: {resp.status_code} {resp.data[:200]!r}")

            def read_year(day: str) -> None:
                """The simpler read: every ticker's year chunk in one MULTI pipeline."""
                pipe = r.pipeline(transaction=True)
                for sym in storage.list_symbols(r):
                    pipe.hmget(meta_key(sym), "version")
                    pipe.hget(bars_key(sym), day[:4])
                storage.decode_chunks(c for c in pipe.execute()[1::2] if c)

            def read_window(day: str) -> None:
                d = dt.date.fromisoformat(day)
                storage.read_market_window(r, d, d)

            inproc = {
                "market day": (
                    p50_ms(get, day_paths),
                    p50_ms(lambda d: naive_market_day(r, d), DAYS),
                ),
                "movers": (
                    p50_ms(get, mover_paths),
                    p50_ms(lambda a: naive_movers(r, a), mover_args),
                ),
            }
            redis_read = (p50_ms(read_window, DAYS), p50_ms(read_year, DAYS))
            port = free_port()
            proc = start_server(server.url, port, {"STOCKS_API_CACHE_MB": "0"}, log)
            base = f"http://127.0.0.1:{port}"
            try:
                http = {}
                for name, paths in (("market day", day_paths), ("movers", mover_paths)):
                    warm_up(base, paths, rounds=2)
                    http[name] = run_load(base, paths, duration=DURATION, connections=1)
            finally:
                stop_process(proc)
        finally:
            log.close()
            server.stop()
    return report(source, inproc, redis_read, http)


def report(source: str, inproc: dict, redis_read: tuple[float, float], http: dict) -> str:
    lines = [
        "## Market day and movers over every ticker (uncached)",
        "",
        f"Data: {source}. Every answer cache off. In process: Flask test client, one "
        f"request at a time, median of {ROUNDS} requests cycling over {len(DAYS)} dates "
        f"(movers: × periods {', '.join(PERIODS)}). HTTP: `stocks serve` (granian) with "
        f"`STOCKS_API_CACHE_MB=0`, 1 keep-alive connection, {DURATION:g} s per route "
        f"({http['market day'].tool}).",
        "",
        "| route | target p50 | HTTP p50 ms | HTTP p99 ms | HTTP req/s | in-process p50 ms "
        "| naive peer p50 ms (505 round trips) | peer / shipped |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (shipped, naive) in inproc.items():
        res = http[name]
        lines.append(
            f"| {name} | ≤ {TARGET_MS} ms | {res.p50_ms:.2f} | {res.p99_ms:.2f} | {res.rps:,.0f} "
            f"| {shipped:.2f} | {naive:.2f} | {naive / shipped:.1f}× |"
        )
    lines += [
        "",
        "The Redis read alone, one day for every ticker (symbol set + one call): as shipped, "
        f"a script picking the bars inside Redis (`storage.read_market_window`), p50 "
        f"{redis_read[0]:.2f} ms; one MULTI pipeline of per-ticker HMGETs of that year's "
        f"chunk (~6 MB over the wire), p50 {redis_read[1]:.2f} ms. "
        "The naive peer reads each ticker's day (market day) or whole series (movers, then "
        "`analytics.change`) with its own round trip.",
        "",
        f"Command: `{COMMAND}` (env BENCH_DURATION, BENCH_ROUNDS).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
