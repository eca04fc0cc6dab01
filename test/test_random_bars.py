"""The shared test series keeps the shapes other tests rely on."""

from __future__ import annotations

import numpy as np
from conftest import business_days, random_bars

from stocks import storage


def test_bars_are_ordered_and_consistent():
    bars = random_bars(business_days("2016-01-04", "2016-12-30"), 3, adj=True)
    assert len(bars) == 260 and (np.diff(bars["date"]) > 0).all()
    assert (bars["low"] <= np.minimum(bars["open"], bars["close"])).all()
    assert (bars["high"] >= np.maximum(bars["open"], bars["close"])).all()
    np.testing.assert_allclose(bars["adj_close"], bars["close"] * 0.97, rtol=1e-6)
    assert np.isnan(random_bars(5)["adj_close"]).all()
    assert (random_bars(5, 1)["close"] != random_bars(5, 2)["close"]).all()
    assert random_bars(5, 1).tobytes() == random_bars(5, 1).tobytes()


def test_counted_days_are_weekdays_from_start():
    bars = random_bars(3, start="2020-01-04")  # a Saturday
    assert storage.days_to_iso(bars["date"]) == ["2020-01-06", "2020-01-07", "2020-01-08"]


def test_gaps_keep_the_ends_and_empty_cells_are_missing_markers():
    days = business_days("2013-01-01", "2017-12-29")
    gappy = random_bars(days, 2, gaps=0.05)
    assert 0.9 * len(days) < len(gappy) < len(days)
    assert gappy["date"][0] == storage.to_day(days[0].item())
    assert gappy["date"][-1] == storage.to_day(days[-1].item())
    holes = random_bars(days, 3, empty=0.1, empty_columns=("open", "volume"))
    assert np.isnan(holes["open"]).sum() == len(days) // 10
    assert (holes["volume"] == storage.MISSING_VOLUME).sum() == len(days) // 10
    assert not np.isnan(holes["close"]).any()
