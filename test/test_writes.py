"""PUT/DELETE of one bar: API keys, validation, status codes and concurrent writers."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pytest
from conftest import business_days, random_bars, store

from stocks import storage
from stocks.api.app import create_app
from stocks.config import Settings

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BAR = {"open": 10.5, "high": 11.25, "low": 10.0, "close": 11.0, "volume": 1234}


@pytest.fixture
def bars():
    days = business_days("2016-01-04", "2016-12-30")
    days = days[days != np.datetime64("2016-01-18")]  # a holiday: a weekday with no bar
    return random_bars(days)


@pytest.fixture(scope="module")
def app(base_settings):
    return create_app(base_settings.replace(api_keys=("other-key", KEY)))


@pytest.fixture
def client(client, r0, bars):
    """The conftest client, with BRK.B stored."""
    store(r0, "BRK.B", bars, name="Berkshire")
    return client


def error_of(resp, status: int) -> dict:
    assert resp.status_code == status, resp.data
    return resp.get_json()["error"]


# --- keys ------------------------------------------------------------------------------


def test_writes_refused_when_no_keys_configured(client, settings):
    client = create_app(settings.replace(api_keys=())).test_client()
    err = error_of(client.put("/tickers/BRK.B/prices/2016-01-18", json=BAR, headers=AUTH), 403)
    assert err["code"] == "writes_disabled"
    client = create_app(Settings.from_env({"STOCKS_API_KEYS": " , "})).test_client()
    assert client.delete("/tickers/BRK.B/prices/2016-01-04", headers=AUTH).status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": "Bearer s3cret-kéy"},
    ],
)
def test_missing_or_wrong_key_is_401_with_challenge(client, headers):
    # Even an invalid body is answered 401: the key is checked before the body.
    resp = client.put("/tickers/BRK.B/prices/2016-01-18", json={"open": -1}, headers=headers)
    assert error_of(resp, 401)["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.delete("/tickers/BRK.B/prices/2016-01-04", headers=headers).status_code == 401


def test_any_configured_key_works(client):
    other = {"Authorization": "bearer other-key"}
    assert (
        client.put("/tickers/BRK.B/prices/2016-01-18", json=BAR, headers=other).status_code == 201
    )


# --- PUT -------------------------------------------------------------------------------


def test_put_creates_then_replaces_and_reads_back(client, r0, bars):
    url = "/tickers/brk-b/prices/2016-01-18"  # a holiday: not there yet
    assert client.get(url).status_code == 404
    resp = client.put(url, json=BAR, headers=AUTH)
    assert resp.status_code == 201
    assert resp.get_json() == {"symbol": "BRK.B", "date": "2016-01-18", **BAR}
    assert client.get(url).get_json() == {"symbol": "BRK.B", "date": "2016-01-18", **BAR}

    replaced = {**BAR, "close": 10.75, "adj_close": 10.5}
    resp = client.put(url, json=replaced, headers=AUTH)
    assert resp.status_code == 200
    assert client.get(url).get_json()["adj_close"] == 10.5
    meta = storage.get_meta(r0, "BRK.B")
    assert meta["rows"] == len(bars) + 1


def test_put_outside_the_range_moves_first_and_last_date(client, r0):
    assert client.put("/tickers/BRK.B/prices/2015-12-31", json=BAR, headers=AUTH).status_code == 201
    assert client.put("/tickers/BRK.B/prices/2017-01-03", json=BAR, headers=AUTH).status_code == 201
    detail = client.get("/tickers/BRK.B").get_json()
    assert detail["first_date"] == "2015-12-31" and detail["last_date"] == "2017-01-03"
    assert detail["latest"]["close"] == BAR["close"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BAR, "open": -1}, "open"),
        ({**BAR, "close": 0}, "close"),
        ({**BAR, "low": 12.0}, None),  # low above high
        ({**BAR, "close": 11.5}, None),  # close above high
        ({**BAR, "volume": -5}, "volume"),
        ({**BAR, "volume": 1.5}, "volume"),
        ({k: v for k, v in BAR.items() if k != "close"}, "close"),
        ({**BAR, "high": "NaN"}, "high"),
    ],
)
def test_invalid_bar_is_400(client, r0, body, field):
    before = storage.get_meta(r0, "BRK.B")
    err = error_of(client.put("/tickers/BRK.B/prices/2016-01-05", json=body, headers=AUTH), 400)
    assert err["code"] == "invalid_parameter"
    assert err["errors"][0]["field"] == field
    assert storage.get_meta(r0, "BRK.B")["version"] == before["version"]


def test_put_non_json_is_415_and_bad_date_400(client):
    resp = client.put(
        "/tickers/BRK.B/prices/2016-01-05", data="open=1", headers=AUTH, content_type="text/plain"
    )
    assert resp.status_code == 415  # as POST /jobs: the media type, not the model, is wrong
    assert client.put("/tickers/BRK.B/prices/2016-02-30", json=BAR, headers=AUTH).status_code == 400


def test_put_unknown_symbol_is_404_and_creates_nothing(client, r0):
    err = error_of(client.put("/tickers/NEWCO/prices/2016-01-05", json=BAR, headers=AUTH), 404)
    assert err["code"] == "unknown_symbol"
    assert storage.list_symbols(r0) == ["BRK.B"]


# --- DELETE ----------------------------------------------------------------------------


def test_delete_then_404(client, r0, bars):
    url = "/tickers/BRK.B/prices/2016-01-05"
    resp = client.delete(url, headers=AUTH)
    assert resp.status_code == 204 and resp.data == b""
    assert error_of(client.get(url), 404)["code"] == "no_trading_day"
    assert error_of(client.delete(url, headers=AUTH), 404)["code"] == "no_bar"
    assert storage.get_meta(r0, "BRK.B")["rows"] == len(bars) - 1
    assert error_of(client.delete("/tickers/NOPE/prices/2016-01-05", headers=AUTH), 404)[
        "code"
    ] == ("unknown_symbol")


def test_write_is_visible_in_cached_series(client):
    url = "/tickers/BRK.B/prices?start=2016-01-04&end=2016-01-08"
    assert client.get(url).get_json()["count"] == 5
    client.delete("/tickers/BRK.B/prices/2016-01-06", headers=AUTH)
    assert client.get(url).get_json()["count"] == 4
    client.put("/tickers/BRK.B/prices/2016-01-06", json=BAR, headers=AUTH)
    body = client.get(url).get_json()
    assert body["count"] == 5 and body["prices"][2]["close"] == BAR["close"]


# --- concurrency -----------------------------------------------------------------------


def test_concurrent_writers_lose_nothing(app, client, r0, bars):
    """8 threads x 20 new weekdays, plus 2 threads deleting existing days, at once."""
    span = np.arange(np.datetime64("2015-06-01"), np.datetime64("2017-06-30"))
    stored_days = set(bars["date"].astype("datetime64[D]").tolist())
    free = [d for d in span if np.is_busday(d) and d.tolist() not in stored_days]
    before, after = free[:80], free[-80:]  # the years before and after the stored one
    new_days = [d for pair in zip(before, after, strict=True) for d in pair]
    chunks = [new_days[i::8] for i in range(8)]  # interleaved: all threads hit each year
    assert all(len(c) == 20 for c in chunks)
    doomed = [str(d) for d in bars["date"][::25].astype("datetime64[D]")][:20]
    failures: list[str] = []
    barrier = threading.Barrier(10)

    def writer(days) -> None:
        c = app.test_client()
        barrier.wait()
        for i, d in enumerate(days):
            body = {**BAR, "volume": i}
            resp = c.put(f"/tickers/BRK.B/prices/{d}", json=body, headers=AUTH)
            if resp.status_code != 201:
                failures.append(f"PUT {d}: {resp.status_code}")

    def deleter(days) -> None:
        c = app.test_client()
        barrier.wait()
        for d in days:
            resp = c.delete(f"/tickers/BRK.B/prices/{d}", headers=AUTH)
            if resp.status_code != 204:
                failures.append(f"DELETE {d}: {resp.status_code}")

    threads = [threading.Thread(target=writer, args=(chunk,)) for chunk in chunks]
    threads += [threading.Thread(target=deleter, args=(doomed[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []

    meta, stored = storage.read_series(r0, "BRK.B")
    dates = stored["date"]
    assert (np.diff(dates) > 0).all()
    added = {storage.to_day(dt.date.fromisoformat(str(d))) for chunk in chunks for d in chunk}
    removed = {storage.to_day(dt.date.fromisoformat(d)) for d in doomed}
    want = (set(bars["date"].tolist()) | added) - removed
    assert set(dates.tolist()) == want
    assert meta["rows"] == len(want) == len(stored)
    assert meta["first_date"] == storage.from_day(min(want)).isoformat()
    assert meta["last_date"] == storage.from_day(max(want)).isoformat()
    listed = client.get("/tickers/BRK.B/prices").get_json()
    assert listed["count"] == len(want)
