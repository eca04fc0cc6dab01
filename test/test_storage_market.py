"""Whole-market reads: the window script against whole-series reads."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from conftest import business_days, random_bars

from stocks import analytics as calc
from stocks import storage


def walk(days: np.ndarray, seed: int) -> np.ndarray:
    """A sixth of the closes are missing."""
    return random_bars(days, seed, start_price=30, step=0.02, empty=1 / 6, empty_columns=("close",))


@pytest.fixture
def market(r0):
    gappy = business_days("2013-02-08", "2018-02-07")
    gappy = gappy[(gappy < np.datetime64("2014-11-01")) | (gappy > np.datetime64("2016-02-10"))]
    stored = {
        "A": walk(business_days("2013-02-08", "2018-02-07"), 1),
        "B": walk(gappy, 2),
        "C": walk(business_days("2016-07-01", "2016-12-30"), 3),  # short, one year only
        "D": walk(business_days("2015-12-31", "2016-01-05"), 4),  # straddles a new year
    }
    stored["D"]["close"][:] = [4.0, np.nan, np.nan, np.nan]  # only 2015-12-31 has a close
    for sym, bars in stored.items():
        storage.replace_series(r0, sym, bars, {"name": sym, "sector": "X", "source": "csv"})
    return stored


def test_window_gives_change_what_the_whole_series_gives(r0, market):
    rng = np.random.default_rng(0)
    ends = [dt.date(2013, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 2000, 40)]
    ends += [dt.date(2016, 1, 4), dt.date(2016, 1, 1), dt.date(2016, 2, 11)]
    for end in ends:
        for period in ("1d", "1wk", "1mo", "1y", "5y"):
            window = storage.read_market_window(r0, calc.period_start(end, period), end)
            assert window.symbols == sorted(market)
            for i, sym in enumerate(window.symbols):
                # the rule movers applies to every ticker (change_indices), whole or windowed
                want = rule(market[sym], end, period)
                assert rule(window.rows_of(i), end, period) == want, (sym, end, period)
                # and it is far smaller than the years it comes from
                assert len(window.rows_of(i)) <= 60 or period in ("1y", "5y") or want is None


def rule(bars: np.ndarray, end: dt.date, period: str) -> tuple | None:
    """(from close, to close) by the rule of /change, with no clamping; None without both."""
    bars = calc.with_close(bars)
    if len(bars) == 0:
        return None
    bounds = np.array([0, len(bars)])
    (f,), (t,) = calc.change_indices(bars["date"], bounds, end, period)
    return None if f < 0 or t < 0 else (bars["close"][f], bars["close"][t])


def test_window_on_one_day_holds_that_day_and_the_meta(r0, market):
    day = dt.date(2016, 1, 5)
    window = storage.read_market_window(r0, day, day, ("name", "last_date"))
    owners, bars = storage.bars_on(window, day)
    assert [window.symbols[o] for o in owners] == ["A", "D"]  # B is in its gap
    for o, bar in zip(owners, bars, strict=True):
        want = storage.cut(market[window.symbols[o]], day, day)
        assert bar.tobytes() == want.tobytes()
    assert window.meta["name"] == ["A", "B", "C", "D"]
    assert window.meta["last_date"][2] == "2016-12-30"
    assert set(window.depends) == {storage.ALL_SYMBOLS, "A", "B", "C", "D"}
    # D's 2016 bars have no close: the window reaches back into 2015 for its last close.
    assert storage.days_to_iso(window.rows_of(3)["date"]) == [
        "2015-12-31",
        "2016-01-01",
        "2016-01-04",
        "2016-01-05",
    ]


def test_dependencies_follow_the_symbol_set(r0, market):
    names = [storage.ALL_SYMBOLS, "A", "B"]
    before = storage.dependency_versions(r0, names)
    assert before[storage.ALL_SYMBOLS] == storage.members_digest(market)
    storage.replace_series(r0, "E", market["C"], {"source": "csv"})
    after = storage.dependency_versions(r0, names)
    assert after[storage.ALL_SYMBOLS] != before[storage.ALL_SYMBOLS]
    assert (after["A"], after["B"]) == (before["A"], before["B"])
    empty = storage.read_market_window(r0, dt.date(1990, 1, 1), dt.date(1990, 1, 1))
    assert len(empty.bars) == 0 and len(empty.symbols) == 5
