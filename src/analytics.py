"""Analytics on price bars: statistics, period changes, indicators and comparisons.

Pure computations on ``stocks.storage`` bar arrays (numpy, TA-Lib): no Flask, no Redis,
so the formulas are tested directly and the routes stay thin.

Conventions, shared by every function here:
- A bar without a close (NaN) is not an observation: close-based measures skip it.
  Missing open/high/low/volume cells are ignored where they are aggregated.
- Daily returns are simple close-to-close returns between consecutive stored bars.
- ``annualized_volatility`` = sample std (ddof 1) of daily returns × √252.
- ``annualized_return`` is calendar based: (1 + return) ** (365.25 / days) − 1, where
  ``days`` is the number of calendar days between the first and last bar used. Calendar
  days keep it honest across gaps in the data (a missing week is still a week).
- Indicators are computed over the whole history given and cut afterwards by the caller,
  so a value never depends on the range asked for; NaN where the window is not full.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import talib

from stocks.storage import from_day, to_day, volumes_as_float

TRADING_DAYS_PER_YEAR = 252
DAYS_PER_YEAR = 365.25

# Calendar offsets: (days, months) back from the end date.
PERIODS: dict[str, tuple[int, int]] = {
    "1d": (1, 0),
    "5d": (5, 0),
    "1wk": (7, 0),
    "1mo": (0, 1),
    "3mo": (0, 3),
    "6mo": (0, 6),
    "1y": (0, 12),
    "5y": (0, 60),
}


class AnalyticsError(ValueError):
    """The data cannot answer the question (empty range, too few common dates, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# --- helpers ---------------------------------------------------------------------------


def with_close(bars: np.ndarray) -> np.ndarray:
    """Bars that have a close; a bar without one is no observation."""
    closes = bars["close"]
    ok = np.isfinite(closes)
    return bars if ok.all() else bars[ok]


def finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def months_back(day: dt.date, months: int) -> dt.date:
    """``day`` minus ``months`` calendar months, the day clamped (Mar 31 − 1mo = Feb 28/29)."""
    total = day.year * 12 + (day.month - 1) - months
    year, month = divmod(total, 12)
    month += 1
    last = calendar.monthrange(year, month)[1]
    return dt.date(year, month, min(day.day, last))


def period_start(end: dt.date, period: str) -> dt.date:
    """``end`` minus the period in calendar arithmetic (1d = one calendar day).

    Before year 1 there is nothing to find, so an underflow gives ``date.min``.
    """
    days, months = PERIODS[period]
    try:
        return months_back(end, months) - dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return dt.date.min


def last_on_or_before(dates: np.ndarray, day: dt.date) -> int | None:
    """Index of the last date <= day in sorted ``dates`` (day numbers), or None."""
    pos = int(np.searchsorted(dates, to_day(day), side="right")) - 1
    return pos if pos >= 0 else None


def daily_returns(closes: np.ndarray) -> np.ndarray:
    return closes[1:] / closes[:-1] - 1.0


def annualized_volatility(returns: np.ndarray) -> float | None:
    if len(returns) < 2:
        return None
    return finite_or_none(np.std(returns, ddof=1) * math.sqrt(TRADING_DAYS_PER_YEAR))


def annualized_return(total_return: float, calendar_days: int) -> float | None:
    """(1 + return) ** (365.25 / days) − 1; None for a single day or an overflow."""
    if calendar_days <= 0:
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        value = np.power(np.float64(1.0 + total_return), DAYS_PER_YEAR / calendar_days) - 1.0
    return finite_or_none(value)


def max_drawdown(closes: np.ndarray) -> float:
    """min over t of close_t / max(close_<=t) − 1 (0 when prices never fall)."""
    return float(np.min(closes / np.maximum.accumulate(closes)) - 1.0)


def nan_max(values: np.ndarray) -> float | None:
    ok = values[np.isfinite(values)]
    return float(ok.max()) if len(ok) else None


def nan_min(values: np.ndarray) -> float | None:
    ok = values[np.isfinite(values)]
    return float(ok.min()) if len(ok) else None


def nan_mean(values: np.ndarray) -> float | None:
    ok = values[np.isfinite(values)]
    return float(ok.mean()) if len(ok) else None


# --- statistics ------------------------------------------------------------------------


def stats(bars: np.ndarray) -> dict:
    """Summary statistics of the bars given (already cut to the range asked for)."""
    bars = with_close(bars)
    if len(bars) == 0:
        raise AnalyticsError("empty_range", "no trading days with a close in the range")
    closes = bars["close"]
    first, last = float(closes[0]), float(closes[-1])
    total = last / first - 1.0
    days = int(bars["date"][-1]) - int(bars["date"][0])
    return {
        "start": from_day(bars["date"][0]).isoformat(),
        "end": from_day(bars["date"][-1]).isoformat(),
        "first_close": first,
        "last_close": last,
        "return": total,
        "annualized_return": annualized_return(total, days),
        "annualized_volatility": annualized_volatility(daily_returns(closes)),
        "max_drawdown": max_drawdown(closes),
        "high": nan_max(bars["high"]),
        "low": nan_min(bars["low"]),
        "average_volume": nan_mean(volumes_as_float(bars)),
        "trading_days": len(bars),
    }


def stats_range_for_period(bars: np.ndarray, period: str, end: dt.date) -> tuple[dt.date, dt.date]:
    """[start, end] for ``period``: start is the last trading day on or before
    ``within_data(end)`` − period.

    Starting there makes ``stats(period=P).return`` equal ``change(period=P)``; a history
    shorter than the period starts at its first day.
    """
    bars = with_close(bars)
    if len(bars) == 0:
        raise AnalyticsError("empty_range", "the series has no closes")
    idx = last_on_or_before(bars["date"], period_start(within_data(bars["date"], end), period))
    start = from_day(bars["date"][0 if idx is None else idx])
    return start, end


def within_data(dates: np.ndarray, end: dt.date) -> dt.date:
    """``end``, or the last trading day when ``end`` is after it.

    A period ending after the data would compare the last close with itself (a made-up
    0 %, or a 5-year change of a series not 5 years old); it is measured back from the
    last close instead, and ``to_date`` says which day that is. Weekends and holidays
    inside the data keep the calendar rule.
    """
    last = from_day(dates[-1])
    return min(end, last)


# --- change over a period --------------------------------------------------------------


def change_indices(
    dates: np.ndarray, bounds: np.ndarray, end: dt.date, period: str
) -> tuple[np.ndarray, np.ndarray]:
    """The rule of ``change`` for many series at once: (from, to) row indices per series.

    ``dates`` holds series one after the other (each sorted, bars with a close only),
    ``bounds[i]:bounds[i + 1]`` being series i. ``to`` is its last row on or before
    ``end``, ``from`` its last row on or before ``end − period`` (calendar arithmetic,
    ``period_start``); -1 where there is none.
    """
    n = len(bounds) - 1
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(bounds))
    # One sorted key for all series: (series, date); dates fit easily in 32 bits.
    keys = (owner << 32) + dates.astype(np.int64)
    base = np.arange(n, dtype=np.int64) << 32
    starts = bounds[:-1]

    def last_upto(day: dt.date) -> np.ndarray:
        pos = np.searchsorted(keys, base + to_day(day), side="right") - 1
        return np.where(pos >= starts, pos, -1)

    return last_upto(period_start(end, period)), last_upto(end)


def change_columns(
    closes: np.ndarray, from_idx: np.ndarray, to_idx: np.ndarray
) -> dict[str, np.ndarray]:
    """from_close, to_close, change and change_pct (percent) for index pairs."""
    from_close, to_close = closes[from_idx], closes[to_idx]
    return {
        "from_close": from_close,
        "to_close": to_close,
        "change": to_close - from_close,
        "change_pct": (to_close / from_close - 1.0) * 100.0,
    }


def change(bars: np.ndarray, period: str, end: dt.date | None = None) -> dict:
    """Close on the last trading day <= end against the last trading day <= end − period
    (``end`` after the data: the last trading day, see ``within_data``)."""
    bars = with_close(bars)
    if len(bars) == 0:
        raise AnalyticsError("no_data", "the series has no closes")
    dates = bars["date"]
    end = from_day(dates[-1]) if end is None else within_data(dates, end)
    (from_idx,), (to_idx,) = change_indices(dates, np.array([0, len(dates)]), end, period)
    if to_idx < 0:
        raise AnalyticsError(
            "no_data_before",
            f"no trading day on or before {end.isoformat()} (data starts "
            f"{from_day(dates[0]).isoformat()})",
        )
    if from_idx < 0:
        target = period_start(end, period)
        raise AnalyticsError(
            "no_data_before",
            f"no trading day on or before {target.isoformat()} ({end.isoformat()} − {period}); "
            f"data starts {from_day(dates[0]).isoformat()}",
        )
    figures = change_columns(bars["close"], np.array([from_idx]), np.array([to_idx]))
    return {
        "period": period,
        "from_date": from_day(dates[from_idx]).isoformat(),
        "from_close": float(figures["from_close"][0]),
        "to_date": from_day(dates[to_idx]).isoformat(),
        "to_close": float(figures["to_close"][0]),
        "change": float(figures["change"][0]),
        "change_pct": float(figures["change_pct"][0]),
    }


# --- indicators ------------------------------------------------------------------------


@dataclass(frozen=True)
class Indicator:
    """An indicator: its parameters with defaults, its output columns, and the computation."""

    name: str
    defaults: Mapping[str, float]
    columns: tuple[str, ...]
    description: str

    def lookback(self, params: Mapping[str, float]) -> int:
        """Rows needed before the first value: the series must be at least this long."""
        if self.name == "macd":
            return int(params["slow"])
        return int(params["window"])


def _sma(closes: np.ndarray, p: Mapping[str, float]) -> dict[str, np.ndarray]:
    return {"value": talib.SMA(closes, timeperiod=int(p["window"]))}


def _ema(closes: np.ndarray, p: Mapping[str, float]) -> dict[str, np.ndarray]:
    return {"value": talib.EMA(closes, timeperiod=int(p["window"]))}


def _rsi(closes: np.ndarray, p: Mapping[str, float]) -> dict[str, np.ndarray]:
    return {"value": talib.RSI(closes, timeperiod=int(p["window"]))}


def _macd(closes: np.ndarray, p: Mapping[str, float]) -> dict[str, np.ndarray]:
    """MACD from two SMA-seeded EMAs, signal an SMA-seeded EMA of MACD.

    Not ``talib.MACD``: TA-Lib seeds its fast EMA at the slow EMA's start, so its values
    differ from the definition (EMA seeded with the SMA of the first n closes).
    """
    fast, slow, signal = int(p["fast"]), int(p["slow"]), int(p["signal"])
    macd = talib.EMA(closes, timeperiod=fast) - talib.EMA(closes, timeperiod=slow)
    sig = np.full(len(closes), np.nan)
    first = slow - 1
    if len(closes) - first >= signal:
        sig[first:] = talib.EMA(np.ascontiguousarray(macd[first:]), timeperiod=signal)
    return {"macd": macd, "signal": sig, "histogram": macd - sig}


def _bollinger(closes: np.ndarray, p: Mapping[str, float]) -> dict[str, np.ndarray]:
    window, k = int(p["window"]), float(p["k"])
    upper, middle, lower = talib.BBANDS(closes, timeperiod=window, nbdevup=k, nbdevdn=k, matype=0)
    return {"upper": upper, "middle": middle, "lower": lower}


_COMPUTE = {"sma": _sma, "ema": _ema, "rsi": _rsi, "macd": _macd, "bollinger": _bollinger}

INDICATORS: dict[str, Indicator] = {
    "sma": Indicator("sma", {"window": 20}, ("value",), "simple moving average of closes"),
    "ema": Indicator(
        "ema",
        {"window": 20},
        ("value",),
        "exponential moving average, alpha = 2/(n+1), seeded with the SMA of the first n closes",
    ),
    "rsi": Indicator(
        "rsi", {"window": 14}, ("value",), "relative strength index, Wilder smoothing"
    ),
    "macd": Indicator(
        "macd",
        {"fast": 12, "slow": 26, "signal": 9},
        ("macd", "signal", "histogram"),
        "EMA(fast) − EMA(slow); signal = EMA(signal) of MACD; histogram = MACD − signal",
    ),
    "bollinger": Indicator(
        "bollinger",
        {"window": 20, "k": 2.0},
        ("upper", "middle", "lower"),
        "SMA(window) ± k × population std of the same window",
    ),
}


def indicator_params(name: str, given: Mapping[str, float | None]) -> dict[str, float]:
    """The indicator's parameters: given values over defaults, unknown keys dropped."""
    spec = INDICATORS[name]
    out = {}
    for key, default in spec.defaults.items():
        value = given.get(key)
        out[key] = type(default)(value) if value is not None else default
    return out


def compute_indicator(
    name: str, closes: np.ndarray, params: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """Columns of the indicator over the whole ``closes`` (float64, NaN = not yet defined)."""
    closes = np.ascontiguousarray(closes, dtype=np.float64)
    return _COMPUTE[name](closes, params)


# --- comparison ------------------------------------------------------------------------


def common_closes(series: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(dates shared by every series, closes matrix symbols × dates) over bars with a close."""
    cleaned = [with_close(bars) for bars in series.values()]
    if not cleaned:
        return np.empty(0, dtype=np.int32), np.empty((0, 0))
    dates = cleaned[0]["date"]
    for bars in cleaned[1:]:
        if not np.array_equal(dates, bars["date"]):  # the usual case needs no set work
            dates = np.intersect1d(dates, bars["date"], assume_unique=True)
    rows = []
    for bars in cleaned:
        if len(bars) == len(dates):
            rows.append(bars["close"])
        else:
            rows.append(bars["close"][np.searchsorted(bars["date"], dates)])
    return dates, np.vstack(rows)


def compare(series: Mapping[str, np.ndarray], symbols: Sequence[str] | None = None) -> dict:
    """Returns, volatility and correlation of daily returns on the dates all series share.

    Everything is measured on the common dates only, so the figures are comparable:
    return = last/first − 1, volatility as in ``stats``, Pearson correlation of the daily
    simple returns between consecutive common dates.
    """
    symbols = list(symbols or series.keys())
    dates, closes = common_closes({s: series[s] for s in symbols})
    if len(dates) < 3:
        raise AnalyticsError(
            "too_few_common_dates",
            f"the symbols share {len(dates)} trading day(s) in the range; at least 3 are needed",
        )
    rets = closes[:, 1:] / closes[:, :-1] - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(rets)
    corr = np.atleast_2d(corr)
    return {
        "start": from_day(dates[0]).isoformat(),
        "end": from_day(dates[-1]).isoformat(),
        "trading_days": len(dates),
        "returns": {s: float(closes[i, -1] / closes[i, 0] - 1.0) for i, s in enumerate(symbols)},
        "volatility": {s: annualized_volatility(rets[i]) for i, s in enumerate(symbols)},
        "correlation": {
            a: {b: finite_or_none(corr[i, j]) for j, b in enumerate(symbols)}
            for i, a in enumerate(symbols)
        },
    }
