"""Chart render times per kind next to mplfinance defaults, and memory over many renders.

Starts its own redis-server on a free port, loads five years of daily bars (the real
S&P 500 files in ../shared/data when present, else synthetic random walks), then:
- times ``draw_job`` for every kind (Redis read + assembly + drawing + encoding) and the
  pure drawing functions on the same arrays;
- times ``mpf.plot`` defaults (type="candle", volume=True, mav=(20, 50); type="line")
  on the same data, saved to PNG at the same pixel size, in the same run;
- times the same drawing over VARIED different symbols in turn: the drawing keeps a
  prepared figure, text shaping, glyph bitmaps and date ticks between charts, and one
  chart drawn again and again would flatter those caches;
- renders line and candlestick charts of those symbols in turn many times and reports
  RSS and tracemalloc growth.

Run: .venv/bin/python -m bench.bench_charts
"""

from __future__ import annotations

import gc
import io
import logging
import os
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from bench.common import private_redis, synthetic_bars
from stocks import storage
from stocks.config import Settings
from stocks.keys import STOCKS_DB

ROOT = Path(__file__).resolve().parents[1]
SP500_DIR = ROOT.parent / "shared" / "data" / "sp500_daily"
WIDTH, HEIGHT, DPI = 1200, 700, 100
RUNS = int(os.environ.get("BENCH_CHARTS_RUNS", "30"))
MPF_RUNS = int(os.environ.get("BENCH_CHARTS_MPF_RUNS", "8"))
MEMORY_RENDERS = int(os.environ.get("BENCH_CHARTS_MEMORY_RENDERS", "1000"))
COMMAND = ".venv/bin/python -m bench.bench_charts"
MAIN, PEERS = "AAPL", ["AAPL", "MSFT", "AMZN", "JPM", "XOM"]
VARIED = 20  # symbols drawn in turn for the "varied" rows and the memory check


# --- data ------------------------------------------------------------------------------


def _csv_bars(path: Path) -> np.ndarray:
    import pandas as pd

    df = pd.read_csv(path)
    dates = np.array(df["date"].tolist(), dtype="datetime64[D]")
    cols = [df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")]
    return storage.make_bars(dates, *cols)


def load(r) -> str:
    """Fill DB 0; returns a description of the data used."""
    if SP500_DIR.is_dir():
        files = sorted(SP500_DIR.glob("*.csv"))
        for path in files:
            storage.replace_series(r, path.stem, _csv_bars(path), {"source": "bench"})
        return f"real S&P 500 daily bars, {len(files)} tickers, 2013-02-08 .. 2018-02-07"
    for i, sym in enumerate([*PEERS, *(f"SYN{i}" for i in range(45))]):
        storage.replace_series(r, sym, synthetic_bars(i), {"source": "bench"})
    return "synthetic random walks, 50 tickers x 1,259 business days (../shared/data absent)"


# --- timing ----------------------------------------------------------------------------


def timed(fn, runs: int) -> tuple[float, float, float]:
    """(median ms, p90 ms, median CPU ms) over ``runs`` calls after one warm-up call.

    CPU time (this process only) is reported beside wall time because the bench box is
    shared: other processes inflate wall time but not our own CPU time as much.
    """
    fn()
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    times.sort()
    p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
    return statistics.median(times), p90, statistics.median(cpu)


def mpf_frame(bars: np.ndarray):
    import pandas as pd

    index = pd.DatetimeIndex(bars["date"].astype("datetime64[D]").astype("datetime64[ns]"))
    return pd.DataFrame(
        {
            "Open": bars["open"],
            "High": bars["high"],
            "Low": bars["low"],
            "Close": bars["close"],
            "Volume": storage.volumes_as_float(bars),
        },
        index=index,
    )


def mpf_render(df, **kwargs) -> bytes:
    import mplfinance as mpf

    buf = io.BytesIO()
    mpf.plot(
        df,
        figsize=(WIDTH / DPI, HEIGHT / DPI),
        savefig={"fname": buf, "dpi": DPI, "format": "png"},
        warn_too_much_data=len(df) + 1,  # silences a warning only; same picture
        **kwargs,
    )
    return buf.getvalue()


def bare_matplotlib_line(days: np.ndarray, close: np.ndarray) -> bytes:
    """The floor: a bare Figure, one plot() call, savefig PNG; no title, labels or dates."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.add_subplot().plot(days, close)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --- the bench -------------------------------------------------------------------------


def run() -> str:
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    from stocks.worker import chart_data, charts

    with private_redis(appendonly=False) as server:
        r = Settings(redis_url=server.url).redis(STOCKS_DB)
        t0 = time.perf_counter()
        data = load(r)
        load_s = time.perf_counter() - t0
        bars = storage.read_bars(r, MAIN)
        days, o, h, lo, c = (bars[k] for k in ("date", "open", "high", "low", "close"))
        vol = storage.volumes_as_float(bars)
        mas = [(f"MA {w}", chart_data.moving_average(c, w)) for w in (20, 50)]
        opts = {"width": WIDTH, "height": HEIGHT, "format": "png"}
        candle_opts = {**opts, "volume": True, "moving_averages": [20, 50]}

        t0 = time.perf_counter()
        chart_data.draw_job(r, "benchmark", {"symbols": [MAIN], "options": opts})
        benchmark_cold_ms = (time.perf_counter() - t0) * 1000

        df = mpf_frame(bars)
        mpf_candle = timed(
            lambda: mpf_render(df, type="candle", volume=True, mav=(20, 50)), MPF_RUNS
        )
        mpf_line = timed(lambda: mpf_render(df, type="line"), MPF_RUNS)
        bare_line = timed(lambda: bare_matplotlib_line(days, c), RUNS)

        def job(kind: str, symbols: list[str], options: dict):
            return lambda: chart_data.draw_job(r, kind, {"symbols": symbols, "options": options})

        candle_draw = timed(
            lambda: charts.candlestick_chart(
                days, o, h, lo, c, vol, mas, title=MAIN, width=WIDTH, height=HEIGHT
            ),
            RUNS,
        )
        line_draw = timed(
            lambda: charts.line_chart([(MAIN, days, c)], title=MAIN, width=WIDTH, height=HEIGHT),
            RUNS,
        )
        varied = [chart_inputs(r, sym) for sym in sorted(storage.list_symbols(r))[::7][:VARIED]]
        candle_varied = timed(in_turn(varied, draw_candle), RUNS)
        line_varied = timed(in_turn(varied, draw_line), RUNS)
        svg_opts = {**candle_opts, "format": "svg"}
        candle_peer = (mpf_candle, "mpf candle, volume, mav=(20,50)")
        rows = [
            ("candlestick + volume + MA 20/50, draw only", candle_draw, *candle_peer),
            (
                "candlestick job (draw_job, Redis read incl.)",
                timed(job("candlestick", [MAIN], candle_opts), RUNS),
                *candle_peer,
            ),
            (
                f"candlestick + volume + MA 20/50, draw only, {len(varied)} symbols in turn",
                candle_varied,
                *candle_peer,
            ),
            ("line 1 symbol, draw only", line_draw, mpf_line, "mpf line"),
            ("line 1 symbol, draw only", line_draw, bare_line, "bare Figure+plot+savefig"),
            (
                f"line 1 symbol, draw only, {len(varied)} symbols in turn",
                line_varied,
                mpf_line,
                "mpf line",
            ),
            (
                "line job, 1 symbol",
                timed(job("line", [MAIN], opts), RUNS),
                mpf_line,
                "mpf line",
            ),
            ("line job, 5 symbols", timed(job("line", PEERS, opts), RUNS), None, ""),
            ("compare job, 5 symbols", timed(job("compare", PEERS, opts), RUNS), None, ""),
            (
                "benchmark job (index cached)",
                timed(job("benchmark", [MAIN], opts), RUNS),
                None,
                "",
            ),
            (
                "candlestick job, SVG",
                timed(job("candlestick", [MAIN], svg_opts), max(5, RUNS // 3)),
                None,
                "",
            ),
        ]
        label, _, _ = chart_data.benchmark_reference(r, MAIN)
        memory = memory_check(varied)

    lines = [
        "## Charts: render time per kind vs mplfinance",
        "",
        f"Data: {data} (loaded into a private redis-server in {load_s:.1f} s). "
        f"Chart: {MAIN}, {len(bars):,} daily bars, {WIDTH}x{HEIGHT} px PNG at {DPI} dpi. "
        f"Ours: median of {RUNS} runs after a warm-up; mplfinance: median of {MPF_RUNS} runs, "
        "same arrays, same pixel size, same process.",
        "",
        "| What | median ms | p90 ms | CPU ms | peer | peer median ms "
        "| peer CPU ms | speed-up (wall / CPU) |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, (med, p90, cpu), peer, peer_name in rows:
        if peer is None:
            lines.append(f"| {name} | {med:.1f} | {p90:.1f} | {cpu:.1f} | | | | |")
        else:
            lines.append(
                f"| {name} | {med:.1f} | {p90:.1f} | {cpu:.1f} | {peer_name} | {peer[0]:.1f} "
                f"| {peer[2]:.1f} | {peer[0] / med:.1f}x / {peer[2] / cpu:.1f}x |"
            )
    lines += [
        "",
        f"Benchmark reference: {label}; first benchmark job (builds the index from every "
        f"loaded series) took {benchmark_cold_ms:.0f} ms, later ones reuse it while no "
        "data version changes.",
        "",
        memory,
        "",
        "Targets (issue 12): candlestick with volume and two MAs <= 50 ms median, line "
        "<= 30 ms (from 86 ms and 51 ms on the same box), the same picture; memory flat "
        "over 1,000 renders. Wall-clock figures on a shared 2-core box.",
        "",
        f"Command: `{COMMAND}` (env BENCH_CHARTS_RUNS, BENCH_CHARTS_MPF_RUNS, "
        "BENCH_CHARTS_MEMORY_RENDERS)",
    ]
    return "\n".join(lines) + "\n"


def chart_inputs(r, symbol: str) -> tuple:
    """(symbol, days, open, high, low, close, volume, moving averages) for draw_*."""
    from stocks.worker import chart_data

    bars = storage.read_bars(r, symbol)
    close = bars["close"]
    mas = [(f"MA {w}", chart_data.moving_average(close, w)) for w in (20, 50)]
    ohlc = (bars[k] for k in ("date", "open", "high", "low", "close"))
    return (symbol, *ohlc, storage.volumes_as_float(bars), mas)


def draw_candle(inputs: tuple) -> bytes:
    from stocks.worker import charts

    symbol, days, o, h, lo, c, vol, mas = inputs
    return charts.candlestick_chart(
        days, o, h, lo, c, vol, mas, title=symbol, width=WIDTH, height=HEIGHT
    )


def draw_line(inputs: tuple) -> bytes:
    from stocks.worker import charts

    symbol, days, _, _, _, close, _, _ = inputs
    return charts.line_chart([(symbol, days, close)], title=symbol, width=WIDTH, height=HEIGHT)


def in_turn(items: list, draw):
    """A no-argument function drawing the next item at each call, round and round."""
    state = {"i": 0}

    def step():
        state["i"] += 1
        return draw(items[state["i"] % len(items)])

    return step


def memory_check(varied: list) -> str:
    """RSS over MEMORY_RENDERS renders (line and candlestick of varied symbols in turn),
    then tracemalloc over a tenth of that."""
    lines, candles = in_turn(varied, draw_line), in_turn(varied, draw_candle)
    count = {"n": 0}

    def render() -> None:
        count["n"] += 1
        (lines if count["n"] % 2 else candles)()

    for _ in range(20):
        render()
    gc.collect()
    rss0 = rss_kib()
    half = None
    t0 = time.perf_counter()
    for i in range(MEMORY_RENDERS):
        render()
        if i == MEMORY_RENDERS // 2:
            gc.collect()
            half = rss_kib()
    gc.collect()
    rss1 = rss_kib()
    elapsed = time.perf_counter() - t0

    traced = max(50, MEMORY_RENDERS // 10)
    tracemalloc.start()
    for _ in range(10):
        render()
    gc.collect()
    snap0 = tracemalloc.get_traced_memory()[0]
    for _ in range(traced):
        render()
    gc.collect()
    snap1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (
        f"Memory: {MEMORY_RENDERS:,} renders, line and candlestick of {len(varied)} symbols "
        f"in turn ({elapsed:.0f} s): RSS {rss0 / 1024:.1f} MiB "
        f"before, {half / 1024:.1f} MiB halfway, {rss1 / 1024:.1f} MiB after "
        f"(+{(rss1 - rss0) / 1024:.2f} MiB total, +{(rss1 - half) / 1024:.2f} MiB over the "
        f"second half). tracemalloc over {traced} more renders: "
        f"{(snap1 - snap0) / 1024:+.1f} KiB still allocated."
    )


if __name__ == "__main__":
    print(run())
