"""`stocks load --source yahoo` through real yfinance code, offline, with replayed answers."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import threading
import time
from zoneinfo import ZoneInfo

import pytest
import yfinance as yf
from conftest import YAHOO_DIR
from curl_cffi import requests as curl_requests
from yahoo_replay import ReplaySession, chart_body
from yfinance.data import YfData

from stocks import constituents, loader, storage
from stocks.config import Settings
from stocks.sources import synthetic
from stocks.sources.yahoo import HistorySpan, RetryPolicy

ALLOWED_HOSTS = {
    "fc.yahoo.com",
    "guce.yahoo.com",
    "query1.finance.yahoo.com",
    "query2.finance.yahoo.com",
}
FAST = RetryPolicy(attempts=3, wait=0.01, max_wait=0.05)
NEW_YORK = ZoneInfo("America/New_York")
needs_captures = pytest.mark.skipif(
    not YAHOO_DIR.is_dir(), reason="../shared/data/yahoo is absent (real Yahoo captures)"
)

pytestmark = pytest.mark.usefixtures("redis_env")


@pytest.fixture(scope="session")
def yf_cache_dir(tmp_path_factory):
    """yfinance keeps timezones and cookies in sqlite files: put them under the test tmp."""
    path = tmp_path_factory.mktemp("yfinance-cache")
    yf.set_tz_cache_location(str(path))
    return path


@pytest.fixture
def replay(yf_cache_dir, monkeypatch):
    """A replay session; any other curl_cffi request in the process fails the test."""

    def no_network(self, method, url, *args, **kwargs):
        raise AssertionError(f"network access attempted: {method} {url}")

    monkeypatch.setattr(curl_requests.Session, "request", no_network)
    YfData.cache_get.cache_clear()
    session = ReplaySession()
    yield session
    YfData.cache_get.cache_clear()
    assert session.hosts() <= ALLOWED_HOSTS


def two_days(symbol: str, close: float = 2.5) -> dict:
    return chart_body(
        symbol,
        ["2020-01-02", "2020-01-03"],
        [(1.5, 2.75, 1.25, 2.0, 100), (2.0, 3.0, 1.5, close, 200)],
        adjclose=[1.9, close - 0.1],
    )


SPAN = HistorySpan(dt.date(2020, 1, 1), dt.date(2020, 1, 3))


def load(symbols, session, span=SPAN, workers=2):
    settings = Settings.from_env()  # the redis_env fixture's server
    return loader.load_yahoo(
        settings, symbols, span, workers, session=session, policy=FAST, progress=False
    )


# --- real captures ---------------------------------------------------------------------

CAPTURES = [
    ("AAPL_chart_1d_2020-08-31_2020-11-07_split_dividend", "AAPL", "2020-08-31", "2020-11-06", 49),
    ("MSFT_chart_1d_2021-02-01_2022-01-31_dividends", "MSFT", "2021-02-01", "2022-01-28", 252),
    ("NVDA_chart_1d_2021-02-01_2022-01-31_split", "NVDA", "2021-02-01", "2022-01-28", 252),
    ("TSLA_chart_1d_1970-01-01_2023-08-12_full_history", "TSLA", "2010-06-29", "2023-08-11", 3303),
    ("AAPL_chart_1d_2020-01-01_2020-01-03", "AAPL", "2020-01-01", "2020-01-02", 1),
    ("GOOG_chart_1d_2020-01-01_2020-01-03", "GOOG", "2020-01-01", "2020-01-02", 1),
    ("AAPL_chart_1d_2022-02-22_2022-02-23", "AAPL", "2022-02-22", "2022-02-22", 1),
]


@needs_captures
@pytest.mark.parametrize(("capture", "symbol", "start", "end", "rows"), CAPTURES)
def test_real_capture_is_stored_with_yahoos_exact_numbers(
    r0, replay, capture, symbol, start, end, rows
):
    path = YAHOO_DIR / f"{capture}.json"
    replay.add_capture(symbol, path)
    span = HistorySpan(dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    summary = load([symbol], replay, span)
    assert summary.failures == {} and summary.loaded == {symbol: rows}

    result = json.loads(path.read_bytes())["chart"]["result"][0]
    quote = result["indicators"]["quote"][0]
    meta, bars = storage.read_series(r0, symbol)
    days = [dt.datetime.fromtimestamp(t, NEW_YORK).date().isoformat() for t in result["timestamp"]]
    assert storage.days_to_iso(bars["date"]) == days
    for name in ("open", "high", "low", "close"):
        assert bars[name].tolist() == quote[name], name
    assert bars["volume"].tolist() == quote["volume"]
    assert bars["adj_close"].tolist() == result["indicators"]["adjclose"][0]["adjclose"]
    assert meta["source"] == "yahoo" and meta["rows"] == rows
    assert replay.chart_requests(symbol), "the chart endpoint was asked"


@needs_captures
def test_dividend_adjusted_close_is_kept_beside_the_raw_close(r0, replay):
    replay.add_capture("MSFT", YAHOO_DIR / "MSFT_chart_1d_2021-02-01_2022-01-31_dividends.json")
    load(["MSFT"], replay, HistorySpan(dt.date(2021, 2, 1), dt.date(2022, 1, 28)))
    first = storage.bar_dicts(storage.read_bars(r0, "MSFT"))[0]
    assert first["adj_close"] < first["close"] == 239.64999389648438


@needs_captures
def test_empty_capture_is_a_named_failure(r0, replay):
    replay.add_capture("AAPL", YAHOO_DIR / "AAPL_chart_1m_2025-02-01_2025-02-02_empty.json")
    summary = load(["AAPL"], replay, HistorySpan(dt.date(2025, 2, 1), dt.date(2025, 2, 2)))
    assert summary.loaded == {}
    assert summary.failures["AAPL"].startswith("AAPL: ")
    assert "no price data" in summary.failures["AAPL"]
    assert storage.count_symbols(r0) == 0


# --- built answers ---------------------------------------------------------------------


def test_rate_limit_then_success_is_retried_and_loaded(r0, replay):
    replay.add_chart("MSFT", b"Too Many Requests", status=429)
    replay.add_chart("MSFT", b"Too Many Requests", status=429)
    replay.add_chart("MSFT", two_days("MSFT"))
    summary = load(["MSFT"], replay)
    assert summary.failures == {} and summary.loaded == {"MSFT": 2}
    assert len(replay.chart_requests("MSFT")) >= 3
    bars = storage.read_bars(r0, "MSFT")
    assert bars["close"].tolist() == [2.0, 2.5] and bars["adj_close"].tolist() == [1.9, 2.4]


def test_server_error_page_is_retried(r0, replay):
    replay.add_chart("AMZN", b"<html>Will be right back</html>", status=503)
    replay.add_chart("AMZN", b"<html>Will be right back</html>", status=503)
    replay.add_chart("AMZN", two_days("AMZN"))
    assert load(["AMZN"], replay).loaded == {"AMZN": 2}


def test_timeout_is_retried(r0, replay):
    replay.add_error("AMZN", curl_requests.exceptions.Timeout("Operation timed out"))
    replay.add_chart("AMZN", two_days("AMZN"))
    assert load(["AMZN"], replay).loaded == {"AMZN": 2}
    assert len(replay.chart_requests("AMZN")) >= 2


def test_unresolvable_host_fails_at_once(r0, replay):
    replay.add_error("AMZN", curl_requests.exceptions.DNSError("Could not resolve host"))
    summary = load(["AMZN"], replay)
    assert "AMZN: cannot resolve Yahoo's host" in summary.failures["AMZN"]
    assert len(replay.chart_requests("AMZN")) == 1


def test_endless_rate_limit_gives_up_with_a_named_failure(r0, replay):
    replay.add_chart("MSFT", b"Too Many Requests", status=429)
    summary = load(["MSFT"], replay)
    assert "MSFT: rate limited by Yahoo (HTTP 429)" in summary.failures["MSFT"]
    assert f"gave up after {FAST.attempts} attempts" in summary.failures["MSFT"]
    assert storage.count_symbols(r0) == 0


def test_unknown_symbol_is_named_and_the_others_still_load(r0, replay, capsys):
    replay.add_unknown("NOPE")
    replay.add_chart("AAPL", two_days("AAPL"))
    args = argparse.Namespace(
        source="yahoo",
        path=None,
        tickers="NOPE,AAPL",
        sp500=False,
        start="2020-01-01",
        end="2020-01-03",
        period=None,
        count=None,
        seed=0,
        workers=2,
        json=False,
    )
    assert loader.run(args, Settings.from_env(), session=replay) == 1
    out = capsys.readouterr().out
    assert "loaded 1 tickers (2 rows) from yahoo" in out
    assert "rejected NOPE: NOPE: " in out
    assert storage.list_symbols(r0) == ["AAPL"]


def test_empty_result_is_a_named_failure_not_an_empty_series(r0, replay):
    body = two_days("AMZN")
    result = body["chart"]["result"][0]
    del result["timestamp"]
    result["indicators"] = {"quote": [{}], "adjclose": [{}]}
    replay.add_chart("AMZN", body)
    summary = load(["AMZN"], replay)
    assert list(summary.failures) == ["AMZN"] and summary.loaded == {}
    assert storage.get_meta(r0, "AMZN") is None


def test_failed_symbol_keeps_its_old_data(r0, replay):
    loader.load_synthetic(Settings.from_env(), ["AAPL"], seed=1, workers=1, progress=False)
    before = storage.get_meta(r0, "AAPL")
    replay.add_unknown("AAPL")
    assert "AAPL" in load(["AAPL"], replay).failures
    after = storage.get_meta(r0, "AAPL")
    assert after["version"] == before["version"] and after["source"] == "synthetic"
    assert storage.read_bars(r0, "AAPL").tobytes() == synthetic.random_walk("AAPL", 1).tobytes()


def test_share_class_uses_yahoos_dash_and_is_stored_with_a_dot(r0, replay):
    replay.add_chart("BRK-B", two_days("BRK-B", close=300.25))
    assert load([storage.canonical_symbol("brk-b")], replay).loaded == {"BRK.B": 2}
    assert replay.chart_requests("BRK-B") and not replay.chart_requests("BRK.B")
    assert storage.resolve_symbol(r0, "BRK-B") == "BRK.B"
    meta = storage.get_meta(r0, "BRK.B")
    assert meta["name"] == constituents.describe("BRK.B")[0] and meta["sector"] == "Financials"


def test_index_is_loaded_with_its_name(r0, replay):
    replay.add_chart("^GSPC", two_days("^GSPC", close=3234.85))
    assert load(["^GSPC"], replay).loaded == {"^GSPC": 2}
    meta = storage.get_meta(r0, "^GSPC")
    assert (meta["name"], meta["sector"]) == ("S&P 500 Index", None)
    assert storage.read_bars(r0, "^GSPC")["close"][-1] == 3234.85


class SlowReplay(ReplaySession):
    """Counts chart requests in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.peak = 0
        self.guard = threading.Lock()

    def request(self, method, url, params=None, **kwargs):
        if "/v8/finance/chart/" not in url:
            return super().request(method, url, params=params, **kwargs)
        with self.guard:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.05)
            return super().request(method, url, params=params, **kwargs)
        finally:
            with self.guard:
                self.active -= 1


def test_concurrent_requests_are_bounded(r0, yf_cache_dir, monkeypatch):
    monkeypatch.setattr(curl_requests.Session, "request", lambda *a, **k: 1 / 0)
    YfData.cache_get.cache_clear()
    session = SlowReplay()
    symbols = [f"T{i}" for i in range(10)]
    for sym in symbols:
        session.add_chart(sym, two_days(sym))
    policy = RetryPolicy(attempts=3, wait=0.01, slots=threading.BoundedSemaphore(3))
    summary = loader.load_yahoo(
        Settings.from_env(), symbols, SPAN, 10, session=session, policy=policy, progress=False
    )
    assert len(summary.loaded) == 10
    assert 2 <= session.peak <= 3


# --- command line ----------------------------------------------------------------------


def test_sp500_asks_for_every_member_and_the_index(redis_url):
    args = argparse.Namespace(
        source="yahoo",
        path=None,
        tickers=None,
        sp500=True,
        start=None,
        end=None,
        period="5y",
        count=None,
        seed=0,
        workers=None,
        json=False,
    )
    planned = loader.plan(args, Settings(redis_url=redis_url))
    symbols = planned.args[1]
    assert symbols[-1] == "^GSPC" and "BRK.B" in symbols
    assert len(symbols) == len(constituents.sp500_symbols()) + 1
    assert planned.args[2] == HistorySpan(period="5y")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "needs --tickers A,B,... or --sp500"),
        (["--tickers", "AAPL", "--sp500"], "needs --tickers A,B,... or --sp500"),
        (["--sp500", "--period", "5y", "--start", "2020-01-01", "--end", "2020-02-01"], "exclude"),
        (["--sp500", "--period", "five"], "--period 'five'"),
        (["--sp500", "--end", "2020-01-01"], "--start and --end go together"),
        (["--sp500", "--count", "3"], "--count does not apply"),
    ],
)
def test_usage_errors_exit_2(redis_url, argv, message, capsys):
    from stocks import cli

    assert cli.main(["load", "--source", "yahoo", *argv]) == 2
    assert message in capsys.readouterr().err
