"""`stocks load --source yahoo` through real yfinance code, offline, with replayed answers."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import threading
import time
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import yfinance as yf
from conftest import YAHOO_DIR
from curl_cffi import requests as curl_requests
from yahoo_replay import ReplaySession, chart_body
from yfinance.data import YfData

from stocks import constituents, loader, storage
from stocks import update as loader_update
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


def cli_args(*argv: str) -> argparse.Namespace:
    """``stocks load --source yahoo ARGV`` as the command line parses it."""
    parser = argparse.ArgumentParser()
    loader.add_arguments(parser)
    return parser.parse_args(["--source", "yahoo", *argv])


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
    args = cli_args("--tickers", "NOPE,AAPL", "--start", "2020-01-01", "--end", "2020-01-03")
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
    args = cli_args("--sp500", "--period", "5y")
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


# --- --update, replayed --------------------------------------------------------------


def capture_head(path, rows: int, scale: float = 1.0) -> dict:
    """A recorded answer cut to its first ``rows`` days, prices times ``scale`` (as they
    stood before a split that Yahoo has since adjusted them for)."""
    body = json.loads(path.read_bytes())
    result = body["chart"]["result"][0]
    result.pop("events", None)
    result["timestamp"] = result["timestamp"][:rows]
    quote = result["indicators"]["quote"][0]
    for name in quote:
        factor = 1.0 if name == "volume" else scale
        quote[name] = [v * factor for v in quote[name][:rows]]
    adj = result["indicators"]["adjclose"][0]
    adj["adjclose"] = [v * scale for v in adj["adjclose"][:rows]]
    return body


def known_timezone(*symbols: str) -> None:
    """Keep yfinance from asking for the time zone first (it would take a queued answer)."""
    for sym in symbols:
        yf.cache.get_tz_cache().store(sym, "America/New_York")


def update(symbols, session):
    return loader_update.update_yahoo(
        Settings.from_env(), symbols, 2, session=session, policy=FAST, progress=False
    )


def period1(url: str) -> dt.date:
    stamp = int(parse_qs(urlsplit(url).query)["period1"][0])
    return dt.datetime.fromtimestamp(stamp, NEW_YORK).date()


@needs_captures
def test_update_asks_from_the_last_day_and_equals_a_full_load(r0, replay):
    from test_update import snapshot

    known_timezone("MSFT")
    path = YAHOO_DIR / "MSFT_chart_1d_2021-02-01_2022-01-31_dividends.json"
    span = HistorySpan(dt.date(2021, 2, 1), dt.date(2022, 1, 28))
    replay.add_chart("MSFT", capture_head(path, 200))
    replay.add_capture("MSFT", path)
    assert load(["MSFT"], replay, span).loaded == {"MSFT": 200}
    meta = storage.get_meta(r0, "MSFT")

    summary = update(["MSFT"], replay)
    assert summary.failures == {} and summary.updated == {"MSFT": 52}
    asked = replay.chart_requests("MSFT")
    assert len(asked) == 2  # the load, then one request from the stored last day on
    assert period1(asked[-1]) == dt.date.fromisoformat(meta["last_date"])
    assert storage.get_meta(r0, "MSFT")["version"] != meta["version"]
    updated = snapshot(r0)

    r0.flushdb()
    YfData.cache_get.cache_clear()
    assert load(["MSFT"], replay, span).loaded == {"MSFT": 252}
    assert updated == snapshot(r0)

    again = update(["MSFT"], replay)
    assert again.up_to_date == ["MSFT"] and again.updated == {}


@needs_captures
def test_update_after_a_split_reloads_the_ticker_whole(r0, replay):
    """Stored before NVDA's 4:1 split (2021-07-20); Yahoo's answer is split-adjusted now."""
    known_timezone("NVDA")
    path = YAHOO_DIR / "NVDA_chart_1d_2021-02-01_2022-01-31_split.json"
    replay.add_chart("NVDA", capture_head(path, 100, scale=4.0))
    replay.add_capture("NVDA", path)
    load(["NVDA"], replay, HistorySpan(dt.date(2021, 2, 1), dt.date(2021, 6, 24)))
    stored = storage.get_meta(r0, "NVDA")

    summary = update(["NVDA"], replay)
    rows, why = summary.reloaded["NVDA"]
    assert rows == 252 and summary.updated == {}
    assert f"bar for {stored['last_date']} differs" in why and "close" in why
    asked = replay.chart_requests("NVDA")
    assert len(asked) == 3  # load, the recent days, then the whole history again
    assert period1(asked[-1]) == dt.date(2021, 2, 1)  # from the stored first day
    bars = storage.read_bars(r0, "NVDA")
    result = json.loads(path.read_bytes())["chart"]["result"][0]
    assert bars["close"].tolist() == result["indicators"]["quote"][0]["close"]
    assert storage.get_meta(r0, "NVDA")["version"] != stored["version"]


def test_update_keeps_a_ticker_yahoo_no_longer_knows_and_loads_a_new_one(r0, replay, capsys):
    known_timezone("AAPL", "NEWT")
    replay.add_chart("AAPL", two_days("AAPL"))
    replay.add_unknown("AAPL")
    replay.add_chart("NEWT", two_days("NEWT"))
    load(["AAPL"], replay)
    before = storage.get_meta(r0, "AAPL")
    args = cli_args("--tickers", "AAPL,NEWT", "--workers", "2", "--json", "--update")
    assert loader.run(args, Settings.from_env(), session=replay) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["new"] == 1 and out["tickers"]["new"][0]["symbol"] == "NEWT"
    (failure,) = out["failures"]
    assert failure["symbol"] == "AAPL" and failure["reason"].startswith("AAPL: ")
    assert failure["reason"].endswith("; stored data kept")
    assert storage.get_meta(r0, "AAPL") == before
    assert storage.list_symbols(r0) == ["AAPL", "NEWT"]


def test_update_with_nothing_new_writes_nothing(r0, replay):
    known_timezone("AAPL")
    replay.add_chart("AAPL", two_days("AAPL"))
    load(["AAPL"], replay)
    before = storage.get_meta(r0, "AAPL")
    summary = update(["AAPL"], replay)
    assert summary.up_to_date == ["AAPL"] and summary.exit_code == 0
    assert storage.get_meta(r0, "AAPL") == before


@pytest.mark.parametrize(
    "flag", [["--period", "5y"], ["--start", "2020-01-01"], ["--end", "2020-01-01"]]
)
def test_update_refuses_a_span(redis_url, flag, capsys):
    from stocks import cli

    assert cli.main(["load", "--source", "yahoo", "--sp500", "--update", *flag]) == 2
    assert "does not apply to --source yahoo --update" in capsys.readouterr().err


def test_cronjob_update_plan_asks_for_every_member(redis_url):
    """The CronJob's arguments: every member and the index, each from its last day."""
    planned = loader.plan(cli_args("--sp500", "--update"), Settings(redis_url=redis_url))
    assert planned.func is loader_update.update_yahoo
    assert len(planned.args[1]) == len(constituents.sp500_symbols()) + 1
