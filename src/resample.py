"""Daily bars to weekly, monthly, quarterly or yearly bars, in numpy only.

A bar covers the trading days of one ISO week (Monday..Sunday, ``1wk``), one calendar
month (``1mo``), one calendar quarter (``3mo``: Jan-Mar, Apr-Jun, Jul-Sep, Oct-Dec) or
one calendar year (``1y``), and is labelled with the date of its first trading day.
Per column, like pandas' ``resample().agg(first/max/min/last/sum)``, missing cells are
skipped:
    open = first open present, high = max high, low = min low,
    close = last close present, adj_close = last adj_close present,
    volume = sum of the volumes present.
A column with no value at all in a period stays missing (NaN, or -1 for volume).
"""

from __future__ import annotations

import numpy as np

from stocks.storage import BAR_DTYPE, MISSING_VOLUME, VOLUME_MAX

INTERVALS = ("1d", "1wk", "1mo", "3mo", "1y")


def period_keys(days: np.ndarray, interval: str) -> np.ndarray:
    """A number per bar that is equal exactly within one period and grows with time."""
    days = days.astype(np.int64)
    if interval == "1wk":
        # 1970-01-01 was a Thursday, so day -3 is a Monday: weeks start on Mondays.
        return (days + 3) // 7
    if interval in ("1mo", "3mo"):
        months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
        # Month 0 is January 1970, so whole quarters start at multiples of 3.
        return months if interval == "1mo" else months // 3
    if interval == "1y":
        return days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64)
    raise ValueError(f"unknown interval {interval!r}")


def _first_present(col: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    n = len(col)
    idx = np.where(np.isnan(col), n, np.arange(n))
    first = np.minimum.reduceat(idx, starts)
    ok = first < ends
    return np.where(ok, col[np.minimum(first, n - 1)], np.nan)


def _last_present(col: np.ndarray, starts: np.ndarray) -> np.ndarray:
    idx = np.where(np.isnan(col), -1, np.arange(len(col)))
    last = np.maximum.reduceat(idx, starts)
    ok = last >= starts
    return np.where(ok, col[np.maximum(last, 0)], np.nan)


def resample(bars: np.ndarray, interval: str) -> np.ndarray:
    """Bars (sorted by date, BAR_DTYPE) grouped by ``interval``: one of ``INTERVALS``."""
    if interval == "1d" or len(bars) == 0:
        return bars
    keys = period_keys(bars["date"], interval)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(keys)) + 1))
    ends = np.concatenate((starts[1:], [len(bars)]))

    out = np.empty(len(starts), dtype=BAR_DTYPE)
    out["date"] = bars["date"][starts]
    out["open"] = _first_present(bars["open"], starts, ends)
    out["high"] = np.fmax.reduceat(bars["high"], starts)
    out["low"] = np.fmin.reduceat(bars["low"], starts)
    out["close"] = _last_present(bars["close"], starts)
    out["adj_close"] = _last_present(bars["adj_close"], starts)

    vol = bars["volume"]
    present = vol != MISSING_VOLUME
    # clipped to VOLUME_MAX (what a write may store): a period's sum then stays far inside
    # int64 whatever an older or hand-made store holds, instead of wrapping negative
    sums = np.add.reduceat(np.where(present, np.clip(vol, 0, VOLUME_MAX), 0), starts)
    any_present = np.logical_or.reduceat(present, starts)
    out["volume"] = np.where(any_present, sums, MISSING_VOLUME)
    return out
