"""Weekly, monthly, quarterly and yearly bars against an independent pandas groupby reference."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pandas as pd
import pytest
from conftest import SP500_DIR, business_days, needs_shared, random_bars

from stocks import storage
from stocks.api.models import Interval
from stocks.resample import INTERVALS, resample


def reference(bars: np.ndarray, interval: str) -> pd.DataFrame:
    """pandas groupby on ISO (year, week), (year, month), (year, quarter) or year;
    missing cells skipped."""
    dates = pd.to_datetime(bars["date"].astype("datetime64[D]"))
    df = pd.DataFrame({c: bars[c] for c in ("open", "high", "low", "close", "adj_close")})
    df["volume"] = storage.volumes_as_float(bars)
    df["date"] = dates
    if interval == "1wk":
        iso = dates.isocalendar()
        keys = [iso.year.to_numpy(), iso.week.to_numpy()]
    elif interval == "1mo":
        keys = [dates.year, dates.month]
    elif interval == "3mo":
        keys = [dates.year, dates.quarter]
    else:
        keys = [dates.year]
    g = df.groupby(keys, sort=True)
    return pd.DataFrame(
        {
            "date": g["date"].min(),
            "open": g["open"].first(),
            "high": g["high"].max(),
            "low": g["low"].min(),
            "close": g["close"].last(),
            "adj_close": g["adj_close"].last(),
            "volume": g["volume"].sum(min_count=1),
        }
    ).reset_index(drop=True)


def assert_same(got: np.ndarray, ref: pd.DataFrame) -> None:
    assert len(got) == len(ref)
    got_dates = got["date"].astype("datetime64[D]")
    assert (got_dates == ref["date"].to_numpy().astype("datetime64[D]")).all()
    for col in ("open", "high", "low", "close", "adj_close"):
        np.testing.assert_array_equal(got[col], ref[col].to_numpy(), err_msg=col)
    np.testing.assert_array_equal(storage.volumes_as_float(got), ref["volume"].to_numpy())


@pytest.mark.parametrize("interval", ["1wk", "1mo", "3mo", "1y"])
def test_matches_pandas_groupby_with_holes_and_gaps(interval):
    days = business_days("2013-02-08", "2018-02-07")
    days = np.delete(days, np.s_[100:130])  # a month-long gap
    bars = random_bars(days, 7, start_price=50, step=0.02, adj=True, empty=1 / 15)
    assert_same(resample(bars, interval), reference(bars, interval))


def test_iso_week_spans_new_year_and_is_labelled_with_first_trading_day():
    # 2015-12-28 (Mon) .. 2016-01-03 (Sun) is ISO week 53 of 2015; 2015-12-28 is absent.
    days = np.array(
        ["2015-12-24", "2015-12-29", "2015-12-31", "2016-01-01", "2016-01-04"],
        dtype="datetime64[D]",
    )
    bars = storage.make_bars(
        days,
        [1.0, 2, 3, 4, 5],
        [9.0, 8, 7, 6, 5],
        [1.0, 0.5, 2, 3, 4],
        [5.0, 6, 7, 8, 9],
        [1, 2, 3, 4, 5],
    )
    week = resample(bars, "1wk")
    assert storage.days_to_iso(week["date"]) == ["2015-12-24", "2015-12-29", "2016-01-04"]
    assert week["open"].tolist() == [1.0, 2.0, 5.0]
    assert week["high"].tolist() == [9.0, 8.0, 5.0]
    assert week["low"].tolist() == [1.0, 0.5, 4.0]
    assert week["close"].tolist() == [5.0, 8.0, 9.0]
    assert week["volume"].tolist() == [1, 9, 5]
    month = resample(bars, "1mo")
    assert storage.days_to_iso(month["date"]) == ["2015-12-24", "2016-01-01"]
    assert month["volume"].tolist() == [6, 9]
    for interval in ("3mo", "1y"):  # Q4 2015 / 2015, then Q1 2016 / 2016
        longer = resample(bars, interval)
        assert storage.days_to_iso(longer["date"]) == ["2015-12-24", "2016-01-01"]
        assert longer["close"].tolist() == [7.0, 9.0]


def test_quarters_start_in_january_april_july_october():
    days = business_days("2016-02-15", "2017-01-31")
    quarters = resample(random_bars(days, 7, adj=True), "3mo")
    assert storage.days_to_iso(quarters["date"]) == [
        "2016-02-15",
        "2016-04-01",
        "2016-07-01",
        "2016-10-03",
        "2017-01-02",
    ]


def test_first_open_skips_missing_and_all_missing_stays_missing():
    days = np.array(["2016-03-01", "2016-03-02", "2016-04-01"], dtype="datetime64[D]")
    bars = storage.make_bars(
        days,
        [np.nan, 3.0, np.nan],
        [4.0, 5.0, np.nan],
        [1.0, 2.0, np.nan],
        [3.5, np.nan, 2.0],
        [None, 10, None],
    )
    month = resample(bars, "1mo")
    assert month["open"][0] == 3.0 and month["close"][0] == 3.5
    assert np.isnan(month["open"][1]) and np.isnan(month["high"][1])
    assert month["volume"].tolist() == [10, storage.MISSING_VOLUME]
    assert np.isnan(month["adj_close"]).all()


def test_daily_and_empty_are_unchanged():
    bars = random_bars(business_days("2017-01-02", "2017-02-01"), 7, adj=True)
    assert resample(bars, "1d") is bars
    assert len(resample(bars[:0], "1wk")) == 0
    with pytest.raises(ValueError):
        resample(bars, "2wk")


@needs_shared
@pytest.mark.parametrize("interval", ["1wk", "1mo", "3mo", "1y"])
def test_real_ticker_with_empty_cells(interval):
    # DHR has gaps and empty cells (see ../shared/data/README.md).
    df = pd.read_csv(SP500_DIR / "DHR.csv")
    bars = storage.make_bars(
        df["date"].to_numpy(dtype="datetime64[D]"),
        df["open"],
        df["high"],
        df["low"],
        df["close"],
        df["volume"],
    )
    assert np.isnan(bars["open"]).any()
    assert_same(resample(bars, interval), reference(bars, interval))


def test_the_api_accepts_exactly_these_intervals():
    assert get_args(Interval) == INTERVALS
