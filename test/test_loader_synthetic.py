"""`stocks load --source synthetic`: reproducible, plausible, real-looking symbols."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from stocks import cli, constituents, storage
from stocks.sources import synthetic

pytestmark = pytest.mark.usefixtures("redis_env")


def load(argv: list[str]) -> int:
    return cli.main(["load", "--source", "synthetic", *argv])


def test_same_seed_and_symbol_give_the_same_series_whatever_else_is_drawn():
    a = synthetic.random_walk("AAPL", seed=7)
    synthetic.random_walk("MSFT", seed=7)
    b = synthetic.random_walk("AAPL", seed=7)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != synthetic.random_walk("AAPL", seed=8).tobytes()
    assert a["close"].tolist() != synthetic.random_walk("MSFT", seed=7)["close"].tolist()


@pytest.mark.parametrize("symbol", ["AAPL", "BRK.B", "^GSPC", "SYN0001"])
def test_bars_are_plausible(symbol):
    bars = synthetic.random_walk(symbol, seed=3)
    days = bars["date"].astype("datetime64[D]")
    assert np.is_busday(days).all()
    assert (np.diff(bars["date"]) > 0).all()
    assert days[-1] == np.datetime64(synthetic.DEFAULT_END)
    assert 1250 <= len(bars) <= 1310  # about five years of business days
    o, h, lo, c = bars["open"], bars["high"], bars["low"], bars["close"]
    assert (lo <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all()
    assert (lo > 0).all()
    assert (bars["volume"] > 0).all()
    assert np.array_equal(np.round(c, 2), c)  # cents, like real prices
    assert np.isnan(bars["adj_close"]).all()


def test_window_is_respected():
    bars = synthetic.random_walk("AAPL", 0, start=dt.date(2020, 1, 1), end=dt.date(2020, 1, 31))
    assert storage.days_to_iso(bars["date"])[0] == "2020-01-01"
    assert storage.days_to_iso(bars["date"])[-1] == "2020-01-31"
    assert len(bars) == 23


def test_cli_count_and_seed_store_the_first_members(r0, capsys):
    assert load(["--count", "5", "--seed", "3"]) == 0
    expected = constituents.sp500_symbols()[:5]
    assert storage.list_symbols(r0) == sorted(expected)
    meta, bars = storage.read_series(r0, expected[0])
    assert meta["source"] == "synthetic"
    assert (meta["name"], meta["sector"]) == constituents.describe(expected[0])
    assert bars.tobytes() == synthetic.random_walk(expected[0], seed=3).tobytes()
    assert "loaded 5 tickers" in capsys.readouterr().out


def test_default_is_the_whole_list_plus_the_index(r0):
    assert load(["--workers", "2"]) == 0
    symbols = storage.list_symbols(r0)
    assert len(symbols) == len(constituents.sp500_symbols()) + 1
    meta = storage.get_meta(r0, "^GSPC")
    assert meta["name"] == "S&P 500 Index" and meta["sector"] is None
    assert storage.resolve_symbol(r0, "brk-b") == "BRK.B"


def test_tickers_are_canonical(r0):
    assert load(["--tickers", "brk-b,msft", "--start", "2021-01-04", "--end", "2021-01-08"]) == 0
    assert storage.list_symbols(r0) == ["BRK.B", "MSFT"]
    assert storage.get_meta(r0, "MSFT")["rows"] == 5


def test_more_than_the_list_gets_syn_symbols():
    names = synthetic.symbols(len(constituents.sp500_symbols()) + 2)
    assert names[-2:] == ["SYN0001", "SYN0002"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start", "2020-01-01"], "--start and --end go together"),
        (["--start", "2020-02-01", "--end", "2020-01-01"], "is after --end"),
        (["--start", "2020-13-01", "--end", "2021-01-01"], "not a date"),
        (["--count", "0"], "--count must be at least 1"),
        (["--path", "/tmp"], "--path does not apply"),
        (["--tickers", "AAPL", "--count", "3"], "--tickers excludes"),
    ],
)
def test_usage_errors_exit_2(redis_url, argv, message, capsys):
    assert load(argv) == 2
    assert message in capsys.readouterr().err


def test_empty_window_is_a_named_failure(r0, capsys):
    # 2021-01-02..03 is a weekend: no business day, so nothing to store.
    assert load(["--tickers", "AAPL", "--start", "2021-01-02", "--end", "2021-01-03"]) == 1
    assert "rejected AAPL" in capsys.readouterr().out
    assert storage.count_symbols(r0) == 0
