"""The market routes (one day, movers) against an independent reading of the real CSVs.

30 real tickers (with gaps, empty cells, late listings and BRK.B) are loaded once with the
real loader; expectations come from the CSV files through the csv module and calendar
arithmetic from dateutil, not from the code under test.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
import redis
from conftest import SP500_DIR, needs_shared
from dateutil.relativedelta import relativedelta

from stocks import loader
from stocks.api.app import create_app

pytestmark = needs_shared

TICKERS = [
    "AAPL", "MSFT", "AMZN", "JPM", "XOM", "JNJ", "PG", "KO", "INTC", "CSCO",
    "DHR", "O", "ES", "ICE", "BMY", "ORCL", "APTV", "BHF", "UA", "FTV",
    "BRK.B", "GOOG", "NWSA", "REGN", "VRTX", "WRK", "NFLX", "NVDA", "CHK", "F",
]  # fmt: skip
PERIOD_OFFSETS = {
    "1d": relativedelta(days=1),
    "5d": relativedelta(days=5),
    "1wk": relativedelta(days=7),
    "1mo": relativedelta(months=1),
    "3mo": relativedelta(months=3),
    "1y": relativedelta(years=1),
}


def read_csv_rows() -> dict[str, list[dict]]:
    out = {}
    for sym in TICKERS:
        with (SP500_DIR / f"{sym}.csv").open(newline="") as fh:
            out[sym] = list(csv.DictReader(fh))
    return out


def cell(text: str) -> float | None:
    return float(text) if text != "" else None


@pytest.fixture(scope="module")
def real(base_settings):
    redis.Redis.from_url(base_settings.redis_url).flushall()
    summary = loader.load_csv(base_settings, SP500_DIR, tickers=TICKERS, workers=2, kind="thread")
    assert len(summary.loaded) == len(TICKERS)
    return read_csv_rows()


@pytest.fixture(scope="module")
def client(real, base_settings):
    return create_app(base_settings).test_client()


@pytest.fixture(scope="module")
def roomy(real, base_settings):
    """A client whose many quick GETs (as one test makes) stay within fair use."""
    return create_app(base_settings.replace(compute_rate="10000/second")).test_client()


def expected_day(real: dict, day: str) -> list[dict]:
    rows = []
    for sym in sorted(real):
        for row in real[sym]:
            if row["date"] == day:
                rows.append(
                    {
                        "date": day,
                        "open": cell(row["open"]),
                        "high": cell(row["high"]),
                        "low": cell(row["low"]),
                        "close": cell(row["close"]),
                        "volume": int(row["volume"]),
                        "symbol": sym,
                    }
                )
    return rows


@pytest.mark.parametrize("day", ["2015-07-17", "2016-01-12", "2013-04-26", "2017-12-04"])
def test_market_day_equals_the_csv_files(client, real, day):
    body = client.get(f"/market/{day}").get_json()
    want = expected_day(real, day)
    assert body["date"] == day and body["count"] == len(want)
    assert body["bars"] == want


def test_market_day_fields_and_csv(client, real):
    day = "2017-12-05"  # APTV's first day
    want = expected_day(real, day)
    body = client.get(f"/market/{day}?fields=close,volume").get_json()
    assert [list(b) for b in body["bars"]][0] == ["date", "close", "volume", "symbol"]
    assert [(b["symbol"], b["close"]) for b in body["bars"]] == [
        (w["symbol"], w["close"]) for w in want
    ]
    assert "APTV" in {b["symbol"] for b in body["bars"]}
    for resp in (
        client.get(f"/market/{day}?fields=close,volume&format=csv"),
        client.get(f"/market/{day}.csv?fields=close,volume"),
        client.get(f"/market/{day}?fields=close,volume", headers={"Accept": "text/csv"}),
    ):
        assert resp.status_code == 200 and resp.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
        assert list(rows[0]) == ["symbol", "date", "close", "volume"]
        assert [(r["symbol"], float(r["close"]), int(r["volume"])) for r in rows] == [
            (w["symbol"], w["close"], w["volume"]) for w in want
        ]


@pytest.mark.parametrize(
    ("day", "previous", "following"),
    [
        ("2017-07-04", "2017-07-03", "2017-07-05"),  # a holiday
        ("2015-01-01", "2014-12-31", "2015-01-02"),  # neighbours in other years
        ("2016-03-12", "2016-03-11", "2016-03-14"),  # a Saturday
        ("2010-06-01", None, "2013-02-08"),  # before the data
        ("2019-01-02", "2018-02-07", None),  # after it
    ],
)
def test_day_without_trading_names_the_nearest_trading_days(client, day, previous, following):
    resp = client.get(f"/market/{day}")
    assert resp.status_code == 404
    err = resp.get_json()["error"]
    assert err["code"] == "no_trading_day"
    assert (err["previous"], err["next"]) == (previous, following)


def test_bad_dates_are_400(client):
    for path in ("/market/2017-02-30", "/market/yesterday", "/market/2017-1-5.csv"):
        resp = client.get(path)
        assert resp.status_code == 400, path
        assert resp.get_json()["error"]["code"] == "invalid_parameter"


def expected_changes(real: dict, end: dt.date, period: str) -> tuple[str, list[dict], int]:
    """Every ticker's change as the issue defines it, the ranked day, and the excluded count."""
    target = end - PERIOD_OFFSETS[period]
    found = []
    for sym, rows in real.items():
        dated = [(dt.date.fromisoformat(r["date"]), float(r["close"])) for r in rows if r["close"]]
        to = [d for d in dated if d[0] <= end]
        frm = [d for d in dated if d[0] <= target]
        if to and frm:
            (to_day, to_close), (from_day, from_close) = to[-1], frm[-1]
            found.append(
                {
                    "symbol": sym,
                    "from_date": from_day.isoformat(),
                    "from_close": from_close,
                    "to_date": to_day.isoformat(),
                    "to_close": to_close,
                    "change": to_close - from_close,
                    "change_pct": (to_close / from_close - 1.0) * 100.0,
                }
            )
    day = max(c["to_date"] for c in found)
    ranked = [c for c in found if c["to_date"] == day]
    return day, ranked, len(real) - len(ranked)


def strip(movers: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in ("name", "sector")} for m in movers]


@pytest.mark.parametrize(
    ("end", "period"),
    [
        ("2016-03-15", "1mo"),
        ("2015-01-02", "1d"),  # a period back is in the previous year
        ("2015-01-01", "5d"),  # a holiday: the market's day is 2014-12-31
        ("2017-07-10", "1wk"),
        ("2014-06-30", "3mo"),
        ("2018-02-07", "1y"),
    ],
)
def test_movers_equal_an_independent_computation(client, real, end, period):
    day, ranked, excluded = expected_changes(real, dt.date.fromisoformat(end), period)
    body = client.get(f"/market/movers?date={end}&period={period}&limit=7").get_json()
    assert (body["date"], body["period"]) == (day, period)
    assert body["count"] == len(ranked) and body["excluded"] == excluded
    by_pct = sorted(sorted(ranked, key=lambda c: c["symbol"]), key=lambda c: -c["change_pct"])
    assert strip(body["gainers"]) == by_pct[:7]
    assert strip(body["losers"]) == sorted(ranked, key=lambda c: c["change_pct"])[:7]


def test_movers_equal_the_change_route_and_filter_by_sector(client, real):
    body = client.get("/market/movers?date=2017-06-30&period=3mo&limit=3").get_json()
    for mover in body["gainers"] + body["losers"]:
        one = client.get(f"/tickers/{mover['symbol']}/change?period=3mo&end=2017-06-30")
        assert {k: v for k, v in one.get_json().items() if k != "period"} == {
            k: v for k, v in mover.items() if k not in ("name", "sector")
        }
    tech = client.get("/market/movers?date=2017-06-30&period=3mo&sector=information%20technology")
    tech = tech.get_json()
    assert tech["count"] > 0
    assert {m["sector"] for m in tech["gainers"] + tech["losers"]} == {"Information Technology"}
    assert body["gainers"][0]["name"]  # names come from the constituents list


def test_movers_default_to_the_last_stored_day(client, real):
    body = client.get("/market/movers?period=1d").get_json()
    assert body["date"] == "2018-02-07"
    assert body["count"] == len(TICKERS) and body["excluded"] == 0


def test_a_date_after_the_data_counts_as_the_last_stored_day(client, real):
    """Never a close against itself: a made-up 0 % for every ticker."""
    for period in ("1d", "1y"):
        last = client.get(f"/market/movers?date=2018-02-07&period={period}").get_json()
        for later in ("2018-02-10", "9999-12-31"):
            body = client.get(f"/market/movers?date={later}&period={period}").get_json()
            assert body == last, (later, period)
        assert any(m["change"] != 0 for m in last["gainers"])
    one = client.get("/tickers/AAPL/change?period=1y&end=9999-12-31").get_json()
    assert one == client.get("/tickers/AAPL/change?period=1y&end=2018-02-07").get_json()
    too_old = client.get("/tickers/AAPL/change?period=5y&end=9999-12-31")
    assert too_old.status_code == 422 and too_old.get_json()["error"]["code"] == "no_data_before"
    stats = client.get("/tickers/AAPL/stats?period=1y&end=9999-12-31").get_json()
    assert stats["start"] == client.get("/tickers/AAPL/stats?period=1y").get_json()["start"]


def test_movers_bad_input_is_400_and_no_data_is_404(client):
    for query in ("period=2d", "limit=0", "limit=101", "date=2017-13-01"):
        assert client.get(f"/market/movers?{query}").status_code == 400, query
    resp = client.get("/market/movers?date=2013-02-07&period=1d")  # before the first day
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "no_data"


@pytest.mark.parametrize(
    ("end", "period", "needed"),
    [
        ("2013-02-08", "1d", "2013-02-07"),  # the first stored day
        ("2013-02-11", "5d", "2013-02-06"),
        ("2013-02-08", "1y", "2012-02-08"),
        ("2014-01-03", "1y", "2013-01-03"),  # the data's first closes are a year earlier
    ],
)
def test_movers_without_a_close_that_old_say_so_as_change_does(roomy, end, period, needed):
    """Closes on the date but none a period back: 422 no_data_before naming the day needed,
    as /tickers/{symbol}/change answers for one of them (not a 404 that they are missing)."""
    resp = roomy.get(f"/market/movers?date={end}&period={period}")
    error = resp.get_json()["error"]
    assert resp.status_code == 422 and error["code"] == "no_data_before", error
    assert needed in error["message"] and "2013-02-08" in error["message"]
    one = roomy.get(f"/tickers/AAPL/change?period={period}&end={end}")
    assert one.status_code == 422 and one.get_json()["error"]["code"] == "no_data_before"
    assert needed in one.get_json()["error"]["message"]


def test_movers_of_an_empty_sector_are_none_as_tickers_lists_none(roomy):
    assert roomy.get("/tickers?sector=Nope").get_json()["count"] == 0
    for query in ("sector=Nope", "sector=Nope&date=2017-07-01&period=1mo"):
        resp = roomy.get(f"/market/movers?{query}")
        assert resp.status_code == 200, resp.get_json()
        everyone = roomy.get("/market/movers?" + query.replace("sector=Nope", "limit=1"))
        assert resp.get_json() == {
            "date": everyone.get_json()["date"],  # the market's day for the date asked
            "period": everyone.get_json()["period"],
            "count": 0,
            "excluded": 0,
            "gainers": [],
            "losers": [],
        }
