"""Chart jobs: read prices from DB 0, assemble the series each kind needs, draw them.

``draw_job(kind, params)`` is what a worker calls. It raises ``ChartDataError`` for
anything retrying cannot fix (a symbol that is not loaded, no prices in the range, no
shared dates), so the job fails at once with that message; Redis errors propagate
unchanged so the worker can retry them.

The series arithmetic (moving averages, aligning on shared dates, % change, the
equal-weight index) are pure numpy functions here so tests can check them numerically.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import redis

from stocks import storage
from stocks.chart_spec import DEFAULT_OPTIONS, SYMBOL_COUNTS
from stocks.constituents import INDEX_SYMBOL
from stocks.worker import charts

SP500_LABEL = "S&P 500 (^GSPC)"


class ChartDataError(Exception):
    """A deterministic failure (no data in range, no common dates, symbol gone).

    Retrying cannot help, so the job fails at once with this message shown to the user.
    """


# --- pure series arithmetic ------------------------------------------------------------


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing simple moving average; NaN until ``window`` values, and wherever the
    window holds a missing value (a gap is not silently averaged over)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(len(values), np.nan)
    if window < 1 or len(values) < window:
        return out
    missing = np.isnan(values)
    sums = np.concatenate(([0.0], np.cumsum(np.where(missing, 0.0, values))))
    gaps = np.concatenate(([0], np.cumsum(missing)))
    window_sum = sums[window:] - sums[:-window]
    window_gaps = gaps[window:] - gaps[:-window]
    out[window - 1 :] = np.where(window_gaps == 0, window_sum / window, np.nan)
    return out


def align_on_common_dates(
    series: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """(dates, values) pairs -> (shared dates, matrix rows=dates, cols=series).

    A date is kept only when every series has a finite value on it.
    """
    common = None
    for days, values in series:
        ok = np.asarray(days)[np.isfinite(values)]
        common = ok if common is None else np.intersect1d(common, ok, assume_unique=True)
    common = np.asarray(common if common is not None else [], dtype=np.int64)
    matrix = np.empty((len(common), len(series)))
    for j, (days, values) in enumerate(series):
        matrix[:, j] = np.asarray(values, dtype=np.float64)[np.searchsorted(days, common)]
    return common, matrix


def percent_change(values: np.ndarray) -> np.ndarray:
    """% change of each column from its first row."""
    values = np.asarray(values, dtype=np.float64)
    return (values / values[0] - 1.0) * 100.0


def equal_weight_index(
    series: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Equal-weight index over the union of dates, 1.0 on the first date.

    On each date the index moves by the mean daily return of the tickers that have a
    close that day and a previous close (return = close / previous close - 1); a date
    where no ticker has a return keeps the level. Missing closes are skipped.
    """
    days_parts, close_parts = [], []
    for days, closes in series:
        closes = np.asarray(closes, dtype=np.float64)
        ok = np.isfinite(closes) & (closes > 0)
        if ok.any():
            days_parts.append(np.asarray(days, dtype=np.int64)[ok])
            close_parts.append(closes[ok])
    if not days_parts:
        return np.empty(0, dtype=np.int64), np.empty(0)
    # All tickers end to end: one vectorised pass instead of a loop over 500 tickers.
    days = np.concatenate(days_parts)
    closes = np.concatenate(close_parts)
    has_prev = np.ones(len(days), dtype=bool)
    has_prev[np.cumsum([0] + [len(d) for d in days_parts[:-1]])] = False  # each first bar
    returns = np.zeros(len(days))
    returns[1:] = closes[1:] / closes[:-1] - 1.0
    # Dates are small ints (days), so bucket them directly: O(n), no 600k-element sort.
    first = int(days.min())
    offset = days - first
    present = np.zeros(int(offset.max()) + 1, dtype=bool)
    present[offset] = True
    grid = np.flatnonzero(present) + first
    slot = (np.cumsum(present) - 1)[offset]
    total = np.bincount(slot[has_prev], weights=returns[has_prev], minlength=len(grid))
    count = np.bincount(slot[has_prev], minlength=len(grid))
    mean = np.divide(total, count, out=np.zeros(len(grid)), where=count > 0)
    return grid, np.cumprod(1.0 + mean)


# --- reading ---------------------------------------------------------------------------


def _parse_day(raw: str | None) -> dt.date | None:
    if raw in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(raw)
    except (TypeError, ValueError) as exc:
        raise ChartDataError(f"bad date {raw!r}: expected YYYY-MM-DD") from exc


def _range_text(start: dt.date | None, end: dt.date | None) -> str:
    if start and end:
        return f"between {start} and {end}"
    if start:
        return f"from {start}"
    if end:
        return f"up to {end}"
    return "at all"


def _read(r: redis.Redis, symbol: str, start: dt.date | None, end: dt.date | None) -> np.ndarray:
    """Bars of one symbol in range, or ChartDataError when gone or empty."""
    found = storage.read_series(r, symbol, start, end)
    if found is None:
        raise ChartDataError(f"symbol {symbol} is not loaded")
    bars = found[1]
    if len(bars) == 0:
        raise ChartDataError(f"no prices for {symbol} {_range_text(start, end)}")
    return bars


def _span(days: np.ndarray) -> str:
    return f"{storage.from_day(days[0])} – {storage.from_day(days[-1])}"


def _symbols_text(symbols: list[str], limit: int = 4) -> str:
    if len(symbols) <= limit:
        return ", ".join(symbols)
    return ", ".join(symbols[:limit]) + f" (+{len(symbols) - limit} more)"


_ew_cache: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}


def _equal_weight_reference(
    r: redis.Redis, symbols: list[str]
) -> tuple[np.ndarray, np.ndarray, int]:
    """The equal-weight index of ``symbols`` over their whole history, cached by data version.

    Building it reads every loaded series, so the last result is kept per process and
    reused while no symbol's data version changed.
    """
    version_map = storage.versions(r, symbols)
    key = hashlib.sha256(
        "\n".join(f"{s}={v}" for s, v in sorted(version_map.items())).encode()
    ).hexdigest()
    hit = _ew_cache.get(key)
    if hit is not None:
        return hit
    series = [
        (bars["date"], bars["close"])
        for _, bars in storage.read_many(r, symbols).values()
        if len(bars)
    ]
    days, index = equal_weight_index(series)
    _ew_cache.clear()
    _ew_cache[key] = (days, index, len(series))
    return _ew_cache[key]


def benchmark_reference(
    r: redis.Redis, symbol: str, start: dt.date | None = None, end: dt.date | None = None
) -> tuple[str, np.ndarray, np.ndarray]:
    """(label, dates, levels) of the benchmark: ^GSPC when loaded, else an equal-weight
    index of every loaded ticker (all stored symbols except ^GSPC itself)."""
    if symbol != INDEX_SYMBOL:
        found = storage.read_series(r, INDEX_SYMBOL, start, end)
        if found is not None:
            bars = found[1]
            return SP500_LABEL, bars["date"], bars["close"]
    members = [s for s in storage.list_symbols(r) if s != INDEX_SYMBOL]
    if not members:
        raise ChartDataError("no tickers are loaded to build an equal-weight index")
    days, index, n = _equal_weight_reference(r, members)
    in_range = storage.date_slice(days, start, end)
    noun = "ticker" if n == 1 else "tickers"
    return f"Equal-weight index of {n} loaded {noun}", days[in_range], index[in_range]


# --- kinds -----------------------------------------------------------------------------


def _title(opts: dict, default: str) -> str:
    """The user's title, else ours, which says so when the prices are synthetic."""
    if opts["title"]:
        return opts["title"]
    return default + (" (synthetic data)" if opts.get("synthetic") else "")


def _line(r, symbols, start, end, opts) -> bytes:
    series = []
    for sym in symbols:
        bars = _read(r, sym, start, end)
        series.append((sym, bars["date"], bars["close"]))
    first = min(s[1][0] for s in series)
    last = max(s[1][-1] for s in series)
    title = _title(opts, f"{_symbols_text(symbols)} daily close {_span([first, last])}")
    return charts.line_chart(
        series,
        title=title,
        ylabel="Price (USD)",
        width=opts["width"],
        height=opts["height"],
        fmt=opts["format"],
    )


def _candlestick(r, symbols, start, end, opts) -> bytes:
    sym = symbols[0]
    # Moving averages use the whole history before the range, so they start filled.
    found = storage.read_series(r, sym, None, end)
    if found is None:
        raise ChartDataError(f"symbol {sym} is not loaded")
    history = found[1]
    lo = storage.date_slice(history["date"], start, None).start
    bars = history[lo:]
    if len(bars) == 0:
        raise ChartDataError(f"no prices for {sym} {_range_text(start, end)}")
    averages = []
    for window in opts["moving_averages"][:3]:
        window = int(window)
        if window < 1:
            raise ChartDataError(f"moving average window must be positive, not {window}")
        averages.append((f"MA {window}", moving_average(history["close"], window)[lo:]))
    volume = storage.volumes_as_float(bars) if opts["volume"] else None
    title = _title(opts, f"{sym} daily OHLC {_span(bars['date'])}")
    return charts.candlestick_chart(
        bars["date"],
        bars["open"],
        bars["high"],
        bars["low"],
        bars["close"],
        volume,
        averages,
        title=title,
        width=opts["width"],
        height=opts["height"],
        fmt=opts["format"],
    )


def _change_chart(labels, days, matrix, title_default, opts) -> bytes:
    changes = percent_change(matrix)
    series = [(label, days, changes[:, j]) for j, label in enumerate(labels)]
    return charts.line_chart(
        series,
        title=_title(opts, title_default),
        ylabel="Change (%)",
        width=opts["width"],
        height=opts["height"],
        fmt=opts["format"],
        zero_line=True,
    )


def _compare(r, symbols, start, end, opts) -> bytes:
    pairs = []
    for sym in symbols:
        bars = _read(r, sym, start, end)
        pairs.append((bars["date"], bars["close"]))
    days, matrix = align_on_common_dates(pairs)
    if len(days) == 0:
        raise ChartDataError(
            f"{_symbols_text(symbols)} share no trading dates {_range_text(start, end)}"
        )
    title = f"{_symbols_text(symbols)}: % change since {storage.from_day(days[0])}"
    return _change_chart(symbols, days, matrix, title, opts)


def _benchmark(r, symbols, start, end, opts) -> bytes:
    sym = symbols[0]
    bars = _read(r, sym, start, end)
    label, ref_days, ref_values = benchmark_reference(r, sym, start, end)
    days, matrix = align_on_common_dates([(bars["date"], bars["close"]), (ref_days, ref_values)])
    if len(days) == 0:
        raise ChartDataError(f"{sym} and the {label} share no dates {_range_text(start, end)}")
    title = f"{sym} vs {label}: % change since {storage.from_day(days[0])}"
    return _change_chart([sym, label], days, matrix, title, opts)


KINDS = {"line": _line, "candlestick": _candlestick, "compare": _compare, "benchmark": _benchmark}


def _options(raw: dict | None) -> dict:
    opts = dict(DEFAULT_OPTIONS)
    opts.update({k: v for k, v in (raw or {}).items() if v is not None or k == "title"})
    if opts["format"] not in charts.CONTENT_TYPES:
        raise ChartDataError(f"unknown image format {opts['format']!r}")
    opts["width"], opts["height"] = int(opts["width"]), int(opts["height"])
    if opts["width"] < 1 or opts["height"] < 1:
        raise ChartDataError("width and height must be positive")
    opts["moving_averages"] = list(opts["moving_averages"] or [])
    return opts


def draw_job(r: redis.Redis, kind: str, params: dict) -> tuple[bytes, str]:
    """Draw one chart job from the prices in ``r`` (DB 0); returns (bytes, content type)."""
    build = KINDS.get(kind)
    if build is None:
        raise ChartDataError(f"unknown chart kind {kind!r}")
    symbols = list(params.get("symbols") or [])
    low, high = SYMBOL_COUNTS[kind]
    if not low <= len(symbols) <= high:
        wanted = f"{low}" if low == high else f"{low} to {high}"
        raise ChartDataError(f"a {kind} chart takes {wanted} symbols, got {len(symbols)}")
    start, end = _parse_day(params.get("start")), _parse_day(params.get("end"))
    if start and end and start > end:
        raise ChartDataError(f"start {start} is after end {end}")
    opts = _options(params.get("options"))
    sources = {meta.get("source") for meta in storage.get_metas(r, symbols).values()}
    opts["synthetic"] = "synthetic" in sources
    image = build(r, symbols, start, end, opts)
    return image, charts.content_type(opts["format"])
