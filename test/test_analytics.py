"""stocks.analytics against independent references: plain numpy loops on the raw numbers.

The references below share nothing with the implementation (no TA-Lib, no helpers from
stocks.analytics), so a wrong formula on either side shows up as a mismatch. They run
on generated series (plain, with gaps, with empty cells) and on real tickers read from
../shared/data straight from the CSV text.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from functools import partial

import numpy as np
import pandas as pd
import pytest
import talib
from conftest import SP500_DIR, business_days, needs_shared, random_bars

from stocks import analytics as calc
from stocks import storage

REAL_TICKERS = ["AAPL", "MSFT", "DHR", "O", "GOOG", "LNT"]
RTOL = 1e-9


# --- data ------------------------------------------------------------------------------


DAYS = business_days("2013-01-01", "2018-12-31")[:1300]  # the data starts 2013-01-01
walk = partial(random_bars, DAYS, start_price=50, drift=0.0003, step=0.015, spread=0.02)


def with_empty_cells(seed: int) -> np.ndarray:
    """Blank cells in every column but close, and the highest day loses its high."""
    bars = walk(seed, empty=0.02, empty_columns=("open", "high", "low", "volume"))
    bars["high"][int(np.argmax(bars["close"]))] = np.nan
    return bars


def read_csv_bars(symbol: str) -> np.ndarray:
    """A real ticker straight from its CSV: empty cells become missing."""
    dates, cols = [], {k: [] for k in ("open", "high", "low", "close", "volume")}
    with open(SP500_DIR / f"{symbol}.csv", newline="") as f:
        for row in csv.DictReader(f):
            dates.append(dt.date.fromisoformat(row["date"]))
            for k in cols:
                cols[k].append(float(row[k]) if row[k] != "" else math.nan)
    return storage.make_bars(
        dates, cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"]
    )


GENERATED = {
    "plain": lambda: walk(1),
    "gaps": lambda: walk(2, gaps=0.05),
    "empty_cells": lambda: with_empty_cells(3),
}


def all_series():
    cases = [pytest.param(make, id=name) for name, make in GENERATED.items()]
    for sym in REAL_TICKERS:
        cases.append(pytest.param(lambda s=sym: read_csv_bars(s), id=sym, marks=needs_shared))
    return cases


# --- independent references ------------------------------------------------------------


def dates_of(bars) -> list[dt.date]:
    return [dt.date(1970, 1, 1) + dt.timedelta(days=int(d)) for d in bars["date"]]


def ref_std(xs: list[float]) -> float:
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def ref_stats(bars) -> dict:
    closes = [float(c) for c in bars["close"]]
    days = dates_of(bars)
    rets = [closes[i] / closes[i - 1] - 1 for i in range(1, len(closes))]
    peak, mdd = -math.inf, 0.0
    for c in closes:
        peak = max(peak, c)
        mdd = min(mdd, c / peak - 1)
    total = closes[-1] / closes[0] - 1
    span = (days[-1] - days[0]).days
    highs = [float(h) for h in bars["high"] if not math.isnan(h)]
    lows = [float(v) for v in bars["low"] if not math.isnan(v)]
    vols = [int(v) for v in bars["volume"] if v >= 0]
    return {
        "start": days[0].isoformat(),
        "end": days[-1].isoformat(),
        "first_close": closes[0],
        "last_close": closes[-1],
        "return": total,
        "annualized_return": (1 + total) ** (365.25 / span) - 1 if span else None,
        "annualized_volatility": ref_std(rets) * math.sqrt(252) if len(rets) > 1 else None,
        "max_drawdown": mdd,
        "high": max(highs) if highs else None,
        "low": min(lows) if lows else None,
        "average_volume": sum(vols) / len(vols) if vols else None,
        "trading_days": len(closes),
    }


def ref_sma(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for i in range(n - 1, len(x)):
        out[i] = sum(x[i - n + 1 : i + 1]) / n
    return out


def ref_ema(x: np.ndarray, n: int) -> np.ndarray:
    """alpha = 2/(n+1), seeded with the SMA of the first n values."""
    out = np.full(len(x), np.nan)
    if len(x) < n:
        return out
    alpha = 2 / (n + 1)
    out[n - 1] = sum(x[:n]) / n
    for i in range(n, len(x)):
        out[i] = alpha * x[i] + (1 - alpha) * out[i - 1]
    return out


def ref_rsi(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder: first averages are simple means of n changes, then (prev·(n−1) + now)/n."""
    out = np.full(len(x), np.nan)
    changes = [x[i] - x[i - 1] for i in range(1, len(x))]
    gains = [max(c, 0.0) for c in changes]
    losses = [max(-c, 0.0) for c in changes]
    avg_gain, avg_loss = sum(gains[:n]) / n, sum(losses[:n]) / n
    for i in range(n, len(x)):
        if i > n:
            avg_gain = (avg_gain * (n - 1) + gains[i - 1]) / n
            avg_loss = (avg_loss * (n - 1) + losses[i - 1]) / n
        out[i] = 100.0 if avg_loss == 0 else 100 - 100 / (1 + avg_gain / avg_loss)
    return out


def ref_macd(x: np.ndarray, fast: int, slow: int, signal: int) -> dict[str, np.ndarray]:
    macd = ref_ema(x, fast) - ref_ema(x, slow)
    sig = np.full(len(x), np.nan)
    sig[slow - 1 :] = ref_ema(macd[slow - 1 :], signal)
    return {"macd": macd, "signal": sig, "histogram": macd - sig}


def ref_bollinger(x: np.ndarray, n: int, k: float) -> dict[str, np.ndarray]:
    mid = ref_sma(x, n)
    std = np.full(len(x), np.nan)
    for i in range(n - 1, len(x)):
        w = x[i - n + 1 : i + 1]
        m = sum(w) / n
        std[i] = math.sqrt(sum((v - m) ** 2 for v in w) / n)
    return {"upper": mid + k * std, "middle": mid, "lower": mid - k * std}


def ref_change(bars, period: str, end: dt.date) -> dict:
    """Linear scans over Python dates; the calendar offset comes from pandas' DateOffset."""
    days = dates_of(bars)
    closes = [float(c) for c in bars["close"]]
    n = {"1d": 1, "5d": 5, "1wk": 7}.get(period)
    if n is not None:
        target = end - dt.timedelta(days=n)
    else:
        months = {"1mo": 1, "3mo": 3, "6mo": 6, "1y": 12, "5y": 60}[period]
        target = (pd.Timestamp(end) - pd.DateOffset(months=months)).date()
    to_i = max(i for i, d in enumerate(days) if d <= end)
    from_i = max(i for i, d in enumerate(days) if d <= target)
    return {
        "from_date": days[from_i].isoformat(),
        "from_close": closes[from_i],
        "to_date": days[to_i].isoformat(),
        "to_close": closes[to_i],
        "change": closes[to_i] - closes[from_i],
        "change_pct": (closes[to_i] / closes[from_i] - 1) * 100,
    }


def ref_compare(series: dict[str, np.ndarray]) -> dict:
    by_date = {
        s: dict(zip(dates_of(b), (float(c) for c in b["close"]), strict=True))
        for s, b in series.items()
    }
    common = sorted(set.intersection(*(set(d) for d in by_date.values())))
    rets = {
        s: [d[common[i]] / d[common[i - 1]] - 1 for i in range(1, len(common))]
        for s, d in by_date.items()
    }

    def pearson(a: list[float], b: list[float]) -> float:
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
        va = sum((x - ma) ** 2 for x in a)
        vb = sum((y - mb) ** 2 for y in b)
        return cov / math.sqrt(va * vb)

    return {
        "start": common[0].isoformat(),
        "end": common[-1].isoformat(),
        "trading_days": len(common),
        "returns": {s: d[common[-1]] / d[common[0]] - 1 for s, d in by_date.items()},
        "volatility": {s: ref_std(r) * math.sqrt(252) for s, r in rets.items()},
        "correlation": {a: {b: pearson(rets[a], rets[b]) for b in rets} for a in rets},
    }


def assert_close_dict(got: dict, want: dict, rtol: float = RTOL) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=rtol, abs=1e-12), key
        elif isinstance(value, dict):
            assert_close_dict(got[key], value, rtol)
        else:
            assert got[key] == value, key


def assert_series_equal(got: np.ndarray, want: np.ndarray, rtol: float = 1e-9) -> None:
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=1e-9)


# --- calendar arithmetic ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "months", "want"),
    [
        ("2017-03-31", 1, "2017-02-28"),
        ("2016-03-31", 1, "2016-02-29"),
        ("2016-02-29", 12, "2015-02-28"),
        ("2017-01-15", 1, "2016-12-15"),
        ("2017-05-31", 3, "2017-02-28"),
        ("2018-02-07", 60, "2013-02-07"),
    ],
)
def test_months_back_clamps_the_day(day, months, want):
    assert calc.months_back(dt.date.fromisoformat(day), months) == dt.date.fromisoformat(want)


def test_period_start_before_year_one_is_date_min():
    assert calc.period_start(dt.date(1, 3, 1), "5y") == dt.date.min
    assert calc.period_start(dt.date(1, 1, 3), "5d") == dt.date.min
    with pytest.raises(calc.AnalyticsError):
        calc.change(walk(1), "5y", dt.date(1, 3, 1))


def test_period_start_matches_pandas_offsets():
    offsets = {"1mo": 1, "3mo": 3, "6mo": 6, "1y": 12, "5y": 60}
    day = dt.date(2012, 1, 1)
    while day < dt.date(2018, 1, 1):
        assert calc.period_start(day, "1d") == day - dt.timedelta(days=1)
        assert calc.period_start(day, "5d") == day - dt.timedelta(days=5)
        for period, months in offsets.items():
            want = (pd.Timestamp(day) - pd.DateOffset(months=months)).date()
            assert calc.period_start(day, period) == want, (day, period)
        day += dt.timedelta(days=3)


# --- stats -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", all_series())
def test_stats_match_reference(make):
    bars = make()
    assert_close_dict(calc.stats(bars), ref_stats(bars))
    part = bars[100:400]
    assert_close_dict(calc.stats(part), ref_stats(part))


def test_stats_ignore_missing_cells():
    bars = with_empty_cells(3)
    got = calc.stats(bars)
    assert got["high"] == np.nanmax(bars["high"])
    assert got["high"] < bars["close"].max() * 1.03  # the NaN high did not win or crash
    vols = bars["volume"][bars["volume"] >= 0]
    assert got["average_volume"] == pytest.approx(vols.mean())
    assert len(vols) < len(bars)


def test_stats_of_one_day_have_no_rates():
    got = calc.stats(walk(4)[:1])
    assert got["return"] == 0.0
    assert got["annualized_return"] is None
    assert got["annualized_volatility"] is None
    assert got["max_drawdown"] == 0.0
    assert got["trading_days"] == 1


def test_stats_of_two_days_have_no_volatility():
    got = calc.stats(walk(4)[:2])
    assert got["annualized_volatility"] is None
    assert got["annualized_return"] is not None


def test_stats_of_empty_range_is_an_error():
    with pytest.raises(calc.AnalyticsError) as err:
        calc.stats(walk(4)[:0])
    assert err.value.code == "empty_range"


def test_stats_skip_bars_without_close():
    bars = walk(5)[:50].copy()
    bars["close"][[0, 10]] = np.nan
    got = calc.stats(bars)
    assert got["trading_days"] == 48
    assert got["first_close"] == bars["close"][1]
    assert_close_dict(got, ref_stats(bars[np.isfinite(bars["close"])]))


def test_annualized_return_overflow_is_null():
    assert calc.annualized_return(1e6, 1) is None
    assert calc.annualized_return(0.1, 365) == pytest.approx(1.1 ** (365.25 / 365) - 1)


def test_drawdown_of_a_known_path():
    closes = np.array([10.0, 12.0, 9.0, 11.0, 6.0, 13.0])
    assert calc.max_drawdown(closes) == pytest.approx(6 / 12 - 1)


@pytest.mark.parametrize("make", all_series())
def test_period_stats_start_where_change_starts(make):
    bars = make()
    end = storage.from_day(bars["date"][-1])
    for period in ("1mo", "3mo", "1y"):
        start, _ = calc.stats_range_for_period(bars, period, end)
        stats = calc.stats(storage.cut(bars, start, end))
        chg = calc.change(bars, period, end)
        assert stats["start"] == chg["from_date"]
        assert stats["return"] * 100 == pytest.approx(chg["change_pct"], rel=1e-12)


# --- change ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", all_series())
def test_change_matches_reference(make):
    bars = make()
    first = storage.from_day(bars["date"][0])
    last = storage.from_day(bars["date"][-1])
    ends = [last, last - dt.timedelta(days=40), first + dt.timedelta(days=1900)]
    ends += [
        dt.date(2017, 3, 31),
        dt.date(2016, 7, 4),
        dt.date(2017, 2, 5),
    ]  # month end, holiday, Sunday
    for end in ends:
        if end > last + dt.timedelta(days=10):
            continue
        for period in calc.PERIODS:
            if calc.period_start(end, period) < first:
                continue
            got = calc.change(bars, period, end)
            want = ref_change(bars, period, end)
            assert_close_dict({k: got[k] for k in want}, want)


def test_change_defaults_to_the_last_day():
    bars = walk(6)
    got = calc.change(bars, "5d")
    assert got["to_date"] == storage.from_day(bars["date"][-1]).isoformat()


def test_change_on_a_weekend_uses_the_friday():
    bars = walk(6)
    got = calc.change(bars, "1d", dt.date(2014, 3, 9))  # Sunday: Friday vs Friday
    assert got["to_date"] == "2014-03-07"
    assert got["from_date"] == "2014-03-07"
    assert got["change"] == 0.0


def test_change_before_the_data_is_an_error():
    bars = walk(6)
    with pytest.raises(calc.AnalyticsError) as err:
        calc.change(bars, "1y", storage.from_day(bars["date"][100]))
    assert err.value.code == "no_data_before"
    assert "data starts 2013-01-01" in err.value.message
    with pytest.raises(calc.AnalyticsError):
        calc.change(bars, "1d", dt.date(2012, 6, 1))


# --- indicators ------------------------------------------------------------------------


def ref_indicator(name: str, closes: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    if name == "sma":
        return {"value": ref_sma(closes, params["window"])}
    if name == "ema":
        return {"value": ref_ema(closes, params["window"])}
    if name == "rsi":
        return {"value": ref_rsi(closes, params["window"])}
    if name == "macd":
        return ref_macd(closes, params["fast"], params["slow"], params["signal"])
    return ref_bollinger(closes, params["window"], params["k"])


INDICATOR_CASES = [
    ("sma", {}),
    ("sma", {"window": 5}),
    ("ema", {}),
    ("ema", {"window": 50}),
    ("rsi", {}),
    ("rsi", {"window": 2}),
    ("macd", {}),
    ("macd", {"fast": 5, "slow": 35, "signal": 5}),
    ("bollinger", {}),
    ("bollinger", {"window": 10, "k": 1.5}),
]


@pytest.mark.parametrize("make", all_series())
@pytest.mark.parametrize(("name", "given"), INDICATOR_CASES)
def test_indicator_matches_reference(make, name, given):
    closes = make()["close"].astype(float)
    params = calc.indicator_params(name, given)
    got = calc.compute_indicator(name, closes, params)
    want = ref_indicator(name, closes, params)
    assert list(got) == list(calc.INDICATORS[name].columns)
    for col in want:
        assert_series_equal(got[col], want[col])


def test_indicator_nulls_until_the_window_is_full():
    closes = walk(7)["close"].astype(float)
    got = calc.compute_indicator("macd", closes, calc.indicator_params("macd", {}))
    assert np.isnan(got["macd"][:25]).all() and not np.isnan(got["macd"][25])
    assert np.isnan(got["signal"][:33]).all() and not np.isnan(got["signal"][33])
    rsi = calc.compute_indicator("rsi", closes, {"window": 14})["value"]
    assert np.isnan(rsi[:14]).all() and not np.isnan(rsi[14:]).any()


def test_talib_macd_is_not_the_sma_seeded_definition():
    """Why MACD is built from talib.EMA: talib.MACD seeds its fast EMA differently."""
    closes = walk(8)["close"].astype(float)
    theirs, _, _ = talib.MACD(closes, 12, 26, 9)
    ours = calc.compute_indicator("macd", closes, calc.indicator_params("macd", {}))["macd"]
    ok = ~np.isnan(theirs)
    assert not np.allclose(theirs[ok], ours[ok], rtol=1e-12)


def test_indicator_params_defaults_and_types():
    assert calc.indicator_params("macd", {}) == {"fast": 12, "slow": 26, "signal": 9}
    assert calc.indicator_params("bollinger", {"window": 10, "k": None}) == {
        "window": 10,
        "k": 2.0,
    }


# --- compare ---------------------------------------------------------------------------


def test_compare_matches_reference_on_gappy_series():
    series = {"A": walk(1), "B": walk(2, gaps=0.05), "C": with_empty_cells(3)}
    got = calc.compare(series)
    want = ref_compare(series)
    assert_close_dict(got, want)
    assert got["trading_days"] < len(series["A"])  # B's gaps were left out for everyone


@needs_shared
def test_compare_matches_reference_on_real_tickers():
    series = {s: read_csv_bars(s) for s in ("AAPL", "GOOG", "DHR", "O", "MSFT")}
    got = calc.compare(series)
    assert_close_dict(got, ref_compare(series))
    assert got["start"] == "2014-03-27"  # GOOG's first day
    assert got["correlation"]["AAPL"]["AAPL"] == pytest.approx(1.0)


def test_compare_needs_three_common_days():
    a = walk(1)
    b = walk(2)[:2]
    with pytest.raises(calc.AnalyticsError) as err:
        calc.compare({"A": a, "B": b})
    assert err.value.code == "too_few_common_dates"


def test_compare_constant_series_has_null_correlation():
    a = walk(1)[:30]
    flat = a.copy()
    flat["close"] = 10.0
    got = calc.compare({"A": a, "FLAT": flat})
    assert got["correlation"]["A"]["FLAT"] is None
    assert got["volatility"]["FLAT"] == 0.0
