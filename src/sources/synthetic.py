"""Reproducible random-walk prices, for machines with neither the real files nor Yahoo.

Each series depends only on (seed, symbol), so one symbol comes out the same whatever
else is loaded and in whatever order. Bars look like real ones: business days, prices
with two decimals, low <= open, close <= high, positive prices, whole volumes. The
symbols are real S&P 500 members so a demo looks like the real thing, but the metadata
says ``source: synthetic`` so no one mistakes them for market data.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np

from stocks.constituents import INDEX_SYMBOL, sp500_symbols
from stocks.storage import make_bars

DEFAULT_END = dt.date(2026, 10, 30)  # fixed, so a given seed gives the same data every day
DEFAULT_YEARS = 5
MIN_PRICE = 0.01


def symbols(count: int | None) -> list[str]:
    """The first ``count`` members of the list (then SYN0001, ...); None: all plus ^GSPC."""
    members = sp500_symbols()
    if count is None:
        return [*members, INDEX_SYMBOL]
    extra = [f"SYN{i:04d}" for i in range(1, max(0, count - len(members)) + 1)]
    return (members + extra)[:count]


def business_days(start: dt.date, end: dt.date) -> np.ndarray:
    days = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
    return days[np.is_busday(days)]


def _rng(seed: int, symbol: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{symbol}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def random_walk(
    symbol: str, seed: int = 0, end: dt.date | None = None, start: dt.date | None = None
) -> np.ndarray:
    """Bars (BAR_DTYPE) of a geometric random walk over business days in [start, end].

    The walk is extendable: the per-symbol constants are drawn first, then one row of
    draws per day, so a later ``end`` (same seed and start) only adds rows and the walk
    up to the old end stays the same bytes. ``stocks load --update`` relies on it.
    """
    end = end or DEFAULT_END
    start = start or end - dt.timedelta(days=round(365.25 * DEFAULT_YEARS))
    days = business_days(start, end)
    n = len(days)
    rng = _rng(seed, symbol)
    first = rng.uniform(3000.0, 5000.0) if symbol == INDEX_SYMBOL else rng.uniform(15.0, 400.0)
    vol = rng.uniform(0.008, 0.025)
    drift = rng.normal(0.0003, 0.0004)
    typical_volume = rng.uniform(5e5, 2e7)
    step, gap, up, down, size = rng.standard_normal((n, 5)).T  # row-major: a prefix per day
    close = first * np.exp(np.cumsum(drift + vol * step))
    open_ = np.concatenate(([first], close[:-1])) * np.exp(vol / 3 * gap)
    open_ = np.round(np.maximum(open_, MIN_PRICE), 2)
    close = np.round(np.maximum(close, MIN_PRICE), 2)
    top = np.maximum(open_, close) * (1 + np.abs(vol / 2 * up))
    bottom = np.minimum(open_, close) * (1 - np.minimum(np.abs(vol / 2 * down), 0.5))
    high = np.maximum(np.round(top, 2), np.maximum(open_, close))
    low = np.minimum(np.maximum(np.round(bottom, 2), MIN_PRICE), np.minimum(open_, close))
    volume = np.round(typical_volume * np.exp(0.4 * size)).astype(np.int64)
    return make_bars(days, open_, high, low, close, volume)
