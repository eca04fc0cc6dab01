"""The data API through Flask's test client, over a real Redis."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from urllib.parse import urljoin

import numpy as np
import pandas as pd
import pytest
from conftest import SP500_DIR, business_days, needs_shared, random_bars

from stocks import storage
from stocks.api.app import create_app
from stocks.config import Settings
from stocks.resample import resample


@pytest.fixture
def loaded(r0):
    """AAPL (with holes), BRK.B (with adj_close) and XOM, as the loader would store them."""
    aapl = random_bars(business_days("2013-02-08", "2018-02-07"), 3, volume=(1, 10**9))
    aapl["open"][3] = np.nan
    aapl["volume"][4] = storage.MISSING_VOLUME
    aapl["close"][5] = 0.1 + 0.2
    storage.replace_series(
        r0,
        "AAPL",
        aapl,
        {"name": "Apple Inc.", "sector": "Information Technology", "source": "csv"},
    )
    brk = random_bars(business_days("2016-01-04", "2016-12-30"), 4, adj=True)
    storage.replace_series(
        r0, "BRK.B", brk, {"name": "Berkshire", "sector": "Financials", "source": "csv"}
    )
    xom = random_bars(business_days("2017-01-03", "2017-03-31"), 5)
    storage.replace_series(
        r0, "XOM", xom, {"name": "Exxon", "sector": "Energy", "source": "synthetic"}
    )
    return {"AAPL": aapl, "BRK.B": brk, "XOM": xom}


@pytest.fixture(scope="module")
def app(base_settings):
    """One app for the module: it holds no per-test state (answers carry data versions)."""
    return create_app(base_settings)


def expected_rows(bars: np.ndarray, columns=("open", "high", "low", "close", "volume")) -> list:
    rows = []
    for bar in bars:
        row = {"date": str(bar["date"].astype("datetime64[D]"))}
        for c in columns:
            if c == "volume":
                v = int(bar[c])
                row[c] = None if v == storage.MISSING_VOLUME else v
            else:
                v = float(bar[c])
                row[c] = None if np.isnan(v) else v
        rows.append(row)
    return rows


def error_of(resp, status: int) -> dict:
    assert resp.status_code == status, resp.data
    assert resp.mimetype == "application/json"
    err = resp.get_json()["error"]
    assert err["status"] == status
    return err


# --- probes and index ------------------------------------------------------------------


def test_health_and_ready_follow_the_data(client, r0):
    assert client.get("/health").get_json() == {"status": "ok"}
    assert error_of(client.get("/ready"), 503)["code"] == "no_data"
    storage.replace_series(
        r0, "X", random_bars(business_days("2017-01-02", "2017-01-31"), 3), {"source": "csv"}
    )
    assert client.get("/ready").get_json() == {"status": "ready", "tickers": 1}


def test_index_names_links_and_sources(client, loaded):
    body = client.get("/").get_json()
    assert body["sources"] == {"csv": 2, "synthetic": 1}
    assert body["links"]["docs"] == "/docs" and body["links"]["openapi"] == "/openapi.json"


# --- tickers ---------------------------------------------------------------------------


def test_tickers_sorted_with_meta_and_sector_filter(client, loaded):
    body = client.get("/tickers").get_json()
    assert body["count"] == 3
    assert [t["symbol"] for t in body["tickers"]] == ["AAPL", "BRK.B", "XOM"]
    aapl = body["tickers"][0]
    assert aapl == {
        "symbol": "AAPL",
        "name": "Apple Inc.",
        "sector": "Information Technology",
        "first_date": "2013-02-08",
        "last_date": "2018-02-07",
        "rows": len(loaded["AAPL"]),
    }
    energy = client.get("/tickers?sector=eNeRgY").get_json()
    assert energy["count"] == 1 and energy["tickers"][0]["symbol"] == "XOM"
    assert client.get("/tickers?sector=nothing").get_json() == {"count": 0, "tickers": []}


def test_tickers_csv(client, loaded):
    resp = client.get("/tickers?format=csv")
    assert resp.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert [r["symbol"] for r in rows] == ["AAPL", "BRK.B", "XOM"]
    assert rows[1]["rows"] == str(len(loaded["BRK.B"]))


@pytest.fixture
def named(r0):
    """Tickers whose symbols and names compete for the same searches."""
    one = random_bars(business_days("2017-01-02", "2017-01-31"), 3)
    for sym, name, sector in [
        ("AAPL", "Apple Inc.", "Information Technology"),
        ("APA", "Apache Corporation", "Energy"),
        ("AMAT", "Applied Materials Inc.", "Information Technology"),
        ("MSFT", "Microsoft Corp.", "Information Technology"),
        ("GE", "General Electric", "Industrials"),
        ("GIS", "General Mills", "Consumer Staples"),
        ("BRK.B", "Berkshire Hathaway", "Financials"),
        ("SNAP", "Pineapple Holdings", "Consumer Staples"),
    ]:
        storage.replace_series(r0, sym, one, {"name": name, "sector": sector, "source": "csv"})


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("apple", ["AAPL", "SNAP"]),  # name word start before name substring
        ("APP", ["AAPL", "AMAT", "SNAP"]),  # ties by symbol
        ("ap", ["APA", "AAPL", "AMAT", "SNAP"]),  # symbol prefix before name words
        ("aapl", ["AAPL"]),
        ("brk-b", ["BRK.B"]),  # the dash spelling finds the dot
        ("general   m", ["GIS"]),  # several words, spaces squeezed
        ("soft", ["MSFT"]),
        ("ge", ["GE", "GIS"]),  # exact symbol, then a symbol prefix; nothing from names
        ("zzz", []),
    ],
)
def test_search_ranks_symbol_then_name_matches(client, named, query, want):
    body = client.get("/tickers", query_string={"q": query}).get_json()
    assert [t["symbol"] for t in body["tickers"]] == want and body["count"] == len(want)


def test_search_combines_with_sector_and_csv(client, named):
    q = {"q": "ap", "sector": "information technology"}
    assert [t["symbol"] for t in client.get("/tickers", query_string=q).get_json()["tickers"]] == [
        "AAPL",
        "AMAT",
    ]
    for resp in (
        client.get("/tickers.csv", query_string=q),
        client.get("/tickers", query_string={**q, "format": "csv"}),
    ):
        assert resp.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
        assert [r["symbol"] for r in rows] == ["AAPL", "AMAT"]
    for bad in ({"q": ""}, {"q": "x" * 101}, {"q": "a\nb"}):
        assert error_of(client.get("/tickers", query_string=bad), 400)["errors"][0]["field"] == "q"


def test_ticker_detail_alias_and_latest(client, loaded):
    body = client.get("/tickers/brk-b").get_json()
    assert body["symbol"] == "BRK.B"
    assert body["source"] == "csv" and body["loaded_at"].endswith("Z")
    assert body["latest"] == expected_rows(
        loaded["BRK.B"][-1:], (*storage.PRICE_COLUMNS, "volume")
    )[0] | {"date": "2016-12-30"}
    assert client.get("/tickers/Brk.b").get_json()["symbol"] == "BRK.B"


def test_unknown_symbol_is_404_with_code(client, loaded):
    for path in ("/tickers/NOPE", "/tickers/NOPE/prices", "/tickers/$$/prices/2017-01-03"):
        assert error_of(client.get(path), 404)["code"] == "unknown_symbol"


# --- prices ----------------------------------------------------------------------------


def test_full_series_exact_values_and_nulls(client, loaded):
    body = client.get("/tickers/aapl/prices").get_json()
    bars = loaded["AAPL"]
    assert body["symbol"] == "AAPL" and body["interval"] == "1d"
    assert body["count"] == len(bars) == len(body["prices"])
    assert body["prices"] == expected_rows(bars)
    assert body["prices"][3]["open"] is None and body["prices"][4]["volume"] is None
    assert body["prices"][5]["close"] == 0.1 + 0.2
    assert "adj_close" not in body["prices"][0]


def test_range_is_inclusive_on_both_ends(client, loaded):
    body = client.get("/tickers/AAPL/prices?start=2016-03-01&end=2016-03-31").get_json()
    dates = [p["date"] for p in body["prices"]]
    assert dates[0] == "2016-03-01" and dates[-1] == "2016-03-31" and len(dates) == 23
    weekend = client.get("/tickers/AAPL/prices?start=2016-03-05&end=2016-03-06").get_json()
    assert weekend["count"] == 0 and weekend["prices"] == []


def test_adj_close_present_when_stored(client, loaded):
    first = client.get("/tickers/BRK.B/prices?end=2016-01-04").get_json()["prices"][0]
    assert first["adj_close"] == float(loaded["BRK.B"]["adj_close"][0])


@pytest.mark.parametrize("interval", ["1wk", "1mo", "3mo", "1y"])
def test_intervals_match_resample(client, loaded, interval):
    body = client.get(f"/tickers/AAPL/prices?interval={interval}&start=2015-01-01").get_json()
    bars = storage.cut(loaded["AAPL"], dt.date(2015, 1, 1), None)
    assert body["interval"] == interval
    assert body["prices"] == expected_rows(resample(bars, interval))


@pytest.mark.parametrize("interval", ["1d", "1wk", "3mo"])
def test_limit_keeps_the_latest_bars_in_either_order(client, loaded, interval):
    bars = resample(storage.cut(loaded["AAPL"], None, dt.date(2016, 6, 30)), interval)
    want = expected_rows(bars)
    url = f"/tickers/AAPL/prices?end=2016-06-30&interval={interval}&limit=4"
    asc = client.get(url).get_json()
    assert asc["prices"] == want[-4:] and asc["order"] == "asc"
    assert (asc["count"], asc["available"], asc["limited"]) == (4, len(want), True)
    desc = client.get(url + "&order=desc")
    assert desc.get_json()["prices"] == want[-4:][::-1]
    assert desc.headers["X-Limited"] == "true" and desc.headers["X-Available"] == str(len(want))
    unlimited = client.get(f"/tickers/AAPL/prices?interval={interval}&order=desc").get_json()
    assert unlimited["limited"] is False and unlimited["count"] == unlimited["available"]
    assert unlimited["prices"][0]["date"] >= unlimited["prices"][-1]["date"]


def test_limit_with_range_and_csv(client, loaded):
    want = expected_rows(storage.cut(loaded["XOM"], dt.date(2017, 2, 1), dt.date(2017, 2, 28)))
    for path in (
        "/tickers/XOM/prices.csv?start=2017-02-01&end=2017-02-28&limit=3&order=desc",
        "/tickers/XOM/prices?start=2017-02-01&end=2017-02-28&limit=3&order=desc&format=csv",
    ):
        resp = client.get(path)
        assert resp.mimetype == "text/csv" and resp.headers["X-Limited"] == "true"
        rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
        assert [r["date"] for r in rows] == [w["date"] for w in want[-3:][::-1]]
        assert [float(r["close"]) for r in rows] == [w["close"] for w in want[-3:][::-1]]
    more = client.get("/tickers/XOM/prices?start=2017-02-01&end=2017-02-28&limit=100").get_json()
    assert more["limited"] is False and more["count"] == len(want)


@pytest.mark.parametrize("query", ["limit=0", "limit=10001", "limit=-3", "limit=x", "order=up"])
def test_bad_limit_or_order_is_400(client, loaded, query):
    field = query.split("=")[0]
    err = error_of(client.get(f"/tickers/AAPL/prices?{query}"), 400)
    assert err["errors"][0]["field"] == field


def test_fields_limit_columns_in_request_order(client, loaded):
    body = client.get("/tickers/XOM/prices?fields=close,open&end=2017-01-04").get_json()
    bars = loaded["XOM"][:2]
    assert body["prices"] == expected_rows(bars, ("close", "open"))
    assert list(body["prices"][0]) == ["date", "close", "open"]
    err = error_of(client.get("/tickers/XOM/prices?fields=close,bogus"), 400)
    assert err["errors"][0]["field"] == "fields" and "bogus" in err["message"]


def test_csv_has_header_and_same_values(client, loaded):
    json_rows = client.get("/tickers/AAPL/prices?end=2013-02-20").get_json()["prices"]
    for resp in (
        client.get("/tickers/AAPL/prices?end=2013-02-20&format=csv"),
        client.get("/tickers/AAPL/prices?end=2013-02-20", headers={"Accept": "text/csv"}),
    ):
        assert resp.mimetype == "text/csv"
        lines = resp.get_data(as_text=True).splitlines()
        assert lines[0] == "date,open,high,low,close,volume"
        parsed = list(csv.DictReader(lines))
        assert len(parsed) == len(json_rows)
        for row, want in zip(parsed, json_rows, strict=True):
            for key, value in want.items():
                if value is None:
                    assert row[key] == ""
                elif key == "date":
                    assert row[key] == value
                else:
                    assert type(value)(row[key]) == value


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("start=2016-02-30", "start"),
        ("start=20160201", "start"),
        ("end=yesterday", "end"),
        ("start=2017-01-01&end=2016-01-01", "end"),
        ("start=2016-01-01%0A", "start"),
        ("interval=2h", "interval"),
        ("format=xml", "format"),
    ],
)
def test_invalid_parameters_are_400_naming_the_field(client, loaded, query, field):
    err = error_of(client.get(f"/tickers/AAPL/prices?{query}"), 400)
    assert err["code"] == "invalid_parameter"
    assert err["errors"][0]["field"] == field


def test_control_character_in_symbol_is_400(client, loaded):
    assert error_of(client.get("/tickers/AA%00PL/prices"), 400)["errors"][0]["field"] == "symbol"


def test_unknown_route_and_wrong_method(client, loaded):
    assert error_of(client.get("/nothing/here"), 404)["code"] == "not_found"
    resp = client.post("/tickers/AAPL/prices")
    assert error_of(resp, 405)["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


def test_a_write_changes_the_cached_answer_at_once(client, loaded, r0):
    url = "/tickers/XOM/prices?start=2017-03-01"
    before = client.get(url).get_json()
    assert client.get(url).get_json() == before  # served from the cache now
    bar = loaded["XOM"][-1:].copy()
    bar["close"] = 12.5
    storage.upsert_bar(r0, "XOM", bar)
    assert client.get(url).get_json()["prices"][-1]["close"] == 12.5
    storage.replace_series(r0, "XOM", loaded["XOM"][:-1], {"source": "csv"})
    assert client.get(url).get_json()["count"] == before["count"] - 1


def test_redis_down_is_503_not_500(own_redis):
    client = create_app(Settings(redis_url=own_redis.url)).test_client()
    own_redis.stop(kill=True)
    assert error_of(client.get("/tickers/AAPL/prices"), 503)["code"] == "redis_unavailable"
    assert error_of(client.get("/ready"), 503)["code"] == "redis_unavailable"
    assert client.get("/health").status_code == 200


# --- one bar ---------------------------------------------------------------------------


def test_one_bar(client, loaded):
    body = client.get("/tickers/aapl/prices/2013-02-14").get_json()
    want = expected_rows(loaded["AAPL"][4:5])[0]
    assert body == {"symbol": "AAPL", **want}
    assert body["volume"] is None


def test_non_trading_day_names_neighbours(client, loaded):
    err = error_of(client.get("/tickers/AAPL/prices/2016-03-05"), 404)
    assert err["code"] == "no_trading_day"
    assert err["previous"] == "2016-03-04" and err["next"] == "2016-03-07"
    early = error_of(client.get("/tickers/XOM/prices/2016-01-01"), 404)
    assert early["previous"] is None and early["next"] == "2017-01-03"
    late = error_of(client.get("/tickers/XOM/prices/2020-01-01"), 404)
    assert late["previous"] == "2017-03-31" and late["next"] is None
    assert error_of(client.get("/tickers/AAPL/prices/2016-13-01"), 400)["errors"][0]["field"] == (
        "date"
    )


# --- documentation ---------------------------------------------------------------------


def test_openapi_document_lists_the_routes(client, loaded):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert {"/tickers", "/tickers/{symbol}", "/tickers/{symbol}/prices"} <= set(paths)
    params = {p["name"] for p in paths["/tickers/{symbol}/prices"]["get"]["parameters"]}
    assert {"symbol", "start", "end", "interval", "fields", "format"} <= params
    assert set(paths["/tickers/{symbol}/prices/{date}"]) >= {"get", "put", "delete"}
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_openapi_documents_market_routes_csv_twins_and_images(client):
    doc = client.get("/openapi.json").get_json()
    paths = doc["paths"]
    assert [t["name"] for t in doc["tags"]].index("market") > 0
    for path in ("/market/{date}", "/market/{date}.csv", "/market/movers"):
        assert paths[path]["get"]["tags"] == ["market"]
    for path in ("/tickers.csv", "/tickers/{symbol}/prices.csv", "/market/{date}.csv"):
        assert list(paths[path]["get"]["responses"]["200"]["content"]) == ["text/csv"]
        assert "304" in paths[path]["get"]["responses"]
    negotiated = paths["/tickers/{symbol}/prices"]["get"]["responses"]["200"]["content"]
    assert list(negotiated) == ["application/json", "text/csv"]
    params = {p["name"] for p in paths["/tickers/{symbol}/prices"]["get"]["parameters"]}
    assert {"limit", "order"} <= params
    image = paths["/jobs/{job_id}/image"]["get"]["responses"]["200"]["content"]
    assert set(image) == {"image/png", "image/svg+xml"}
    assert image["image/png"]["schema"]["format"] == "binary"


def test_docs_page_uses_only_local_assets(client, loaded):
    resp = client.get("/docs", follow_redirects=True)
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    page = resp.request.path
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(ref.endswith(".js") for ref in refs)
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), f"external asset {ref}"
        asset = client.get(urljoin(page, ref))
        assert asset.status_code == 200, ref
    assert "//cdn" not in html and "unpkg" not in html
    spec = client.get(urljoin(page, "openapi.json"))
    assert spec.status_code == 200 and "/tickers/{symbol}/prices" in spec.get_json()["paths"]


# --- real data -------------------------------------------------------------------------


@needs_shared
def test_real_file_values_are_the_source_text(client, r0):
    """Every number of a real file comes back as float(text) / int(text); empty is null."""
    path = SP500_DIR / "DHR.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))

    def num(text: str) -> float:
        return float(text) if text else np.nan

    bars = storage.make_bars(
        np.array([r["date"] for r in rows], dtype="datetime64[D]"),
        [num(r["open"]) for r in rows],
        [num(r["high"]) for r in rows],
        [num(r["low"]) for r in rows],
        [num(r["close"]) for r in rows],
        [int(r["volume"]) for r in rows],
    )
    storage.replace_series(r0, "DHR", bars, {"source": "csv"})
    got = client.get("/tickers/DHR/prices").get_json()["prices"]
    assert len(got) == len(rows)
    for want, have in zip(rows, got, strict=True):
        assert have["date"] == want["date"]
        for col in ("open", "high", "low", "close"):
            assert have[col] == (float(want[col]) if want[col] else None)
        assert have["volume"] == int(want["volume"])
    month = client.get("/tickers/DHR/prices?interval=1mo").get_json()["prices"]
    df = pd.read_csv(path, parse_dates=["date"])
    assert [m["volume"] for m in month] == df.groupby(df["date"].dt.to_period("M"))[
        "volume"
    ].sum().tolist()
