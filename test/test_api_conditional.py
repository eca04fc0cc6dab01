"""Conditional GETs: ETags from data versions, 304s, and tags that change on every write."""

from __future__ import annotations

import pytest
from conftest import business_days, random_bars

from stocks import storage
from stocks.api.app import create_app

KEY = "etag-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BAR = {"open": 10.5, "high": 11.25, "low": 10.0, "close": 11.0, "volume": 1234}
DATA_ROUTES = [
    "/tickers",
    "/tickers.csv",
    "/tickers?q=app",
    "/tickers/AAPL",
    "/tickers/aapl/prices?start=2016-06-01",
    "/tickers/AAPL/prices.csv?limit=5",
    "/tickers/AAPL/prices/2016-12-30",
    "/tickers/AAPL/change?period=1mo",
    "/tickers/AAPL/stats",
    "/market/2016-12-30",
    "/market/2016-12-30.csv",
    "/market/movers?period=1wk",
]


YEAR_2016 = business_days("2016-01-04", "2016-12-30")


@pytest.fixture
def stored(r0):
    for i, sym in enumerate(["AAPL", "MSFT"]):
        storage.replace_series(
            r0, sym, random_bars(YEAR_2016, i, start_price=20), {"name": sym, "source": "csv"}
        )
    return r0


@pytest.fixture(scope="module", params=[8, 0], ids=["cached", "uncached"])
def app(request, base_settings):
    """With the answer cache (304 from the middleware) and without (304 from the view)."""
    return create_app(base_settings.replace(api_keys=(KEY,), api_cache_mb=request.param))


@pytest.mark.parametrize("path", DATA_ROUTES)
def test_data_routes_tag_and_answer_304(client, stored, path):
    first = client.get(path)
    assert first.status_code == 200, first.data
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    assert first.headers["Cache-Control"] == "no-cache"
    assert "Accept" in first.headers["Vary"]
    for tags in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = client.get(path, headers={"If-None-Match": tags})
        assert again.status_code == 304 and again.data == b""
        assert again.headers["ETag"] == etag
    changed = client.get(path, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200 and changed.data == first.data
    assert changed.headers["ETag"] == etag


def test_representations_have_their_own_tags(client, stored):
    url = "/tickers/AAPL/prices?start=2016-12-01"
    as_json = client.get(url).headers["ETag"]
    as_csv = client.get(url, headers={"Accept": "text/csv"}).headers["ETag"]
    other = client.get(url + "&fields=close").headers["ETag"]
    assert len({as_json, as_csv, other}) == 3


def test_a_write_changes_the_tag_at_once(client, stored):
    urls = ["/tickers/AAPL/prices?start=2016-12-01", "/market/2016-12-30", "/tickers"]
    old = {u: client.get(u).headers["ETag"] for u in urls}
    put = client.put("/tickers/AAPL/prices/2016-12-30", json=BAR, headers=AUTH)
    assert put.status_code == 200
    for url in urls:
        resp = client.get(url, headers={"If-None-Match": old[url]})
        assert resp.status_code == 200 and resp.headers["ETag"] != old[url], url
    body = client.get(urls[0]).get_json()
    assert body["prices"][-1]["close"] == 11.0
    # MSFT's own answers keep their tag: only what the write touched changed.
    msft = "/tickers/MSFT/prices?start=2016-12-01"
    tag = client.get(msft).headers["ETag"]
    client.delete("/tickers/AAPL/prices/2016-12-30", headers=AUTH)
    assert client.get(msft, headers={"If-None-Match": tag}).status_code == 304


def test_market_tags_change_when_a_ticker_comes_or_goes(client, stored):
    urls = ["/market/2016-12-30", "/market/movers?period=1mo", "/tickers"]
    old = {u: client.get(u).headers["ETag"] for u in urls}
    storage.replace_series(
        stored, "XOM", random_bars(YEAR_2016, 7, start_price=20), {"name": "Exxon", "source": "csv"}
    )
    for url in urls:
        resp = client.get(url, headers={"If-None-Match": old[url]})
        assert resp.status_code == 200, url
    assert client.get("/market/2016-12-30").get_json()["count"] == 3
    storage.delete_series(stored, "XOM")
    assert client.get("/market/2016-12-30").get_json()["count"] == 2
    assert client.get(urls[0], headers={"If-None-Match": old[urls[0]]}).status_code == 304


def test_errors_carry_no_tag(client, stored):
    resp = client.get("/tickers/NOPE/prices")
    assert resp.status_code == 404 and "ETag" not in resp.headers
    assert client.get("/market/2016-12-31").status_code == 404
    assert "ETag" not in client.get("/market/2016-12-31").headers
