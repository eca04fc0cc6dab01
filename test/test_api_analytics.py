"""Analytics routes through Flask's test client, over series stored with stocks.storage.

Answers are checked against the independent references of test_analytics.py, so the
route layer (range cutting, caching, symbol resolution, errors) is tested end to end.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from conftest import needs_shared
from test_analytics import (
    assert_close_dict,
    assert_series_equal,
    read_csv_bars,
    ref_bollinger,
    ref_change,
    ref_compare,
    ref_ema,
    ref_macd,
    ref_rsi,
    ref_stats,
    walk,
    with_empty_cells,
)

from stocks import storage

META = {"name": "Test Co", "sector": "Testing", "source": "test"}


@pytest.fixture
def stored(r0):
    """AAA plain, GAP with gaps, HOLE with empty cells, BRK.B (alias BRK-B)."""
    series = {
        "AAA": walk(1),
        "GAP": walk(2, gaps=0.05),
        "HOLE": with_empty_cells(3),
        "BRK.B": walk(4),
    }
    for sym, bars in series.items():
        storage.replace_series(r0, sym, bars, META)
    return series


def get_ok(client, url: str) -> dict:
    resp = client.get(url)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def get_error(client, url: str, status: int) -> dict:
    resp = client.get(url)
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    return resp.get_json()["error"]


def values(rows: list[dict], col: str = "value") -> np.ndarray:
    return np.array([np.nan if r[col] is None else r[col] for r in rows], dtype=float)


# --- stats -----------------------------------------------------------------------------


@pytest.mark.parametrize("sym", ["AAA", "GAP", "HOLE"])
def test_stats_whole_history(client, stored, sym):
    got = get_ok(client, f"/tickers/{sym.lower()}/stats")
    assert got.pop("symbol") == sym
    assert_close_dict(got, ref_stats(stored[sym]))


def test_stats_range_reports_the_days_used(client, stored):
    got = get_ok(client, "/tickers/GAP/stats?start=2014-01-04&end=2014-06-30")
    bars = storage.cut(stored["GAP"], dt.date(2014, 1, 4), dt.date(2014, 6, 30))
    want = ref_stats(bars)
    assert got["start"] == want["start"] != "2014-01-04"  # a Saturday: the next trading day
    got.pop("symbol")
    assert_close_dict(got, want)


def test_stats_period_matches_change(client, stored):
    stats = get_ok(client, "/tickers/AAA/stats?period=6mo&end=2015-08-15")
    change = get_ok(client, "/tickers/AAA/change?period=6mo&end=2015-08-15")
    assert stats["start"] == change["from_date"]
    assert stats["end"] == change["to_date"]
    assert stats["return"] * 100 == pytest.approx(change["change_pct"])


def test_stats_alias_and_case(client, stored):
    assert get_ok(client, "/tickers/brk-b/stats")["symbol"] == "BRK.B"


def test_stats_errors(client, stored):
    assert get_error(client, "/tickers/NOPE/stats", 404)["code"] == "unknown_symbol"
    err = get_error(client, "/tickers/AAA/stats?start=2030-01-01", 422)
    assert err["code"] == "empty_range"
    err = get_error(client, "/tickers/AAA/stats?start=2014-01-01&period=1y", 400)
    assert "start or period" in err["message"]
    err = get_error(client, "/tickers/AAA/stats?period=2w", 400)
    assert err["errors"][0]["field"] == "period"
    err = get_error(client, "/tickers/AAA/stats?start=2014-02-30", 400)
    assert err["errors"][0]["field"] == "start"
    err = get_error(client, "/tickers/AAA/stats?start=2015-01-01&end=2014-01-01", 400)
    assert err["errors"][0]["field"] == "end"


def test_answers_see_a_write_at_once(client, stored, r0):
    before = get_ok(client, "/tickers/AAA/stats")
    sma_before = get_ok(client, "/tickers/AAA/indicators/sma?window=2")["values"][-1]["value"]
    last = stored["AAA"][-1:].copy()
    last["close"] = last["close"] * 2
    last["high"] = last["close"]
    storage.upsert_bar(r0, "AAA", last)
    after = get_ok(client, "/tickers/AAA/stats")
    assert after["last_close"] == pytest.approx(before["last_close"] * 2)
    sma_after = get_ok(client, "/tickers/AAA/indicators/sma?window=2")["values"][-1]["value"]
    assert sma_after == pytest.approx(sma_before + float(stored["AAA"]["close"][-1]) / 2)


def test_stats_survive_a_bar_without_close(client, r0):
    bars = walk(9)[:60].copy()
    bars["close"][5] = np.nan
    storage.replace_series(r0, "NOCL", bars, META)
    got = get_ok(client, "/tickers/NOCL/stats")
    assert got["trading_days"] == 59


# --- change ----------------------------------------------------------------------------


@pytest.mark.parametrize("sym", ["AAA", "GAP"])
@pytest.mark.parametrize("period", ["1d", "5d", "1mo", "1y"])
def test_change_matches_reference(client, stored, sym, period):
    end = dt.date(2016, 3, 31)
    got = get_ok(client, f"/tickers/{sym}/change?period={period}&end={end}")
    want = ref_change(stored[sym], period, end)
    assert got["symbol"] == sym and got["period"] == period
    assert_close_dict({k: got[k] for k in want}, want)


def test_change_on_holiday_and_default_end(client, stored):
    got = get_ok(client, "/tickers/AAA/change?period=1mo&end=2016-12-25")  # Sunday
    assert got["to_date"] == "2016-12-23"
    got = get_ok(client, "/tickers/AAA/change")
    last = storage.from_day(stored["AAA"]["date"][-1]).isoformat()
    assert got["period"] == "1d" and got["to_date"] == last


def test_change_errors(client, stored):
    err = get_error(client, "/tickers/AAA/change?period=5y&end=2014-01-01", 422)
    assert err["code"] == "no_data_before" and "2009-01-01" in err["message"]
    assert get_error(client, "/tickers/AAA/change?period=2y", 400)["errors"][0]["field"] == "period"
    assert get_error(client, "/tickers/ZZZ/change", 404)["code"] == "unknown_symbol"
    for url in (
        "/tickers/AAA/change?period=5y&end=0001-03-01",
        "/tickers/AAA/stats?period=5y&end=0001-03-01",
    ):
        assert get_error(client, url, 422)["status"] == 422


# --- indicators ------------------------------------------------------------------------


def test_indicator_values_do_not_depend_on_the_range(client, stored):
    full = get_ok(client, "/tickers/GAP/indicators/ema?window=30")["values"]
    part = get_ok(client, "/tickers/GAP/indicators/ema?window=30&start=2014-01-01&end=2014-03-31")
    rows = part["values"]
    by_date = {r["date"]: r["value"] for r in full}
    assert rows and all(by_date[r["date"]] == r["value"] for r in rows)
    assert rows[0]["date"] >= "2014-01-01" and rows[-1]["date"] <= "2014-03-31"
    closes = stored["GAP"]["close"].astype(float)
    assert_series_equal(values(full), ref_ema(closes, 30))
    assert part["params"] == {"window": 30}


def test_rsi_and_nulls(client, stored):
    got = get_ok(client, "/tickers/AAA/indicators/RSI")
    assert got["indicator"] == "rsi" and got["params"] == {"window": 14}
    rows = got["values"]
    assert rows[13]["value"] is None and rows[14]["value"] is not None
    assert_series_equal(values(rows), ref_rsi(stored["AAA"]["close"].astype(float), 14))


def test_macd_columns(client, stored):
    got = get_ok(client, "/tickers/HOLE/indicators/macd?fast=6&slow=13&signal=4")
    assert got["params"] == {"fast": 6, "slow": 13, "signal": 4}
    want = ref_macd(stored["HOLE"]["close"].astype(float), 6, 13, 4)
    for col in ("macd", "signal", "histogram"):
        assert_series_equal(values(got["values"], col), want[col])


def test_bollinger_columns(client, stored):
    got = get_ok(client, "/tickers/AAA/indicators/bollinger?window=10&k=1.5")
    assert set(got["values"][0]) == {"date", "upper", "middle", "lower"}
    want = ref_bollinger(stored["AAA"]["close"].astype(float), 10, 1.5)
    for col in ("upper", "middle", "lower"):
        assert_series_equal(values(got["values"], col), want[col])


def test_indicator_csv(client, stored):
    resp = client.get("/tickers/AAA/indicators/macd?format=csv&end=2013-02-28")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    lines = resp.get_data(as_text=True).splitlines()
    assert lines[0] == "date,macd,signal,histogram"
    assert lines[1] == "2013-01-01,,,"
    json_rows = get_ok(client, "/tickers/AAA/indicators/macd?end=2013-02-28")["values"]
    assert len(lines) == len(json_rows) + 1
    last = lines[-1].split(",")
    assert float(last[1]) == json_rows[-1]["macd"]
    resp = client.get("/tickers/AAA/indicators/sma", headers={"Accept": "text/csv"})
    assert resp.mimetype == "text/csv"
    twin = client.get("/tickers/AAA/indicators/macd.csv?end=2013-02-28")  # CSV-only route
    assert twin.mimetype == "text/csv" and twin.get_data(as_text=True).splitlines() == lines


def test_indicator_errors(client, stored):
    err = get_error(client, "/tickers/AAA/indicators/vwap", 404)
    assert err["code"] == "unknown_indicator"
    assert err["known"] == ["bollinger", "ema", "macd", "rsi", "sma"]
    for bad in ("window=1", "window=501", "window=abc", "window=0"):
        err = get_error(client, f"/tickers/AAA/indicators/sma?{bad}", 400)
        assert err["errors"][0]["field"] == "window"
    err = get_error(client, "/tickers/AAA/indicators/rsi?window=2000", 400)
    assert err["errors"][0]["field"] == "window"
    err = get_error(client, "/tickers/AAA/indicators/macd?fast=30&slow=20", 400)
    assert err["errors"][0]["field"] == "fast"
    err = get_error(client, "/tickers/AAA/indicators/sma?k=3", 400)
    assert err["errors"][0]["field"] == "k"
    assert get_error(client, "/tickers/ZZZ/indicators/sma", 404)["code"] == "unknown_symbol"


def test_indicator_window_longer_than_history(client, r0):
    storage.replace_series(r0, "SHORT", walk(5)[:30], META)
    err = get_error(client, "/tickers/SHORT/indicators/sma?window=31", 400)
    assert "30 stored trading days" in err["message"]
    rows = get_ok(client, "/tickers/SHORT/indicators/sma?window=30")["values"]
    assert [r["value"] is None for r in rows].count(False) == 1


# --- compare ---------------------------------------------------------------------------


def test_compare_matches_reference(client, stored):
    got = get_ok(client, "/compare?symbols=aaa,GAP,hole,brk-b&start=2013-06-01&end=2015-06-01")
    assert got["symbols"] == ["AAA", "GAP", "HOLE", "BRK.B"]
    cut = {
        s: storage.cut(stored[s], dt.date(2013, 6, 1), dt.date(2015, 6, 1)) for s in got["symbols"]
    }
    got.pop("symbols")
    assert_close_dict(got, ref_compare(cut))


def test_compare_errors(client, stored):
    err = get_error(client, "/compare?symbols=AAA,NOPE", 404)
    assert err["code"] == "unknown_symbol" and "NOPE" in err["message"]
    err = get_error(client, "/compare?symbols=BRK.B,brk-b", 400)
    assert "2 distinct" in err["message"]
    err = get_error(client, "/compare?symbols=AAA", 400)
    err = get_error(client, "/compare?symbols=" + ",".join(["AAA"] * 21), 400)
    assert "at most 20" in err["message"]
    err = get_error(client, "/compare?symbols=AAA,,GAP", 400)
    assert err["errors"][0]["field"] == "symbols"
    assert get_error(client, "/compare", 400)["errors"][0]["field"] == "symbols"
    err = get_error(client, "/compare?symbols=AAA,GAP&start=2013-01-01&end=2013-01-02", 422)
    assert err["code"] == "too_few_common_dates"


# --- real data -------------------------------------------------------------------------


@pytest.fixture
def real(r0):
    series = {s: read_csv_bars(s) for s in ("AAPL", "DHR", "O", "GOOG", "BRK.B")}
    for sym, bars in series.items():
        storage.replace_series(r0, sym, bars, META)
    return series


@needs_shared
def test_real_stats_change_and_compare(client, real):
    for sym in ("AAPL", "DHR", "O"):
        got = get_ok(client, f"/tickers/{sym}/stats")
        got.pop("symbol")
        assert_close_dict(got, ref_stats(real[sym]))
    got = get_ok(client, "/tickers/AAPL/stats")
    assert got["first_close"] == 67.8542 and got["start"] == "2013-02-08"
    chg = get_ok(client, "/tickers/DHR/change?period=1mo&end=2015-07-19")
    want = ref_change(real["DHR"], "1mo", dt.date(2015, 7, 19))
    assert_close_dict({k: chg[k] for k in want}, want)
    got = get_ok(client, "/compare?symbols=AAPL,GOOG,DHR,O,BRK-B")
    got.pop("symbols")
    assert_close_dict(got, ref_compare(real))


@needs_shared
def test_real_indicators(client, real):
    closes = real["AAPL"]["close"].astype(float)
    got = get_ok(client, "/tickers/AAPL/indicators/macd")["values"]
    want = ref_macd(closes, 12, 26, 9)
    assert_series_equal(values(got, "signal"), want["signal"])
    got = get_ok(client, "/tickers/O/indicators/rsi")["values"]
    assert_series_equal(values(got), ref_rsi(real["O"]["close"].astype(float), 14))


def test_repeated_alias_request_follows_writes(client, stored, r0):
    """Answers served again from the answer cache still see writes to any spelling."""
    url = "/tickers/brk-b/indicators/sma?window=2&format=csv"
    first = client.get(url).get_data(as_text=True)
    assert client.get(url).get_data(as_text=True) == first
    last = stored["BRK.B"][-1:].copy()
    last["close"] = last["close"] + 10.0
    last["high"] = last["close"]
    storage.upsert_bar(r0, "BRK.B", last)
    second = client.get(url).get_data(as_text=True)
    assert second != first
    assert float(second.splitlines()[-1].split(",")[1]) == pytest.approx(
        float(first.splitlines()[-1].split(",")[1]) + 5.0
    )
    storage.replace_series(r0, "BRK-B", walk(11)[:40], META)  # the dash form now exists
    third = client.get(url).get_data(as_text=True)
    assert len(third.splitlines()) == 41  # header + the 40 bars of BRK-B itself
